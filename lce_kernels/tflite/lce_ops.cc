// TFLite glue of the LCE-compatible ops ops::QUANTIZE, ops::DEQUANTIZE and ops::BCONV2D
// (names, input order and option keys: core/op_contract.h; kernels in core/bitpack.h and
// core/bconv2d.h; semantics and what is supported: README.md, "LCE-compatible ops").
// Registered through lce_ops_register.h, one registration per kernel path.
//
// Init never fails hard (it cannot report errors): it parses the options and remembers any
// problem; Prepare validates every tensor (count, type, rank, shape, byte size, constness)
// and option, names any configuration this library does not support, builds the kernel
// (repacked filter, fused output transform) and sizes the output; Eval only computes.
//
//   QUANTIZE    in: float32 | int8 | bool [..., n]          out: int32 [..., ceil(n/32)]
//   DEQUANTIZE  in: int32 [..., ceil(n/32)]                 out: float32 | int8 | bool [..., n]
//   BCONV2D     in: kInput int32 [B, H, W, ceil(Cin/32)]  kFilter int32 [Cout, Fh, Fw,
//               ceil(Cin/32)] (constant)  kPostActivationMultiplier float32 [Cout]
//               kPostActivationBias float32 [Cout] (constant; float output)
//               kThreshold int32 [Cout] (constant; bit-packed output)
//               out: float32 [B, OH, OW, Cout] | int32 [B, OH, OW, ceil(Cout/32)]
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "../core/bconv2d.h"
#include "../core/bitpack.h"
#include "bconv2d_options.h"
#include "op_common.h"

