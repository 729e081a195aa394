// The Prepare checks of every op of the project, shared by the TFLite and the TFLM glue
// (op_validate.h).
#include "op_validate.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>

#include "bitpack.h"
#include "op_contract.h"

namespace compute_engine {
namespace core {
namespace op_validate {

namespace {

namespace ops = ::compute_engine::ops;
namespace bp = ::compute_engine::core::bitpack;
namespace bc = ::compute_engine::core::bconv2d;
namespace bd = ::compute_engine::core::bdfsmn;

static_assert(kMaxInputs >= ops::bdfsmn::kNumStreamingInputs && kMaxInputs >= ops::bconv2d::kNumInputs &&
                  kMaxInputs >= ops::quantize::kNumInputs &&
                  kMaxInputs >= ops::dequantize::kNumInputs &&
                  kMaxInputs >= ops::dual_quantize::kNumInputs,
              "Node holds every input of every op");
static_assert(kMaxOutputs >= ops::dual_quantize::kNumOutputs, "Node holds every output");

// *error = printf(fmt, ...) (cut at 1 KiB); returns false.
__attribute__((format(printf, 2, 3))) bool Fail(std::string* error, const char* fmt, ...) {
  char msg[1024];
  std::va_list args;
  va_start(args, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, args);
  va_end(args);
  *error = msg;
  return false;
}

// Product of the dims (every dim >= 0) if it stays <= 2^31; false otherwise.
bool NumElements(const Tensor& t, std::size_t* n) {
  if (t.dims == nullptr || t.rank < 0) return false;
  std::size_t p = 1;
  for (int i = 0; i < t.rank; ++i) {
    const int d = t.dims[i];
    if (d < 0) return false;
    p *= static_cast<std::size_t>(d);
    if (p > (std::size_t{1} << 31)) return false;
  }
  *n = p;
  return true;
}

bool HasBytes(const Tensor& t, std::size_t elements, std::size_t elem_size) {
  return t.bytes == elements * elem_size;
}

bool SameDims(const Tensor& t, const int* dims, int rank) {
  if (t.dims == nullptr || t.rank != rank) return false;
  for (int i = 0; i < rank; ++i) {
    if (t.dims[i] != dims[i]) return false;
  }
  return true;
}

// "[d0, d1, ...]" (or "(none)") of a shape.
std::string ShapeString(const int* dims, int rank) {
  if (dims == nullptr || rank < 0) return "(none)";
  std::string s = "[";
  for (int i = 0; i < rank; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

// A constant 2-D parameter tensor of ops::BDFSMN: type, exact shape, byte size, data.
bool CheckParam(const Tensor& t, const char* name, DType type, int d0, int d1,
                std::string* error) {
  if (!t.present) return Fail(error, "input %s missing", name);
  if (t.type != type) {
    return Fail(error, "%s has type %s, expected %s", name, DTypeName(t.type), DTypeName(type));
  }
  if (t.dims == nullptr || t.rank != 2) return Fail(error, "%s must be 2-D", name);
  if (t.dims[0] != d0 || t.dims[1] != d1) {
    return Fail(error, "%s has shape [%d, %d], expected [%d, %d]", name, t.dims[0], t.dims[1],
                d0, d1);
  }
  const std::size_t need = static_cast<std::size_t>(d0) * static_cast<std::size_t>(d1) * 4u;
  if (t.bytes != need) return Fail(error, "%s has %zu bytes, expected %zu", name, t.bytes, need);
  if (t.data == nullptr) return Fail(error, "%s has no data", name);
  if (!t.is_const) return Fail(error, "%s must be a constant tensor", name);
  return true;
}

// A constant rank-1 tensor of `n` values of `type` (ops::BCONV2D's post-processing).
bool CheckVector(const Tensor& t, const char* name, DType type, int n, const char* why,
                 std::string* error) {
  if (!t.present) return Fail(error, "input %s missing (%s)", name, why);
  if (t.type != type) {
    return Fail(error, "%s must be %s, is %s", name, DTypeName(type), DTypeName(t.type));
  }
  if (t.dims == nullptr || t.rank != 1 || t.dims[0] != n) {
    return Fail(error, "%s must have shape [%d]", name, n);
  }
  if (!HasBytes(t, static_cast<std::size_t>(n), 4u) || t.data == nullptr) {
    return Fail(error, "%s has %zu bytes, expected %d", name, t.bytes, 4 * n);
  }
  if (!t.is_const) return Fail(error, "%s must be a constant tensor", name);
  return true;
}

const char* ActivationName(int a) {
  switch (a) {
    case 4: return "TANH";
    case 5: return "SIGN_BIT";
    default: return "unknown";
  }
}

// Counts and presence shared by QUANTIZE / DEQUANTIZE: one input of rank 1..8, one output.
bool CheckPackNode(const Node& node, std::string* error) {
  if (node.num_inputs != 1) return Fail(error, "expected 1 input, got %d", node.num_inputs);
  if (node.num_outputs != 1) return Fail(error, "expected 1 output");
  const Tensor& in = node.inputs[0];
  if (!in.present || !node.output.present) return Fail(error, "missing input or output");
  if (in.dims == nullptr || in.rank < 1 || in.rank > 8) {
    return Fail(error, "input must have rank 1 to 8, has %d", in.rank);
  }
  return true;
}

}  // namespace

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kInt32: return "int32";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kBool: return "bool";
    case DType::kInt16: return "int16";
    case DType::kInt64: return "int64";
    case DType::kFloat16: return "float16";
    case DType::kOther: break;
  }
  return "other";
}

// ---------------------------------------------------------------------------- ops::BDFSMN
bool ValidateBdfsmn(const BdfsmnOptions& o, const Node& node, OutputShape shape,
                    bd::Layer* layer, BdfsmnPlan* plan, std::string* error) {
  namespace c = ops::bdfsmn;
  const int C = o.channels, H = o.hidden;
  if (C < 1 || C > bd::kMaxChannels || H < 1 || H > bd::kMaxChannels) {
    return Fail(error, "%s/%s out of range (%d, %d)", c::kChannels, c::kHidden, C, H);
  }
  if (o.left < 0 || o.right < 0 ||
      std::int64_t{o.left} + std::int64_t{o.right} + 1 > bd::kMaxTaps) {
    return Fail(error, "%s/%s out of range (%d, %d)", c::kLeft, c::kRight, o.left, o.right);
  }
  if (o.dilation < 1 || o.dilation > (1 << 16)) {
    return Fail(error, "%s out of range (%d)", c::kDilation, o.dilation);
  }
  const bool streaming = node.num_inputs == c::kNumStreamingInputs;
  if (node.num_inputs != c::kNumInputs && !streaming) {
    return Fail(error, "expected %d inputs (or %d: the streaming form), got %d",
                static_cast<int>(c::kNumInputs), static_cast<int>(c::kNumStreamingInputs),
                node.num_inputs);
  }
  if (!streaming && node.num_outputs != c::kNumOutputs) {
    return Fail(error, "expected %d output", c::kNumOutputs);
  }
  if (streaming && node.num_outputs != c::kNumStreamingOutputs) {
    return Fail(error, "the streaming form (%d inputs) has %d outputs (%s, %s), got %d",
                static_cast<int>(c::kNumStreamingInputs),
                static_cast<int>(c::kNumStreamingOutputs), c::kOutputNames[c::kOut],
                c::kOutputNames[c::kNewState], node.num_outputs);
  }
  if (streaming && o.right != 0) {
    return Fail(error, "the streaming form needs %s = 0 (causal memory block), got %d",
                c::kRight, o.right);
  }

  const Tensor& x = node.inputs[c::kX];
  if (!x.present) return Fail(error, "input x missing");
  if (x.type != DType::kFloat32) return Fail(error, "x must be float32, is %s", DTypeName(x.type));
  if (x.dims == nullptr || x.rank < 2 || x.rank > 4) {
    return Fail(error, "x must have rank 2, 3 or 4, has %d", x.rank);
  }
  const int rank = x.rank;
  const int* xd = x.dims;
  int batch = 1, frames = 0;
  if (rank == 2) {
    frames = xd[0];
  } else {
    batch = xd[0];
    frames = xd[1];
    if (rank == 4 && xd[2] != 1) return Fail(error, "x of rank 4 must be [B, T, 1, C]");
  }
  if (xd[rank - 1] != C) return Fail(error, "x has %d channels, options say %d", xd[rank - 1], C);
  if (batch < 1 || frames < 1 || frames > (1 << 20)) {
    return Fail(error, "bad batch/frames (%d, %d)", batch, frames);
  }
  const std::size_t x_bytes = static_cast<std::size_t>(batch) * static_cast<std::size_t>(frames) *
                              static_cast<std::size_t>(C) * 4u;
  if (x.bytes != x_bytes) {
    return Fail(error, "x has %zu bytes, its shape needs %zu", x.bytes, x_bytes);
  }

  const int K = o.left + o.right + 1, wc = bd::PackedWords32(C), wh = bd::PackedWords32(H);
  struct Param {
    c::Input i;
    DType type;
    int d0, d1;
  };
  const Param params[] = {
      {c::kMemW, DType::kInt32, K, wc},              {c::kMemP, DType::kFloat32, c::kMemRows, C},
      {c::kPw1W, DType::kInt32, H, wc},              {c::kPw1T, DType::kFloat32, c::kThreshRows, C},
      {c::kPw1P, DType::kFloat32, c::kPwRows, H},    {c::kPw2W, DType::kInt32, C, wh},
      {c::kPw2T, DType::kFloat32, c::kThreshRows, H}, {c::kPw2P, DType::kFloat32, c::kPwRows, C}};
  static_assert(sizeof(params) / sizeof(params[0]) == c::kNumInputs - 1,
                "every parameter input");
  for (const Param& p : params) {
    if (!CheckParam(node.inputs[p.i], c::kInputNames[p.i], p.type, p.d0, p.d1, error)) {
      return false;
    }
  }

  const Tensor& out = node.output;
  if (!out.present) return Fail(error, "output missing");
  if (out.type != DType::kFloat32) {
    return Fail(error, "output must be float32, is %s", DTypeName(out.type));
  }
  if (shape == OutputShape::kFixed && !SameDims(out, xd, rank)) {
    return Fail(error, "output shape %s differs from x's %s",
                ShapeString(out.dims, out.rank).c_str(), ShapeString(xd, rank).c_str());
  }

  // streaming: the state (x's rank and batch, S = left * dilation rows, C channels) and the
  // new state output of the same shape
  const int S = o.left * o.dilation;
  int sd[4] = {0, 0, 0, 0};
  if (streaming) {
    const Tensor& st = node.inputs[c::kState];
    if (!st.present) return Fail(error, "input %s missing", c::kStateName);
    if (st.type != DType::kFloat32) {
      return Fail(error, "%s must be float32, is %s", c::kStateName, DTypeName(st.type));
    }
    if (st.is_const) return Fail(error, "%s must not be a constant tensor", c::kStateName);
    if (S < 1) return Fail(error, "the streaming form needs %s >= 1 (no state)", c::kLeft);
    for (int i = 0; i < rank; ++i) sd[i] = xd[i];
    sd[rank == 2 ? 0 : 1] = S;
    if (!SameDims(st, sd, rank)) {
      return Fail(error, "%s has shape %s, expected %s (x's rank, %s * %s rows)",
                  c::kStateName, ShapeString(st.dims, st.rank).c_str(),
                  ShapeString(sd, rank).c_str(), c::kLeft, c::kDilation);
    }
    const std::size_t s_bytes = static_cast<std::size_t>(batch) * static_cast<std::size_t>(S) *
                                static_cast<std::size_t>(C) * 4u;
    if (st.bytes != s_bytes) {
      return Fail(error, "%s has %zu bytes, its shape needs %zu", c::kStateName, st.bytes,
                  s_bytes);
    }
    const Tensor& ns = node.outputs[c::kNewState];
    if (!ns.present) return Fail(error, "output %s missing", c::kOutputNames[c::kNewState]);
    if (ns.type != DType::kFloat32) {
      return Fail(error, "%s must be float32, is %s", c::kOutputNames[c::kNewState],
                  DTypeName(ns.type));
    }
    if (shape == OutputShape::kFixed && (!SameDims(ns, sd, rank) || ns.bytes != s_bytes)) {
      return Fail(error, "%s shape %s differs from the state's %s",
                  c::kOutputNames[c::kNewState], ShapeString(ns.dims, ns.rank).c_str(),
                  ShapeString(sd, rank).c_str());
    }
  }

  const Tensor* t = node.inputs;
  auto w = [&](int i) { return static_cast<const std::uint32_t*>(t[i].data); };
  // Row r of the [rows, n] float parameter tensor i.
  auto row = [&](int i, int r, int n) {
    return static_cast<const float*>(t[i].data) + static_cast<std::size_t>(r) * n;
  };
  bd::LayerSpec s;
  s.channels = C;
  s.hidden = H;
  s.left = o.left;
  s.right = o.right;
  s.dilation = o.dilation;
  s.mem_weights = w(c::kMemW);
  s.mem_t0 = row(c::kMemP, c::kMemT0, C);
  s.mem_t1 = row(c::kMemP, c::kMemT1, C);
  s.mem_t2 = row(c::kMemP, c::kMemT2, C);
  s.mem_mul = row(c::kMemP, c::kMemMul, C);
  s.mem_bias = row(c::kMemP, c::kMemBias, C);
  s.mem_slope = row(c::kMemP, c::kMemSlope, C);
  s.pw1_weights = w(c::kPw1W);
  s.pw1_t0 = row(c::kPw1T, c::kT0, C);
  s.pw1_t1 = row(c::kPw1T, c::kT1, C);
  s.pw1_mul = row(c::kPw1P, c::kPwMul, H);
  s.pw1_bias = row(c::kPw1P, c::kPwBias, H);
  s.pw1_slope = row(c::kPw1P, c::kPwSlope, H);
  s.pw2_weights = w(c::kPw2W);
  s.pw2_t0 = row(c::kPw2T, c::kT0, H);
  s.pw2_t1 = row(c::kPw2T, c::kT1, H);
  s.pw2_mul = row(c::kPw2P, c::kPwMul, C);
  s.pw2_bias = row(c::kPw2P, c::kPwBias, C);
  s.pw2_slope = row(c::kPw2P, c::kPwSlope, C);
  std::string err;
  if (!layer->Init(s, &err)) return Fail(error, "invalid parameters: %s", err.c_str());

  plan->batch = batch;
  plan->frames = frames;
  plan->rank = rank;
  for (int i = 0; i < rank; ++i) plan->out_dims[i] = xd[i];
  plan->streaming = streaming;
  plan->state_frames = streaming ? S : 0;
  for (int i = 0; i < 4; ++i) plan->state_dims[i] = sd[i];
  return true;
}

// ------------------------------------------------------------ ops::QUANTIZE / DEQUANTIZE
bool ValidateQuantize(const Node& node, OutputShape shape, PackPlan* plan, std::string* error) {
  if (!CheckPackNode(node, error)) return false;
  const Tensor& in = node.inputs[0];
  const Tensor& out = node.output;
  if (in.type != DType::kFloat32 && in.type != DType::kInt8 && in.type != DType::kBool) {
    return Fail(error, "input type %s not supported (float32, int8 or bool)", DTypeName(in.type));
  }
  if (out.type != DType::kInt32) {
    return Fail(error, "output must be int32 (bit-packed), is %s", DTypeName(out.type));
  }
  const int rank = in.rank;
  std::size_t elements = 0;
  if (!NumElements(in, &elements)) return Fail(error, "input shape invalid");
  const std::size_t esize = in.type == DType::kFloat32 ? 4u : 1u;
  if (!HasBytes(in, elements, esize)) {
    return Fail(error, "input has %zu bytes, its shape needs %zu", in.bytes, elements * esize);
  }
  const int n = in.dims[rank - 1];
  if (n > (1 << 30)) return Fail(error, "last dimension %d too large", n);
  PackPlan p;
  p.rank = rank;
  for (int i = 0; i < rank; ++i) p.out_dims[i] = in.dims[i];
  p.out_dims[rank - 1] = bp::PackedWords(n);
  p.n = n;
  p.rows = n == 0 ? 0 : elements / static_cast<std::size_t>(n);
  p.type = in.type;
  if (in.type == DType::kInt8) p.zero_point = in.zero_point;
  if (shape == OutputShape::kFixed) {
    if (!SameDims(out, p.out_dims, rank)) {
      return Fail(error, "output shape %s, the packed input %s needs the last dimension %d",
                  ShapeString(out.dims, out.rank).c_str(), ShapeString(in.dims, rank).c_str(),
                  p.out_dims[rank - 1]);
    }
    if (!HasBytes(out, p.rows * static_cast<std::size_t>(p.out_dims[rank - 1]), 4u)) {
      return Fail(error, "output byte size does not match its shape");
    }
  }
  *plan = p;
  return true;
}

bool ValidateDequantize(const Node& node, OutputShape shape, PackPlan* plan,
                        std::string* error) {
  if (!CheckPackNode(node, error)) return false;
  const Tensor& in = node.inputs[0];
  const Tensor& out = node.output;
  if (in.type != DType::kInt32) {
    return Fail(error, "input must be int32 (bit-packed), is %s", DTypeName(in.type));
  }
  if (out.type != DType::kFloat32 && out.type != DType::kInt8 && out.type != DType::kBool) {
    return Fail(error, "output type %s not supported (float32, int8 or bool)",
                DTypeName(out.type));
  }
  const int rank = in.rank;
  // The output shape cannot be inferred (the channel count is not in the packed input): it
  // must be in the model.
  if (out.dims == nullptr || out.rank != rank) {
    return Fail(error, "output rank %d differs from the input's %d (the model must give the "
                "output shape)", out.rank, rank);
  }
  for (int i = 0; i < rank - 1; ++i) {
    if (out.dims[i] != in.dims[i]) {
      return Fail(error, "output dim %d is %d, input's is %d", i, out.dims[i], in.dims[i]);
    }
  }
  const int n = out.dims[rank - 1];
  if (n < 0 || n > (1 << 30)) return Fail(error, "output's last dimension %d invalid", n);
  if (in.dims[rank - 1] != bp::PackedWords(n)) {
    return Fail(error, "input has %d words per row, %d output channels need %d",
                in.dims[rank - 1], n, bp::PackedWords(n));
  }
  std::size_t in_elems = 0, out_elems = 0;
  if (!NumElements(in, &in_elems) || !NumElements(out, &out_elems)) {
    return Fail(error, "input or output shape invalid");
  }
  if (!HasBytes(in, in_elems, 4u)) {
    return Fail(error, "input has %zu bytes, its shape needs %zu", in.bytes, in_elems * 4u);
  }
  if (shape == OutputShape::kFixed) {
    const std::size_t esize = out.type == DType::kFloat32 ? 4u : 1u;
    if (!HasBytes(out, out_elems, esize)) {
      return Fail(error, "output has %zu bytes, its shape needs %zu", out.bytes,
                  out_elems * esize);
    }
  }
  PackPlan p;
  if (out.type == DType::kInt8) {
    const float scale = out.scale;
    const std::int32_t zp = out.zero_point;
    if (!std::isfinite(scale) || !(scale > 0.0f)) {
      return Fail(error, "int8 output needs a positive scale, has %g",
                  static_cast<double>(scale));
    }
    if (zp < -128 || zp > 127) {
      return Fail(error, "int8 output zero point %d outside [-128, 127]", static_cast<int>(zp));
    }
    // As LCE: offset = round(1 / scale) (half away from zero), saturated to int8.
    const float inv = std::round(1.0f / scale);
    const std::int32_t offset = inv > 1000.0f ? 1000 : static_cast<std::int32_t>(inv);
    p.zero_value = static_cast<std::int8_t>(zp + offset > 127 ? 127 : zp + offset);
    p.one_value = static_cast<std::int8_t>(zp - offset < -128 ? -128 : zp - offset);
  }
  p.n = n;
  p.rows = n == 0 ? 0 : out_elems / static_cast<std::size_t>(n);
  p.type = out.type;
  p.rank = rank;
  for (int i = 0; i < rank; ++i) p.out_dims[i] = out.dims[i];
  *plan = p;
  return true;
}

// --------------------------------------------------------------------------- ops::BCONV2D
bool ValidateBconv2d(const Bconv2dOptions& o, const Node& node, OutputShape shape,
                     bc::BConv2D* conv, Bconv2dPlan* plan, std::string* error) {
  namespace c = ops::bconv2d;
  if (node.num_inputs != c::kNumInputs) {
    return Fail(error, "expected %d inputs, got %d", static_cast<int>(c::kNumInputs),
                node.num_inputs);
  }
  if (node.num_outputs != c::kNumOutputs) return Fail(error, "expected %d output", c::kNumOutputs);
  if (o.padding != c::kPaddingSame && o.padding != c::kPaddingValid) {
    return Fail(error, "%s %d not supported (SAME = 0 or VALID = 1)", c::kPadding, o.padding);
  }
  if (o.activation < c::kActNone || o.activation > c::kActRelu6) {
    return Fail(error, "%s %d (%s) not supported (NONE, RELU, RELU_N1_TO_1, RELU6)",
                c::kFusedActivation, o.activation, ActivationName(o.activation));
  }

  const Tensor& in = node.inputs[c::kInput];
  const Tensor& filter = node.inputs[c::kFilter];
  const Tensor& out = node.output;
  if (!in.present || !filter.present || !out.present) {
    return Fail(error, "input, filter or output missing");
  }
  if (in.type != DType::kInt32) {
    return Fail(error, "input must be int32 (bit-packed), is %s", DTypeName(in.type));
  }
  if (in.dims == nullptr || in.rank != 4) {
    return Fail(error, "input must have rank 4 [B, H, W, words], has %d", in.rank);
  }
  if (filter.type != DType::kInt32) {
    return Fail(error, "filter must be int32 (bit-packed), is %s", DTypeName(filter.type));
  }
  if (filter.dims == nullptr || filter.rank != 4) {
    return Fail(error, "filter must have rank 4 [Cout, Fh, Fw, words], has %d", filter.rank);
  }
  if (!filter.is_const) return Fail(error, "filter must be a constant tensor");
  const int cin = o.channels_in, words = bp::PackedWords(cin);
  const int* id = in.dims;
  const int* fd = filter.dims;
  if (fd[3] != words) {
    return Fail(error, "filter has %d words per tap, %s %d needs %d (grouped binary "
                "convolutions are not supported)", fd[3], c::kChannelsIn, cin, words);
  }
  if (id[3] != words) {
    return Fail(error, "input has %d words per pixel, %s %d needs %d", id[3], c::kChannelsIn,
                cin, words);
  }
  if (id[0] < 1 || id[1] < 1 || id[2] < 1) {
    return Fail(error, "input shape [%d, %d, %d, %d] invalid", id[0], id[1], id[2], id[3]);
  }
  if (fd[0] < 1 || fd[1] < 1 || fd[2] < 1) {
    return Fail(error, "filter shape [%d, %d, %d, %d] invalid", fd[0], fd[1], fd[2], fd[3]);
  }
  std::size_t in_elems = 0, f_elems = 0;
  if (!NumElements(in, &in_elems) || !HasBytes(in, in_elems, 4u)) {
    return Fail(error, "input byte size does not match its shape");
  }
  if (!NumElements(filter, &f_elems) || !HasBytes(filter, f_elems, 4u) || filter.data == nullptr) {
    return Fail(error, "filter byte size does not match its shape");
  }
  const int cout = fd[0];

  bc::Spec s;
  s.input_height = id[1];
  s.input_width = id[2];
  s.channels_in = cin;
  s.channels_out = cout;
  s.filter_height = fd[1];
  s.filter_width = fd[2];
  s.stride_height = o.stride_height;
  s.stride_width = o.stride_width;
  s.dilation_height = o.dilation_height;
  s.dilation_width = o.dilation_width;
  s.padding = o.padding == c::kPaddingSame ? bc::Padding::kSame : bc::Padding::kValid;
  s.pad_value = o.pad_value;
  s.activation = static_cast<bc::Activation>(o.activation);
  s.filter = static_cast<const std::int32_t*>(filter.data);
  if (out.type == DType::kFloat32) {
    const Tensor& m = node.inputs[c::kPostActivationMultiplier];
    const Tensor& b = node.inputs[c::kPostActivationBias];
    if (!CheckVector(m, "post_activation_multiplier", DType::kFloat32, cout, "float output",
                     error) ||
        !CheckVector(b, "post_activation_bias", DType::kFloat32, cout, "float output", error)) {
      return false;
    }
    s.output = bc::Output::kFloat;
    s.multiplier = static_cast<const float*>(m.data);
    s.bias = static_cast<const float*>(b.data);
  } else if (out.type == DType::kInt32) {
    const Tensor& t = node.inputs[c::kThreshold];
    if (!CheckVector(t, "output threshold", DType::kInt32, cout, "bit-packed output", error)) {
      return false;
    }
    s.output = bc::Output::kBitpacked;
    s.thresholds = static_cast<const std::int32_t*>(t.data);
  } else {
    return Fail(error, "output type %s not supported (float32, or int32 = bit-packed; int8 "
                "output is not supported)", DTypeName(out.type));
  }
  // Zero padding: exactly what LCE accepts (its reference kernel with an even channels_in,
  // its optimized kernels with float output and no fused activation).
  if (s.padding == bc::Padding::kSame && s.pad_value == 0 && cin % 2 != 0 &&
      !(s.output == bc::Output::kFloat && s.activation == bc::Activation::kNone)) {
    return Fail(error, "zero padding (SAME, %s 0) with an odd %s (%d) is supported only with "
                "float output and no fused activation", c::kPadValues, c::kChannelsIn, cin);
  }
  std::string err;
  if (!conv->Init(s, &err)) return Fail(error, "%s", err.c_str());

  const int dims[4] = {id[0], conv->output_height(), conv->output_width(),
                       conv->output_depth()};
  if (shape == OutputShape::kFixed && !SameDims(out, dims, 4)) {
    return Fail(error, "output shape %s in the model, the convolution gives [%d, %d, %d, %d]",
                ShapeString(out.dims, out.rank).c_str(), dims[0], dims[1], dims[2], dims[3]);
  }
  const std::size_t out_elems = static_cast<std::size_t>(dims[0]) * dims[1] * dims[2] * dims[3];
  if (out_elems > (std::size_t{1} << 31)) return Fail(error, "output too large");
  if (shape == OutputShape::kFixed && !HasBytes(out, out_elems, 4u)) {
    return Fail(error, "output byte size does not match its shape");
  }
  plan->batch = id[0];
  for (int i = 0; i < 4; ++i) plan->out_dims[i] = dims[i];
  return true;
}

// ---------------------------------------------------------------------- ops::DUAL_QUANTIZE
bool ValidateDualQuantize(const Node& node, OutputShape shape, DualQuantizePlan* plan,
                          std::string* error) {
  namespace c = ops::dual_quantize;
  namespace dq = ::compute_engine::core::dual_quantize;
  if (node.num_inputs != c::kNumInputs) {
    return Fail(error, "expected %d inputs, got %d", static_cast<int>(c::kNumInputs),
                node.num_inputs);
  }
  if (node.num_outputs != c::kNumOutputs) {
    return Fail(error, "expected %d outputs, got %d", static_cast<int>(c::kNumOutputs),
                node.num_outputs);
  }
  const Tensor& x = node.inputs[c::kX];
  const char* xn = c::kInputNames[c::kX];
  if (!x.present) return Fail(error, "input %s missing", xn);
  if (x.type != DType::kFloat32) {
    return Fail(error, "%s must be float32, is %s", xn, DTypeName(x.type));
  }
  if (x.dims == nullptr || x.rank < 2 || x.rank > dq::kMaxRank) {
    return Fail(error, "%s must have rank 2, 3 or 4, has %d", xn,
                x.dims == nullptr ? -1 : x.rank);
  }
  const int rank = x.rank;
  for (int i = 0; i < rank; ++i) {
    if (x.dims[i] < 1) {
      return Fail(error, "%s has shape %s (every dimension must be >= 1)", xn,
                  ShapeString(x.dims, rank).c_str());
    }
  }
  std::size_t elements = 0;
  if (!NumElements(x, &elements)) {
    return Fail(error, "%s shape %s too large", xn, ShapeString(x.dims, rank).c_str());
  }
  if (!HasBytes(x, elements, 4u)) {
    return Fail(error, "%s has %zu bytes, its shape needs %zu", xn, x.bytes, elements * 4u);
  }
  if (x.is_const) return Fail(error, "%s must not be a constant tensor", xn);
  const int C = x.dims[rank - 1];
  if (!CheckParam(node.inputs[c::kThresholds], c::kInputNames[c::kThresholds],
                  DType::kFloat32, ops::bdfsmn::kThreshRows, C, error)) {
    return false;
  }

  DualQuantizePlan p;
  p.rank = rank;
  p.geometry.rank = rank;
  for (int i = 0; i < rank; ++i) {
    p.geometry.dims[i] = x.dims[i];
    p.bits_dims[i] = x.dims[i];
  }
  p.bits_dims[rank - 1] = static_cast<int>(ops::PackedWords(C));
  const std::size_t positions = elements / static_cast<std::size_t>(C);
  const std::size_t bits_elems = positions * static_cast<std::size_t>(p.bits_dims[rank - 1]);
  for (int o = c::kB1; o <= c::kB2; ++o) {
    const Tensor& b = node.outputs[o];
    const char* bn = c::kOutputNames[o];
    if (!b.present) return Fail(error, "output %s missing", bn);
    if (b.type != DType::kInt32) {
      return Fail(error, "%s must be int32 (bit-packed), is %s", bn, DTypeName(b.type));
    }
    if (shape == OutputShape::kFixed) {
      if (!SameDims(b, p.bits_dims, rank)) {
        return Fail(error, "%s has shape %s, expected %s", bn,
                    ShapeString(b.dims, b.rank).c_str(),
                    ShapeString(p.bits_dims, rank).c_str());
      }
      if (!HasBytes(b, bits_elems, 4u)) {
        return Fail(error, "%s has %zu bytes, its shape needs %zu", bn, b.bytes,
                    bits_elems * 4u);
      }
    }
  }
  const Tensor& s = node.outputs[c::kScale];
  const char* sn = c::kOutputNames[c::kScale];
  if (!s.present) return Fail(error, "output %s missing", sn);
  if (s.type != DType::kFloat32) {
    return Fail(error, "%s must be float32, is %s", sn, DTypeName(s.type));
  }
  // The shape rule: x's rank, last dim 1, first dim x's, every other x's or 1.
  bool rule = s.dims != nullptr && s.rank == rank && s.dims[rank - 1] == 1 &&
              s.dims[0] == x.dims[0];
  for (int i = 1; rule && i + 1 < rank; ++i) rule = s.dims[i] == x.dims[i] || s.dims[i] == 1;
  if (!rule) {
    return Fail(error,
                "%s has shape %s; for %s %s it must have rank %d, last dim 1, first dim %d "
                "and every other dim %s's or 1",
                sn, ShapeString(s.dims, s.rank).c_str(), xn, ShapeString(x.dims, rank).c_str(),
                rank, x.dims[0], xn);
  }
  for (int i = 0; i < rank; ++i) {
    p.geometry.reduced[i] = i == rank - 1 || (i > 0 && s.dims[i] == 1);
    p.scale_dims[i] = s.dims[i];
  }
  const std::size_t scales = dq::ScaleElements(p.geometry);
  if (!HasBytes(s, scales, 4u) && (shape == OutputShape::kFixed || s.bytes != 0)) {
    return Fail(error, "%s has %zu bytes, its shape needs %zu", sn, s.bytes, scales * 4u);
  }
  p.thresholds = static_cast<const float*>(node.inputs[c::kThresholds].data);
  *plan = p;
  return true;
}

}  // namespace op_validate
}  // namespace core
}  // namespace compute_engine
