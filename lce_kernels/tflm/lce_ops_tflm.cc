// TensorFlow Lite Micro glue of the LCE-compatible ops ops::QUANTIZE, ops::DEQUANTIZE and
// ops::BCONV2D around lce_kernels/core/bitpack.h and core/bconv2d.h. Tensors, options,
// supported configurations and error cases as the TFLite glue (tflite/lce_ops.cc); in TFLM
// every output shape must already be in the model (Prepare checks it; nothing is resized).
//
//   QUANTIZE    in: float32 | int8 | bool [..., n]          out: int32 [..., ceil(n/32)]
//   DEQUANTIZE  in: int32 [..., ceil(n/32)]                 out: float32 | int8 | bool [..., n]
//   BCONV2D     in: kInput int32 [B, H, W, ceil(Cin/32)], kFilter int32 [Cout, Fh, Fw,
//               ceil(Cin/32)] (constant), kPostActivationMultiplier / kPostActivationBias
//               float32 [Cout] (constant; float output), kThreshold int32 [Cout] (constant;
//               bit-packed output); out float32 [B, OH, OW, Cout] | int32 [.., ceil(Cout/32)]
// Options of BCONV2D: LCE's FlexBuffers map, parsed by tflite/bconv2d_options.h.
#include <cmath>
#include <cstdint>

#include "../core/bconv2d.h"
#include "../core/bitpack.h"
#include "../core/op_contract.h"
#include "../tflite/bconv2d_options.h"
#include "lce_tflm_ops.h"
#include "tflm_op_common.h"