namespace compute_engine {
namespace tflite {
namespace lce_ops {

namespace oc = ::compute_engine::tflite::op_common;
namespace bp = ::compute_engine::core::bitpack;
namespace bc = ::compute_engine::core::bconv2d;
namespace ops = ::compute_engine::ops;

static_assert(sizeof(bool) == 1, "bool tensors are read as bytes");

// ---------------------------------------------------------------------- QUANTIZE / DEQUANTIZE
struct PackOpData {
  KernelPath path = KernelPath::kAuto;
  std::string init_error;
  std::size_t rows = 0;
  int n = 0;  // unpacked channels (last axis)
  std::int32_t zero_point = 0;            // quantize, int8 input
  std::int8_t zero_value = 0, one_value = 0;  // dequantize, int8 output
};

template <KernelPath kPath>
void* PackInit(TfLiteContext* /*ctx*/, const char* /*buffer*/, std::size_t /*length*/) {
  auto* d = new (std::nothrow) PackOpData;
  if (d == nullptr) return nullptr;
  oc::EffectivePath(kPath, &d->path, &d->init_error);
  return d;
}

void PackFree(TfLiteContext* /*ctx*/, void* data) { delete static_cast<PackOpData*>(data); }

// Shared checks of both ops: one input, one output, op data, ranks.
#define LCE_PACK_COMMON(ctx, node, name, d, in, out)                                       \
  auto* d = static_cast<PackOpData*>((node)->user_data);                                 \
  LCE_OP_ENSURE(ctx, name, d != nullptr, "no op data (out of memory in Init)");          \
  LCE_OP_ENSURE(ctx, name, d->init_error.empty(), "%s", d->init_error.c_str());          \
  LCE_OP_ENSURE(ctx, name, (node)->inputs != nullptr && (node)->inputs->size == 1,       \
                "expected 1 input, got %d", (node)->inputs ? (node)->inputs->size : -1); \
  LCE_OP_ENSURE(ctx, name, (node)->outputs != nullptr && (node)->outputs->size == 1,     \
                "expected 1 output");                                                    \
  const TfLiteTensor* in = oc::Input(ctx, node, 0);                                      \
  TfLiteTensor* out = oc::Output(ctx, node, 0);                                          \
  LCE_OP_ENSURE(ctx, name, in != nullptr && out != nullptr, "missing input or output");  \
  LCE_OP_ENSURE(ctx, name, oc::Rank(in) >= 1 && oc::Rank(in) <= 8,                      \
                "input must have rank 1 to 8, has %d", oc::Rank(in))

TfLiteStatus QuantizePrepare(TfLiteContext* ctx, TfLiteNode* node) {
  LCE_PACK_COMMON(ctx, node, ops::QUANTIZE, d, in, out);
  LCE_OP_ENSURE(ctx, ops::QUANTIZE,
                in->type == kTfLiteFloat32 || in->type == kTfLiteInt8 || in->type == kTfLiteBool,
                "input type %s not supported (float32, int8 or bool)", oc::TypeName(in->type));
  LCE_OP_ENSURE(ctx, ops::QUANTIZE, out->type == kTfLiteInt32,
                "output must be int32 (bit-packed), is %s", oc::TypeName(out->type));
  const int rank = oc::Rank(in);
  std::size_t elements = 0;
  LCE_OP_ENSURE(ctx, ops::QUANTIZE, oc::NumElements(in, &elements), "input shape invalid");
  const std::size_t esize = in->type == kTfLiteFloat32 ? 4u : 1u;
  LCE_OP_ENSURE(ctx, ops::QUANTIZE, oc::HasBytes(in, elements, esize),
                "input has %zu bytes, its shape needs %zu", in->bytes, elements * esize);
  if (in->type == kTfLiteInt8) d->zero_point = in->params.zero_point;
  d->n = in->dims->data[rank - 1];
  LCE_OP_ENSURE(ctx, ops::QUANTIZE, d->n <= (1 << 30), "last dimension %d too large", d->n);
  d->rows = d->n == 0 ? 0 : elements / static_cast<std::size_t>(d->n);
  int dims[8];
  for (int i = 0; i < rank; ++i) dims[i] = in->dims->data[i];
  dims[rank - 1] = bp::PackedWords(d->n);
  return oc::ResizeIfNeeded(ctx, out, dims, rank);
}

TfLiteStatus QuantizeEval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<PackOpData*>(node->user_data);
  const TfLiteTensor* in = oc::Input(ctx, node, 0);
  TfLiteTensor* out = oc::Output(ctx, node, 0);
  LCE_OP_ENSURE(ctx, ops::QUANTIZE, d != nullptr && in != nullptr && out != nullptr,
                "Eval before a successful Prepare");
  if (d->rows == 0) return kTfLiteOk;
  LCE_OP_ENSURE(ctx, ops::QUANTIZE, in->data.data != nullptr && out->data.data != nullptr &&
                out->bytes >= d->rows * static_cast<std::size_t>(bp::PackedWords(d->n)) * 4u,
                "unallocated tensors");
  std::int32_t* o = out->data.i32;
  if (in->type == kTfLiteFloat32) {
    bp::PackFloat(in->data.f, d->rows, d->n, o, d->path);
  } else if (in->type == kTfLiteInt8) {
    bp::PackInt8(in->data.int8, d->rows, d->n, d->zero_point, o);
  } else {
    bp::PackBool(in->data.uint8, d->rows, d->n, o);
  }
  return kTfLiteOk;
}

TfLiteStatus DequantizePrepare(TfLiteContext* ctx, TfLiteNode* node) {
  LCE_PACK_COMMON(ctx, node, ops::DEQUANTIZE, d, in, out);
  LCE_OP_ENSURE(ctx, ops::DEQUANTIZE, in->type == kTfLiteInt32,
                "input must be int32 (bit-packed), is %s", oc::TypeName(in->type));
  LCE_OP_ENSURE(ctx, ops::DEQUANTIZE,
                out->type == kTfLiteFloat32 || out->type == kTfLiteInt8 ||
                    out->type == kTfLiteBool,
                "output type %s not supported (float32, int8 or bool)", oc::TypeName(out->type));
  const int rank = oc::Rank(in);
  // The output shape cannot be inferred (the channel count is not in the packed input):
  // it must be in the model.
  LCE_OP_ENSURE(ctx, ops::DEQUANTIZE, oc::Rank(out) == rank,
                "output rank %d differs from the input's %d (the model must give the output "
                "shape)", oc::Rank(out), rank);
  for (int i = 0; i < rank - 1; ++i) {
    LCE_OP_ENSURE(ctx, ops::DEQUANTIZE, out->dims->data[i] == in->dims->data[i],
                  "output dim %d is %d, input's is %d", i, out->dims->data[i], in->dims->data[i]);
  }
  const int n = out->dims->data[rank - 1];
  LCE_OP_ENSURE(ctx, ops::DEQUANTIZE, n >= 0 && n <= (1 << 30),
                "output's last dimension %d invalid", n);
  LCE_OP_ENSURE(ctx, ops::DEQUANTIZE, in->dims->data[rank - 1] == bp::PackedWords(n),
                "input has %d words per row, %d output channels need %d",
                in->dims->data[rank - 1], n, bp::PackedWords(n));
  std::size_t in_elems = 0, out_elems = 0;
  LCE_OP_ENSURE(ctx, ops::DEQUANTIZE,
                oc::NumElements(in, &in_elems) && oc::NumElements(out, &out_elems),
                "input or output shape invalid");
  LCE_OP_ENSURE(ctx, ops::DEQUANTIZE, oc::HasBytes(in, in_elems, 4u),
                "input has %zu bytes, its shape needs %zu", in->bytes, in_elems * 4u);
  if (out->type == kTfLiteInt8) {
    const float scale = out->params.scale;
    const std::int32_t zp = out->params.zero_point;
    LCE_OP_ENSURE(ctx, ops::DEQUANTIZE, std::isfinite(scale) && scale > 0.0f,
                  "int8 output needs a positive scale, has %g", static_cast<double>(scale));
    LCE_OP_ENSURE(ctx, ops::DEQUANTIZE, zp >= -128 && zp <= 127,
                  "int8 output zero point %d outside [-128, 127]", static_cast<int>(zp));
    // As LCE: offset = round(1 / scale) (half away from zero), saturated to int8.
    const float inv = std::round(1.0f / scale);
    const std::int32_t offset = inv > 1000.0f ? 1000 : static_cast<std::int32_t>(inv);
    d->zero_value = static_cast<std::int8_t>(zp + offset > 127 ? 127 : zp + offset);
    d->one_value = static_cast<std::int8_t>(zp - offset < -128 ? -128 : zp - offset);
  }
  d->n = n;
  d->rows = n == 0 ? 0 : out_elems / static_cast<std::size_t>(n);
  return kTfLiteOk;
}

TfLiteStatus DequantizeEval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<PackOpData*>(node->user_data);
  const TfLiteTensor* in = oc::Input(ctx, node, 0);
  TfLiteTensor* out = oc::Output(ctx, node, 0);
  LCE_OP_ENSURE(ctx, ops::DEQUANTIZE, d != nullptr && in != nullptr && out != nullptr,
                "Eval before a successful Prepare");
  if (d->rows == 0) return kTfLiteOk;
  const std::size_t esize = out->type == kTfLiteFloat32 ? 4u : 1u;
  LCE_OP_ENSURE(ctx, ops::DEQUANTIZE, in->data.data != nullptr && out->data.data != nullptr &&
                out->bytes >= d->rows * static_cast<std::size_t>(d->n) * esize,
                "unallocated tensors");
  if (out->type == kTfLiteFloat32) {
    bp::UnpackFloat(in->data.i32, d->rows, d->n, out->data.f, d->path);
  } else if (out->type == kTfLiteInt8) {
    bp::UnpackInt8(in->data.i32, d->rows, d->n, d->zero_value, d->one_value, out->data.int8);
  } else {
    bp::UnpackBool(in->data.i32, d->rows, d->n, out->data.uint8);
  }
  return kTfLiteOk;
}

// -------------------------------------------------------------------------------- BCONV2D
using ops::bconv2d::kFilter;
using ops::bconv2d::kInput;
using ops::bconv2d::kPostActivationBias;
using ops::bconv2d::kPostActivationMultiplier;
using ops::bconv2d::kThreshold;
constexpr int kBconvInputs = ops::bconv2d::kNumInputs;

struct BconvOpData {
  KernelPath path = KernelPath::kAuto;
  std::string init_error;
  bconv2d_options::Options options;
  bc::BConv2D conv;
  int batch = 0;
  bool prepared = false;
};

template <KernelPath kPath>
void* BconvInit(TfLiteContext* /*ctx*/, const char* buffer, std::size_t length) {
  auto* d = new (std::nothrow) BconvOpData;
  if (d == nullptr) return nullptr;
  std::string err;
  if (!oc::EffectivePath(kPath, &d->path, &err)) {
    d->init_error = err;
    return d;
  }
  if (!bconv2d_options::Parse(reinterpret_cast<const std::uint8_t*>(buffer), length,
                              &d->options, &err)) {
    d->init_error = "cannot parse custom_options: " + err;
  }
  return d;
}

void BconvFree(TfLiteContext* /*ctx*/, void* data) { delete static_cast<BconvOpData*>(data); }

#define BC_ENSURE(ctx, cond, ...) LCE_OP_ENSURE(ctx, ops::BCONV2D, cond, __VA_ARGS__)

// A constant rank-1 tensor of `n` values of `type`.
TfLiteStatus CheckVector(TfLiteContext* ctx, const TfLiteTensor* t, const char* name,
                         TfLiteType type, int n, const char* why) {
  BC_ENSURE(ctx, t != nullptr, "input %s missing (%s)", name, why);
  BC_ENSURE(ctx, t->type == type, "%s must be %s, is %s", name, oc::TypeName(type),
            oc::TypeName(t->type));
  BC_ENSURE(ctx, oc::Rank(t) == 1 && t->dims->data[0] == n, "%s must have shape [%d]", name, n);
  BC_ENSURE(ctx, oc::HasBytes(t, static_cast<std::size_t>(n), 4u) && t->data.data != nullptr,
            "%s has %zu bytes, expected %d", name, t->bytes, 4 * n);
  BC_ENSURE(ctx, oc::IsConst(t), "%s must be a constant tensor", name);
  return kTfLiteOk;
}

const char* ActivationName(int a) {
  switch (a) {
    case 4: return "TANH";
    case 5: return "SIGN_BIT";
    default: return "unknown";
  }
}

TfLiteStatus BconvPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<BconvOpData*>(node->user_data);
  BC_ENSURE(ctx, d != nullptr, "no op data (out of memory in Init)");
  d->prepared = false;
  BC_ENSURE(ctx, d->init_error.empty(), "%s", d->init_error.c_str());
  const bconv2d_options::Options& o = d->options;
  BC_ENSURE(ctx, node->inputs != nullptr && node->inputs->size == kBconvInputs,
            "expected %d inputs, got %d", kBconvInputs, node->inputs ? node->inputs->size : -1);
  BC_ENSURE(ctx, node->outputs != nullptr && node->outputs->size == 1, "expected 1 output");
  BC_ENSURE(ctx, o.padding == bconv2d_options::kPaddingSame ||
                     o.padding == bconv2d_options::kPaddingValid,
            "padding %d not supported (SAME = 0 or VALID = 1)", o.padding);
  BC_ENSURE(ctx, o.activation >= bconv2d_options::kActNone &&
                     o.activation <= bconv2d_options::kActRelu6,
            "fused_activation_function %d (%s) not supported (NONE, RELU, RELU_N1_TO_1, RELU6)",
            o.activation, ActivationName(o.activation));

