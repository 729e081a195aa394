// TensorFlow Lite Micro glue of the LCE-compatible ops ops::QUANTIZE, ops::DEQUANTIZE and
// ops::BCONV2D around lce_kernels/core/bitpack.h and core/bconv2d.h. Tensors, options,
// supported configurations and error cases as the TFLite glue (tflite/lce_ops.cc): every
// Prepare check is core/op_validate.h's, shared by both; in TFLM every output shape must
// already be in the model (Prepare checks it; nothing is resized).
//
//   QUANTIZE    in: float32 | int8 | bool [..., n]          out: int32 [..., ceil(n/32)]
//   DEQUANTIZE  in: int32 [..., ceil(n/32)]                 out: float32 | int8 | bool [..., n]
//   BCONV2D     in: kInput int32 [B, H, W, ceil(Cin/32)], kFilter int32 [Cout, Fh, Fw,
//               ceil(Cin/32)] (constant), kPostActivationMultiplier / kPostActivationBias
//               float32 [Cout] (constant; float output), kThreshold int32 [Cout] (constant;
//               bit-packed output); out float32 [B, OH, OW, Cout] | int32 [.., ceil(Cout/32)]
// Options of BCONV2D: LCE's FlexBuffers map, parsed by tflite/bconv2d_options.h.
//
// Also the project's ops::DUAL_QUANTIZE (core/dual_quantize.h): in x float32 [B, ..., C],
// thresholds float32 [2, C] (constant); out b1, b2 int32 [B, ..., ceil(C/32)], s float32 (the
// model's shape says which axes are averaged); no options, no heap, nothing resized.
#include <cstdint>

#include "../core/bconv2d.h"
#include "../core/bitpack.h"
#include "../core/dual_quantize.h"
#include "../core/op_contract.h"
#include "../core/op_validate.h"
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
namespace ov = ::compute_engine::core::op_validate;

static_assert(sizeof(bool) == 1, "bool tensors are read as bytes");

// ---------------------------------------------------------------------- QUANTIZE / DEQUANTIZE
struct PackOpData {
  KernelPath path = KernelPath::kAuto;
  std::size_t rows = 0;
  int n = 0;                                  // unpacked channels (last axis)
  std::int32_t zero_point = 0;                // quantize, int8 input
  std::int8_t zero_value = 0, one_value = 0;  // dequantize, int8 output
  ov::DType type = ov::DType::kOther;         // the unpacked side's type
  bool prepared = false;
};

template <KernelPath kPath>
void* PackInit(TfLiteContext* ctx, const char* /*buffer*/, std::size_t /*length*/) {
  PackOpData* d = cm::NewOpData<PackOpData>(ctx);
  if (d != nullptr) d->path = ::compute_engine::core::ResolveKernelPath(kPath);
  return d;
}

void PackFree(TfLiteContext* /*ctx*/, void* data) { cm::DeleteOpData<PackOpData>(data); }

// Op data; every other check is core/op_validate.h's (shared with the TFLite glue), with the
// output shape held by the model (kFixed: TFLM never resizes).
#define LCE_PACK_PREPARE(name, ctx, node, d)                              \
  auto* d = static_cast<PackOpData*>((node)->user_data);                \
  LCE_TFLM_ENSURE(name, d != nullptr, "no op data (arena full in Init)"); \
  d->prepared = false;                                                   \
  cm::TempTensors tt(ctx);                                               \
  ov::Node n;                                                            \
  cm::DescribeNode(node, &tt, &n);                                       \
  ov::PackPlan plan;                                                     \
  std::string err

#define Q_ENSURE(cond, ...) LCE_TFLM_ENSURE(ops::QUANTIZE, cond, __VA_ARGS__)
#define DQ_ENSURE(cond, ...) LCE_TFLM_ENSURE(ops::DEQUANTIZE, cond, __VA_ARGS__)

TfLiteStatus QuantizePrepare(TfLiteContext* ctx, TfLiteNode* node) {
  LCE_PACK_PREPARE(ops::QUANTIZE, ctx, node, d);
  Q_ENSURE(ov::ValidateQuantize(n, ov::OutputShape::kFixed, &plan, &err), "%s", err.c_str());
  d->zero_point = plan.zero_point;
  d->n = plan.n;
  d->rows = plan.rows;
  d->type = plan.type;
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
  if (d->type == ov::DType::kFloat32) {
    bp::PackFloat(in->data.f, d->rows, d->n, o, d->path);
  } else if (d->type == ov::DType::kInt8) {
    bp::PackInt8(in->data.int8, d->rows, d->n, d->zero_point, o);
  } else {
    bp::PackBool(in->data.uint8, d->rows, d->n, o);
  }
  return kTfLiteOk;
}