namespace compute_engine {
namespace tflm {
namespace lce_ops_tflm {

namespace bp = ::compute_engine::core::bitpack;
namespace bc = ::compute_engine::core::bconv2d;
namespace ops = ::compute_engine::ops;
namespace cm = ::compute_engine::tflm::common;
namespace bo = ::compute_engine::tflite::bconv2d_options;

static_assert(sizeof(bool) == 1, "bool tensors are read as bytes");

// ---------------------------------------------------------------------- QUANTIZE / DEQUANTIZE
struct PackOpData {
  KernelPath path = KernelPath::kAuto;
  std::size_t rows = 0;
  int n = 0;                                  // unpacked channels (last axis)
  std::int32_t zero_point = 0;                // quantize, int8 input
  std::int8_t zero_value = 0, one_value = 0;  // dequantize, int8 output
  TfLiteType type = kTfLiteNoType;            // the unpacked side's type
  bool prepared = false;
};

template <KernelPath kPath>
void* PackInit(TfLiteContext* ctx, const char* /*buffer*/, std::size_t /*length*/) {
  PackOpData* d = cm::NewOpData<PackOpData>(ctx);
  if (d != nullptr) d->path = ::compute_engine::core::ResolveKernelPath(kPath);
  return d;
}

void PackFree(TfLiteContext* /*ctx*/, void* data) { cm::DeleteOpData<PackOpData>(data); }

// Shared checks: op data, one input, one output, ranks 1..8.
#define LCE_PACK_COMMON(name, ctx, node, d, tt, in, out)                                    \
  auto* d = static_cast<PackOpData*>((node)->user_data);                                  \
  LCE_TFLM_ENSURE(name, d != nullptr, "no op data (arena full in Init)");                 \
  d->prepared = false;                                                                     \
  LCE_TFLM_ENSURE(name, (node)->inputs != nullptr && (node)->inputs->size == 1,          \
                  "expected 1 input, got %d", (node)->inputs ? (node)->inputs->size : -1); \
  LCE_TFLM_ENSURE(name, (node)->outputs != nullptr && (node)->outputs->size == 1,        \
                  "expected 1 output");                                                    \
  cm::TempTensors tt(ctx);                                                                 \
  const TfLiteTensor* in = tt.Input(node, 0);                                              \
  const TfLiteTensor* out = tt.Output(node, 0);                                            \
  LCE_TFLM_ENSURE(name, in != nullptr && out != nullptr, "missing input or output");      \
  LCE_TFLM_ENSURE(name, cm::Rank(in) >= 1 && cm::Rank(in) <= 8,                           \
                  "input must have rank 1 to 8, has %d", cm::Rank(in))

#define Q_ENSURE(cond, ...) LCE_TFLM_ENSURE(ops::QUANTIZE, cond, __VA_ARGS__)
#define DQ_ENSURE(cond, ...) LCE_TFLM_ENSURE(ops::DEQUANTIZE, cond, __VA_ARGS__)

TfLiteStatus QuantizePrepare(TfLiteContext* ctx, TfLiteNode* node) {
  LCE_PACK_COMMON(ops::QUANTIZE, ctx, node, d, tt, in, out);
  Q_ENSURE(in->type == kTfLiteFloat32 || in->type == kTfLiteInt8 || in->type == kTfLiteBool,
           "input type %s not supported (float32, int8 or bool)", cm::TypeName(in->type));
  Q_ENSURE(out->type == kTfLiteInt32, "output must be int32 (bit-packed), is %s",
           cm::TypeName(out->type));
  const int rank = cm::Rank(in);
  std::size_t elements = 0;
  Q_ENSURE(cm::NumElements(in->dims, &elements), "input shape invalid");
  const std::size_t esize = in->type == kTfLiteFloat32 ? 4u : 1u;
  Q_ENSURE(cm::HasBytes(in, elements, esize), "input has %zu bytes, its shape needs %zu",
           in->bytes, elements * esize);
  const int n = in->dims->data[rank - 1];
  Q_ENSURE(n <= (1 << 30), "last dimension %d too large", n);
  int dims[8];
  for (int i = 0; i < rank; ++i) dims[i] = in->dims->data[i];
  dims[rank - 1] = bp::PackedWords(n);
  char a[96], b[96];
  Q_ENSURE(cm::SameDims(out->dims, dims, rank),
           "output shape %s, the packed input %s needs the last dimension %d",
           cm::ShapeString(out->dims, a, sizeof a), cm::ShapeString(in->dims, b, sizeof b),
           dims[rank - 1]);
  const std::size_t rows = n == 0 ? 0 : elements / static_cast<std::size_t>(n);
  Q_ENSURE(cm::HasBytes(out, rows * static_cast<std::size_t>(dims[rank - 1]), 4u),
           "output byte size does not match its shape");
  if (in->type == kTfLiteInt8) d->zero_point = in->params.zero_point;
  d->n = n;
  d->rows = rows;
  d->type = in->type;
  d->prepared = true;
  return kTfLiteOk;
}

TfLiteStatus QuantizeEval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<PackOpData*>(node->user_data);
  Q_ENSURE(d != nullptr && d->prepared, "Eval before a successful Prepare");
  if (d->rows == 0) return kTfLiteOk;
  const TfLiteEvalTensor* in = ::tflite::micro::GetEvalInput(ctx, node, 0);
  TfLiteEvalTensor* out = ::tflite::micro::GetEvalOutput(ctx, node, 0);
  Q_ENSURE(in != nullptr && out != nullptr && in->data.data != nullptr &&
               out->data.data != nullptr,
           "unallocated tensors");
  std::int32_t* o = out->data.i32;
  if (d->type == kTfLiteFloat32) {
    bp::PackFloat(in->data.f, d->rows, d->n, o, d->path);
  } else if (d->type == kTfLiteInt8) {
    bp::PackInt8(in->data.int8, d->rows, d->n, d->zero_point, o);
  } else {
    bp::PackBool(in->data.uint8, d->rows, d->n, o);
  }
  return kTfLiteOk;
}

TfLiteStatus DequantizePrepare(TfLiteContext* ctx, TfLiteNode* node) {
  LCE_PACK_COMMON(ops::DEQUANTIZE, ctx, node, d, tt, in, out);
  DQ_ENSURE(in->type == kTfLiteInt32, "input must be int32 (bit-packed), is %s",
            cm::TypeName(in->type));
  DQ_ENSURE(out->type == kTfLiteFloat32 || out->type == kTfLiteInt8 || out->type == kTfLiteBool,
            "output type %s not supported (float32, int8 or bool)", cm::TypeName(out->type));
  const int rank = cm::Rank(in);
  DQ_ENSURE(cm::Rank(out) == rank,
            "output rank %d differs from the input's %d (the model must give the output shape)",
            cm::Rank(out), rank);
  for (int i = 0; i < rank - 1; ++i) {
    DQ_ENSURE(out->dims->data[i] == in->dims->data[i], "output dim %d is %d, input's is %d", i,
              out->dims->data[i], in->dims->data[i]);
  }
  const int n = out->dims->data[rank - 1];
  DQ_ENSURE(n >= 0 && n <= (1 << 30), "output's last dimension %d invalid", n);
  DQ_ENSURE(in->dims->data[rank - 1] == bp::PackedWords(n),
            "input has %d words per row, %d output channels need %d", in->dims->data[rank - 1],
            n, bp::PackedWords(n));
  std::size_t in_elems = 0, out_elems = 0;
  DQ_ENSURE(cm::NumElements(in->dims, &in_elems) && cm::NumElements(out->dims, &out_elems),
            "input or output shape invalid");
  DQ_ENSURE(cm::HasBytes(in, in_elems, 4u), "input has %zu bytes, its shape needs %zu",
            in->bytes, in_elems * 4u);
  const std::size_t esize = out->type == kTfLiteFloat32 ? 4u : 1u;
  DQ_ENSURE(cm::HasBytes(out, out_elems, esize), "output has %zu bytes, its shape needs %zu",
            out->bytes, out_elems * esize);
  if (out->type == kTfLiteInt8) {
    const float scale = out->params.scale;
    const std::int32_t zp = out->params.zero_point;
    DQ_ENSURE(std::isfinite(scale) && scale > 0.0f,
              "int8 output needs a positive scale, has %g", static_cast<double>(scale));
    DQ_ENSURE(zp >= -128 && zp <= 127, "int8 output zero point %d outside [-128, 127]",
              static_cast<int>(zp));
    // As LCE: offset = round(1 / scale) (half away from zero), saturated to int8.
    const float inv = std::round(1.0f / scale);
    const std::int32_t offset = inv > 1000.0f ? 1000 : static_cast<std::int32_t>(inv);
    d->zero_value = static_cast<std::int8_t>(zp + offset > 127 ? 127 : zp + offset);
    d->one_value = static_cast<std::int8_t>(zp - offset < -128 ? -128 : zp - offset);
  }
  d->n = n;
  d->rows = n == 0 ? 0 : out_elems / static_cast<std::size_t>(n);
  d->type = out->type;
  d->prepared = true;
  return kTfLiteOk;
}

TfLiteStatus DequantizeEval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<PackOpData*>(node->user_data);
  DQ_ENSURE(d != nullptr && d->prepared, "Eval before a successful Prepare");
  if (d->rows == 0) return kTfLiteOk;
  const TfLiteEvalTensor* in = ::tflite::micro::GetEvalInput(ctx, node, 0);
  TfLiteEvalTensor* out = ::tflite::micro::GetEvalOutput(ctx, node, 0);
  DQ_ENSURE(in != nullptr && out != nullptr && in->data.data != nullptr &&
                out->data.data != nullptr,
            "unallocated tensors");
  if (d->type == kTfLiteFloat32) {
    bp::UnpackFloat(in->data.i32, d->rows, d->n, out->data.f, d->path);
  } else if (d->type == kTfLiteInt8) {
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
  bool options_ok = false;
  cm::Message init_error;
  bo::Options options;
  bc::BConv2D conv;
  int batch = 0;
  std::size_t out_bytes = 0;
  bool prepared = false;
};

template <KernelPath kPath>
void* BconvInit(TfLiteContext* ctx, const char* buffer, std::size_t length) {
  BconvOpData* d = cm::NewOpData<BconvOpData>(ctx);
  if (d == nullptr) return nullptr;
  d->path = ::compute_engine::core::ResolveKernelPath(kPath);
  std::string err;
  if (bo::Parse(reinterpret_cast<const std::uint8_t*>(buffer), length, &d->options, &err)) {
    d->options_ok = true;
  } else {
    d->init_error.Set(("cannot parse custom_options: " + err).c_str());
  }
  return d;
}

void BconvFree(TfLiteContext* /*ctx*/, void* data) { cm::DeleteOpData<BconvOpData>(data); }

#define BC_ENSURE(cond, ...) LCE_TFLM_ENSURE(ops::BCONV2D, cond, __VA_ARGS__)

// A constant rank-1 tensor of `n` values of `type`.
TfLiteStatus CheckVector(const TfLiteTensor* t, const char* name, TfLiteType type, int n,
                         const char* why) {
  BC_ENSURE(t != nullptr, "input %s missing (%s)", name, why);
  BC_ENSURE(t->type == type, "%s must be %s, is %s", name, cm::TypeName(type),
            cm::TypeName(t->type));
  BC_ENSURE(cm::Rank(t) == 1 && t->dims->data[0] == n, "%s must have shape [%d]", name, n);
  BC_ENSURE(cm::HasBytes(t, static_cast<std::size_t>(n), 4u) && t->data.data != nullptr,
            "%s has %zu bytes, expected %d", name, t->bytes, 4 * n);
  BC_ENSURE(cm::IsConst(t), "%s must be a constant tensor", name);
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
  BC_ENSURE(d != nullptr, "no op data (arena full in Init)");
  d->prepared = false;
  BC_ENSURE(d->options_ok, "%s", d->init_error.text);
  const bo::Options& o = d->options;
  BC_ENSURE(node->inputs != nullptr && node->inputs->size == kBconvInputs,
            "expected %d inputs, got %d", kBconvInputs, node->inputs ? node->inputs->size : -1);
  BC_ENSURE(node->outputs != nullptr && node->outputs->size == 1, "expected 1 output");
  BC_ENSURE(o.padding == bo::kPaddingSame || o.padding == bo::kPaddingValid,
            "padding %d not supported (SAME = 0 or VALID = 1)", o.padding);
  BC_ENSURE(o.activation >= bo::kActNone && o.activation <= bo::kActRelu6,
            "fused_activation_function %d (%s) not supported (NONE, RELU, RELU_N1_TO_1, RELU6)",
            o.activation, ActivationName(o.activation));

  cm::TempTensors tt(ctx);
  const TfLiteTensor* in = tt.Input(node, kInput);
  const TfLiteTensor* filter = tt.Input(node, kFilter);
  const TfLiteTensor* out = tt.Output(node, 0);
  BC_ENSURE(in != nullptr && filter != nullptr && out != nullptr,
            "input, filter or output missing");
  BC_ENSURE(in->type == kTfLiteInt32, "input must be int32 (bit-packed), is %s",
            cm::TypeName(in->type));
  BC_ENSURE(cm::Rank(in) == 4, "input must have rank 4 [B, H, W, words], has %d", cm::Rank(in));
  BC_ENSURE(filter->type == kTfLiteInt32, "filter must be int32 (bit-packed), is %s",
            cm::TypeName(filter->type));
  BC_ENSURE(cm::Rank(filter) == 4, "filter must have rank 4 [Cout, Fh, Fw, words], has %d",
            cm::Rank(filter));
  BC_ENSURE(cm::IsConst(filter), "filter must be a constant tensor");
  const int cin = o.channels_in, words = bp::PackedWords(cin);
  const int* id = in->dims->data;
  const int* fd = filter->dims->data;
  BC_ENSURE(fd[3] == words,
            "filter has %d words per tap, channels_in %d needs %d (grouped binary "
            "convolutions are not supported)",
            fd[3], cin, words);
  BC_ENSURE(id[3] == words, "input has %d words per pixel, channels_in %d needs %d", id[3], cin,
            words);
  BC_ENSURE(id[0] >= 1 && id[1] >= 1 && id[2] >= 1, "input shape [%d, %d, %d, %d] invalid",
            id[0], id[1], id[2], id[3]);
  BC_ENSURE(fd[0] >= 1 && fd[1] >= 1 && fd[2] >= 1, "filter shape [%d, %d, %d, %d] invalid",
            fd[0], fd[1], fd[2], fd[3]);
  std::size_t in_elems = 0, f_elems = 0;
  BC_ENSURE(cm::NumElements(in->dims, &in_elems) && cm::HasBytes(in, in_elems, 4u),
            "input byte size does not match its shape");
  BC_ENSURE(cm::NumElements(filter->dims, &f_elems) && cm::HasBytes(filter, f_elems, 4u) &&
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
  s.padding = o.padding == bo::kPaddingSame ? bc::Padding::kSame : bc::Padding::kValid;
  s.pad_value = o.pad_value;
  s.activation = static_cast<bc::Activation>(o.activation);
  s.filter = filter->data.i32;
  if (out->type == kTfLiteFloat32) {
    const TfLiteTensor* m = tt.Input(node, kPostActivationMultiplier);
    const TfLiteTensor* b = tt.Input(node, kPostActivationBias);
    if (CheckVector(m, "post_activation_multiplier", kTfLiteFloat32, cout, "float output") !=
            kTfLiteOk ||
        CheckVector(b, "post_activation_bias", kTfLiteFloat32, cout, "float output") !=
            kTfLiteOk) {
      return kTfLiteError;
    }
    s.output = bc::Output::kFloat;
    s.multiplier = m->data.f;
    s.bias = b->data.f;
  } else if (out->type == kTfLiteInt32) {
    const TfLiteTensor* t = tt.Input(node, kThreshold);
    if (CheckVector(t, "output threshold", kTfLiteInt32, cout, "bit-packed output") !=
        kTfLiteOk) {
      return kTfLiteError;
    }
    s.output = bc::Output::kBitpacked;
    s.thresholds = t->data.i32;
  } else {
    BC_ENSURE(false,
              "output type %s not supported (float32, or int32 = bit-packed; int8 output is "
              "not supported)",
              cm::TypeName(out->type));
  }
  // Zero padding: exactly what LCE accepts (as the TFLite glue).
  if (s.padding == bc::Padding::kSame && s.pad_value == 0) {
    BC_ENSURE(cin % 2 == 0 ||
                  (s.output == bc::Output::kFloat && s.activation == bc::Activation::kNone),
              "zero padding (SAME, pad_values 0) with an odd channels_in (%d) is supported "
              "only with float output and no fused activation",
              cin);
  }
  std::string err;
  BC_ENSURE(d->conv.Init(s, &err), "%s", err.c_str());

  const int dims[4] = {id[0], d->conv.output_height(), d->conv.output_width(),
                       d->conv.output_depth()};
  char a[96];
  BC_ENSURE(cm::SameDims(out->dims, dims, 4),
            "output shape %s in the model, the convolution gives [%d, %d, %d, %d]",
            cm::ShapeString(out->dims, a, sizeof a), dims[0], dims[1], dims[2], dims[3]);
  const std::size_t out_elems = static_cast<std::size_t>(dims[0]) * dims[1] * dims[2] * dims[3];
  BC_ENSURE(cm::HasBytes(out, out_elems, 4u), "output byte size does not match its shape");
  d->batch = id[0];
  d->out_bytes = out_elems * 4u;
  d->prepared = true;
  return kTfLiteOk;
}

TfLiteStatus BconvEval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<BconvOpData*>(node->user_data);
  BC_ENSURE(d != nullptr && d->prepared, "Eval before a successful Prepare");
  const TfLiteEvalTensor* in = ::tflite::micro::GetEvalInput(ctx, node, kInput);
  TfLiteEvalTensor* out = ::tflite::micro::GetEvalOutput(ctx, node, 0);
  BC_ENSURE(in != nullptr && out != nullptr && in->data.data != nullptr &&
                out->data.data != nullptr,
            "unallocated tensors");
  d->conv.Eval(in->data.i32, d->batch, out->data.data, d->path);
  return kTfLiteOk;
}

template <KernelPath kPath>
TFLMRegistration Quantize() {
  return ::tflite::micro::RegisterOp(PackInit<kPath>, QuantizePrepare, QuantizeEval, PackFree);
}
template <KernelPath kPath>
TFLMRegistration Dequantize() {
  return ::tflite::micro::RegisterOp(PackInit<kPath>, DequantizePrepare, DequantizeEval,
                                   PackFree);
}
template <KernelPath kPath>
TFLMRegistration Bconv() {
  return ::tflite::micro::RegisterOp(BconvInit<kPath>, BconvPrepare, BconvEval, BconvFree);
}

// One registration per kernel path (the path is a template argument of Init).
#define LCE_TFLM_BY_PATH(fn)                                                   \
  switch (path) {                                                              \
    case KernelPath::kPortable: return fn<KernelPath::kPortable>();            \
    case KernelPath::kNeon: return fn<KernelPath::kNeon>();                    \
    case KernelPath::kAvx512: return fn<KernelPath::kAvx512>();                \
    case KernelPath::kAuto: break;                                             \
  }                                                                            \
  return fn<KernelPath::kAuto>()

}  // namespace lce_ops_tflm

TFLMRegistration Register_QUANTIZE(KernelPath path) {
  LCE_TFLM_BY_PATH(lce_ops_tflm::Quantize);
}
TFLMRegistration Register_DEQUANTIZE(KernelPath path) {
  LCE_TFLM_BY_PATH(lce_ops_tflm::Dequantize);
}
TFLMRegistration Register_BCONV_2D(KernelPath path) { LCE_TFLM_BY_PATH(lce_ops_tflm::Bconv); }

}  // namespace tflm
}  // namespace compute_engine