  const TfLiteTensor* in = oc::Input(ctx, node, kInput);
  const TfLiteTensor* filter = oc::Input(ctx, node, kFilter);
  TfLiteTensor* out = oc::Output(ctx, node, 0);
  BC_ENSURE(ctx, in != nullptr && filter != nullptr && out != nullptr,
            "input, filter or output missing");
  BC_ENSURE(ctx, in->type == kTfLiteInt32, "input must be int32 (bit-packed), is %s",
            oc::TypeName(in->type));
  BC_ENSURE(ctx, oc::Rank(in) == 4, "input must have rank 4 [B, H, W, words], has %d",
            oc::Rank(in));
  BC_ENSURE(ctx, filter->type == kTfLiteInt32, "filter must be int32 (bit-packed), is %s",
            oc::TypeName(filter->type));
  BC_ENSURE(ctx, oc::Rank(filter) == 4, "filter must have rank 4 [Cout, Fh, Fw, words], has %d",
            oc::Rank(filter));
  BC_ENSURE(ctx, oc::IsConst(filter), "filter must be a constant tensor");
  const int cin = o.channels_in, words = bp::PackedWords(cin);
  const int* id = in->dims->data;
  const int* fd = filter->dims->data;
  BC_ENSURE(ctx, fd[3] == words,
            "filter has %d words per tap, channels_in %d needs %d (grouped binary "
            "convolutions are not supported)", fd[3], cin, words);
  BC_ENSURE(ctx, id[3] == words, "input has %d words per pixel, channels_in %d needs %d",
            id[3], cin, words);
  BC_ENSURE(ctx, id[0] >= 1 && id[1] >= 1 && id[2] >= 1, "input shape [%d, %d, %d, %d] invalid",
            id[0], id[1], id[2], id[3]);
  BC_ENSURE(ctx, fd[0] >= 1 && fd[1] >= 1 && fd[2] >= 1, "filter shape [%d, %d, %d, %d] invalid",
            fd[0], fd[1], fd[2], fd[3]);
  std::size_t in_elems = 0, f_elems = 0;
  BC_ENSURE(ctx, oc::NumElements(in, &in_elems) && oc::HasBytes(in, in_elems, 4u),
            "input byte size does not match its shape");
  BC_ENSURE(ctx, oc::NumElements(filter, &f_elems) && oc::HasBytes(filter, f_elems, 4u) &&
                 filter->data.data != nullptr,
            "filter byte size does not match its shape");
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
  s.padding = o.padding == bconv2d_options::kPaddingSame ? bc::Padding::kSame
                                                         : bc::Padding::kValid;
  s.pad_value = o.pad_value;
  s.activation = static_cast<bc::Activation>(o.activation);
  s.filter = filter->data.i32;
  if (out->type == kTfLiteFloat32) {
    const TfLiteTensor* m = oc::Input(ctx, node, kPostActivationMultiplier);
    const TfLiteTensor* b = oc::Input(ctx, node, kPostActivationBias);
    if (CheckVector(ctx, m, "post_activation_multiplier", kTfLiteFloat32, cout,
                    "float output") != kTfLiteOk ||
        CheckVector(ctx, b, "post_activation_bias", kTfLiteFloat32, cout, "float output") !=
            kTfLiteOk) {
      return kTfLiteError;
    }
    s.output = bc::Output::kFloat;
    s.multiplier = m->data.f;
    s.bias = b->data.f;
  } else if (out->type == kTfLiteInt32) {
    const TfLiteTensor* t = oc::Input(ctx, node, kThreshold);
    if (CheckVector(ctx, t, "output threshold", kTfLiteInt32, cout, "bit-packed output") !=
        kTfLiteOk) {
      return kTfLiteError;
    }
    s.output = bc::Output::kBitpacked;
    s.thresholds = t->data.i32;
  } else {
    BC_ENSURE(ctx, false, "output type %s not supported (float32, or int32 = bit-packed; int8 "
              "output is not supported)", oc::TypeName(out->type));
  }
  // Zero padding: exactly what LCE accepts (its reference kernel with an even channels_in,
  // its optimized kernels with float output and no fused activation).
  if (s.padding == bc::Padding::kSame && s.pad_value == 0) {
    BC_ENSURE(ctx, cin % 2 == 0 || (s.output == bc::Output::kFloat &&
                                    s.activation == bc::Activation::kNone),
              "zero padding (SAME, pad_values 0) with an odd channels_in (%d) is supported "
              "only with float output and no fused activation", cin);
  }
  std::string err;
  BC_ENSURE(ctx, d->conv.Init(s, &err), "%s", err.c_str());