TfLiteStatus DequantizePrepare(TfLiteContext* ctx, TfLiteNode* node) {
  LCE_PACK_PREPARE(ops::DEQUANTIZE, ctx, node, d);
  DQ_ENSURE(ov::ValidateDequantize(n, ov::OutputShape::kFixed, &plan, &err), "%s", err.c_str());
  d->zero_value = plan.zero_value;
  d->one_value = plan.one_value;
  d->n = plan.n;
  d->rows = plan.rows;
  d->type = plan.type;
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
  if (d->type == ov::DType::kFloat32) {
    bp::UnpackFloat(in->data.i32, d->rows, d->n, out->data.f, d->path);
  } else if (d->type == ov::DType::kInt8) {
    bp::UnpackInt8(in->data.i32, d->rows, d->n, d->zero_value, d->one_value, out->data.int8);
  } else {
    bp::UnpackBool(in->data.i32, d->rows, d->n, out->data.uint8);
  }
  return kTfLiteOk;
}

// -------------------------------------------------------------------------------- BCONV2D
using ops::bconv2d::kInput;

struct BconvOpData {
  KernelPath path = KernelPath::kAuto;
  bool options_ok = false;
  cm::Message init_error;
  ov::Bconv2dOptions options;
  bc::BConv2D conv;
  int batch = 0;
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

// Every check (and building the kernel) is core/op_validate.h's, shared with the TFLite
// glue; the output shape must already be the convolution's (kFixed: TFLM never resizes).
TfLiteStatus BconvPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<BconvOpData*>(node->user_data);
  BC_ENSURE(d != nullptr, "no op data (arena full in Init)");
  d->prepared = false;
  BC_ENSURE(d->options_ok, "%s", d->init_error.text);
  cm::TempTensors tt(ctx);
  ov::Node n;
  cm::DescribeNode(node, &tt, &n);
  ov::Bconv2dPlan plan;
  std::string err;
  BC_ENSURE(ov::ValidateBconv2d(d->options, n, ov::OutputShape::kFixed, &d->conv, &plan, &err),
            "%s", err.c_str());
  d->batch = plan.batch;
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

// -------------------------------------------------------------------------- DUAL_QUANTIZE
namespace dqc = ::compute_engine::ops::dual_quantize;
namespace dq = ::compute_engine::core::dual_quantize;

struct DualOpData {
  KernelPath path = KernelPath::kAuto;
  bool options_ok = false;
  ov::DualQuantizePlan plan;
  bool prepared = false;
};

template <KernelPath kPath>
void* DualInit(TfLiteContext* ctx, const char* /*buffer*/, std::size_t length) {
  DualOpData* d = cm::NewOpData<DualOpData>(ctx);
  if (d == nullptr) return nullptr;
  d->path = ::compute_engine::core::ResolveKernelPath(kPath);
  d->options_ok = length == 0;
  return d;
}

void DualFree(TfLiteContext* /*ctx*/, void* data) { cm::DeleteOpData<DualOpData>(data); }

#define DUAL_ENSURE(cond, ...) LCE_TFLM_ENSURE(ops::DUAL_QUANTIZE, cond, __VA_ARGS__)

// Every check is core/op_validate.h's, shared with the TFLite glue; every output shape and
// byte size must already be the model's (kFixed: TFLM never resizes).
TfLiteStatus DualPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<DualOpData*>(node->user_data);
  DUAL_ENSURE(d != nullptr, "no op data (arena full in Init)");
  d->prepared = false;
  DUAL_ENSURE(d->options_ok, "takes no options (custom_options must be empty)");
  cm::TempTensors tt(ctx);
  ov::Node n;
  cm::DescribeNode(node, &tt, &n);
  std::string err;
  DUAL_ENSURE(ov::ValidateDualQuantize(n, ov::OutputShape::kFixed, &d->plan, &err), "%s",
              err.c_str());
  d->prepared = true;
  return kTfLiteOk;
}

TfLiteStatus DualEval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<DualOpData*>(node->user_data);
  DUAL_ENSURE(d != nullptr && d->prepared, "Eval before a successful Prepare");
  const TfLiteEvalTensor* x = ::tflite::micro::GetEvalInput(ctx, node, dqc::kX);
  TfLiteEvalTensor* b1 = ::tflite::micro::GetEvalOutput(ctx, node, dqc::kB1);
  TfLiteEvalTensor* b2 = ::tflite::micro::GetEvalOutput(ctx, node, dqc::kB2);
  TfLiteEvalTensor* s = ::tflite::micro::GetEvalOutput(ctx, node, dqc::kScale);
  DUAL_ENSURE(x != nullptr && b1 != nullptr && b2 != nullptr && s != nullptr &&
                  x->data.data != nullptr && b1->data.data != nullptr &&
                  b2->data.data != nullptr && s->data.data != nullptr,
              "unallocated tensors");
  const dq::Geometry& g = d->plan.geometry;
  const float* t = d->plan.thresholds;
  dq::DualQuantize(x->data.f, g, t, t + g.channels(), b1->data.i32, b2->data.i32, s->data.f,
                   d->path);
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

template <KernelPath kPath>
TFLMRegistration Dual() {
  return ::tflite::micro::RegisterOp(DualInit<kPath>, DualPrepare, DualEval, DualFree);
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
TFLMRegistration Register_DUAL_QUANTIZE(KernelPath path) {
  LCE_TFLM_BY_PATH(lce_ops_tflm::Dual);
}

}  // namespace tflm
}  // namespace compute_engine