  const int dims[4] = {id[0], d->conv.output_height(), d->conv.output_width(),
                       d->conv.output_depth()};
  const std::size_t out_elems = static_cast<std::size_t>(dims[0]) * dims[1] * dims[2] * dims[3];
  BC_ENSURE(ctx, out_elems <= (std::size_t{1} << 31), "output too large");
  if (oc::ResizeIfNeeded(ctx, out, dims, 4) != kTfLiteOk) return kTfLiteError;
  d->batch = id[0];
  d->prepared = true;
  return kTfLiteOk;
}

TfLiteStatus BconvEval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<BconvOpData*>(node->user_data);
  BC_ENSURE(ctx, d != nullptr && d->prepared, "Eval before a successful Prepare");
  const TfLiteTensor* in = oc::Input(ctx, node, kInput);
  TfLiteTensor* out = oc::Output(ctx, node, 0);
  BC_ENSURE(ctx, in != nullptr && out != nullptr && in->data.data != nullptr &&
                 out->data.data != nullptr,
            "unallocated tensors");
  const std::size_t need = static_cast<std::size_t>(d->batch) * d->conv.output_height() *
                           d->conv.output_width() * d->conv.output_depth() * 4u;
  BC_ENSURE(ctx, out->bytes >= need, "output has %zu bytes, needs %zu", out->bytes, need);
  d->conv.Eval(in->data.i32, d->batch, out->data.data, d->path);
  return kTfLiteOk;
}

template <typename InitFn>
TfLiteRegistration MakeRegistration(InitFn init, void (*free_fn)(TfLiteContext*, void*),
                                    TfLiteStatus (*prepare)(TfLiteContext*, TfLiteNode*),
                                    TfLiteStatus (*invoke)(TfLiteContext*, TfLiteNode*)) {
  TfLiteRegistration r;
  std::memset(&r, 0, sizeof r);
  r.init = init;
  r.free = free_fn;
  r.prepare = prepare;
  r.invoke = invoke;
  r.version = 1;
  return r;
}

template <KernelPath kPath>
TfLiteRegistration* QuantizeRegistration() {
  static TfLiteRegistration r =
      MakeRegistration(PackInit<kPath>, PackFree, QuantizePrepare, QuantizeEval);
  return &r;
}

template <KernelPath kPath>
TfLiteRegistration* DequantizeRegistration() {
  static TfLiteRegistration r =
      MakeRegistration(PackInit<kPath>, PackFree, DequantizePrepare, DequantizeEval);
  return &r;
}

template <KernelPath kPath>
TfLiteRegistration* BconvRegistration() {
  static TfLiteRegistration r =
      MakeRegistration(BconvInit<kPath>, BconvFree, BconvPrepare, BconvEval);
  return &r;
}

}  // namespace lce_ops

#define LCE_OPS_BY_PATH(fn, path)                                        \
  switch (path) {                                                        \
    case KernelPath::kPortable: return fn<KernelPath::kPortable>();      \
    case KernelPath::kNeon: return fn<KernelPath::kNeon>();              \
    case KernelPath::kAvx512: return fn<KernelPath::kAvx512>();          \
    case KernelPath::kAuto: break;                                       \
  }                                                                      \
  return fn<KernelPath::kAuto>()

TfLiteRegistration* Register_LCE_QUANTIZE(KernelPath path) {
  LCE_OPS_BY_PATH(lce_ops::QuantizeRegistration, path);
}

TfLiteRegistration* Register_LCE_DEQUANTIZE(KernelPath path) {
  LCE_OPS_BY_PATH(lce_ops::DequantizeRegistration, path);
}

TfLiteRegistration* Register_LCE_BCONV_2D(KernelPath path) {
  LCE_OPS_BY_PATH(lce_ops::BconvRegistration, path);
}

}  // namespace tflite
}  // namespace compute_engine
