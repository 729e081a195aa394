// TFLite glue of the LCE-compatible ops ops::QUANTIZE, ops::DEQUANTIZE and ops::BCONV2D
// (names, input order and option keys: core/op_contract.h; kernels in core/bitpack.h and
// core/bconv2d.h; semantics and what is supported: README.md, "LCE-compatible ops"), and of
// the project's ops::DUAL_QUANTIZE (kernel: core/dual_quantize.h).
// Registered through lce_ops_register.h, one registration per kernel path.
//
// Init never fails hard (it cannot report errors): it parses the options and remembers any
// problem; Prepare validates every tensor (count, type, rank, shape, byte size, constness)
// and option, names any configuration this library does not support and builds the kernel
// (repacked filter, fused output transform), all with core/op_validate.h (the same checks
// and messages as the TFLM glue), and sizes the output; Eval only computes.
//
//   QUANTIZE    in: float32 | int8 | bool [..., n]          out: int32 [..., ceil(n/32)]
//   DEQUANTIZE  in: int32 [..., ceil(n/32)]                 out: float32 | int8 | bool [..., n]
//   BCONV2D     in: kInput int32 [B, H, W, ceil(Cin/32)]  kFilter int32 [Cout, Fh, Fw,
//               ceil(Cin/32)] (constant)  kPostActivationMultiplier float32 [Cout]
//               kPostActivationBias float32 [Cout] (constant; float output)
//               kThreshold int32 [Cout] (constant; bit-packed output)
//               out: float32 [B, OH, OW, Cout] | int32 [B, OH, OW, ceil(Cout/32)]
//   DUAL_QUANTIZE  in: kX float32 [B, ..., C] (rank 2..4)  kThresholds float32 [2, C]
//               (constant)  out: kB1, kB2 int32 [B, ..., ceil(C/32)]  kScale float32 (its
//               shape, from the model, says which axes are averaged); no options
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "../core/bconv2d.h"
#include "../core/bitpack.h"
#include "../core/dual_quantize.h"
#include "../core/op_validate.h"
#include "bconv2d_options.h"
#include "op_common.h"

namespace compute_engine {
namespace tflite {
namespace lce_ops {

namespace oc = ::compute_engine::tflite::op_common;
namespace ov = ::compute_engine::core::op_validate;
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

// Op data and Init's problems; every other check is core/op_validate.h's (shared with the
// TFLM glue).
#define LCE_PACK_PREPARE(ctx, node, name, d)                                        \
  auto* d = static_cast<PackOpData*>((node)->user_data);                          \
  LCE_OP_ENSURE(ctx, name, d != nullptr, "no op data (out of memory in Init)");   \
  LCE_OP_ENSURE(ctx, name, d->init_error.empty(), "%s", d->init_error.c_str());   \
  ov::Node n;                                                                     \
  oc::DescribeNode(ctx, node, &n);                                                \
  ov::PackPlan plan;                                                              \
  std::string err

TfLiteStatus QuantizePrepare(TfLiteContext* ctx, TfLiteNode* node) {
  LCE_PACK_PREPARE(ctx, node, ops::QUANTIZE, d);
  LCE_OP_ENSURE(ctx, ops::QUANTIZE,
                ov::ValidateQuantize(n, ov::OutputShape::kResize, &plan, &err), "%s",
                err.c_str());
  d->zero_point = plan.zero_point;
  d->n = plan.n;
  d->rows = plan.rows;
  return oc::ResizeIfNeeded(ctx, oc::Output(ctx, node, 0), plan.out_dims, plan.rank);
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
  LCE_PACK_PREPARE(ctx, node, ops::DEQUANTIZE, d);
  LCE_OP_ENSURE(ctx, ops::DEQUANTIZE,
                ov::ValidateDequantize(n, ov::OutputShape::kResize, &plan, &err), "%s",
                err.c_str());
  d->zero_value = plan.zero_value;
  d->one_value = plan.one_value;
  d->n = plan.n;
  d->rows = plan.rows;
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
using ops::bconv2d::kInput;

struct BconvOpData {
  KernelPath path = KernelPath::kAuto;
  std::string init_error;
  ov::Bconv2dOptions options;
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
    return d;
  }
  return d;
}

void BconvFree(TfLiteContext* /*ctx*/, void* data) { delete static_cast<BconvOpData*>(data); }

#define BC_ENSURE(ctx, cond, ...) LCE_OP_ENSURE(ctx, ops::BCONV2D, cond, __VA_ARGS__)

// Every check (and building the kernel) is core/op_validate.h's, shared with the TFLM glue;
// then the output is resized to the convolution's shape.
TfLiteStatus BconvPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<BconvOpData*>(node->user_data);
  BC_ENSURE(ctx, d != nullptr, "no op data (out of memory in Init)");
  d->prepared = false;
  BC_ENSURE(ctx, d->init_error.empty(), "%s", d->init_error.c_str());
  ov::Node n;
  oc::DescribeNode(ctx, node, &n);
  ov::Bconv2dPlan plan;
  std::string err;
  BC_ENSURE(ctx, ov::ValidateBconv2d(d->options, n, ov::OutputShape::kResize, &d->conv, &plan,
                                     &err),
            "%s", err.c_str());
  if (oc::ResizeIfNeeded(ctx, oc::Output(ctx, node, 0), plan.out_dims, 4) != kTfLiteOk) {
    return kTfLiteError;
  }
  d->batch = plan.batch;
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

// -------------------------------------------------------------------------- DUAL_QUANTIZE
namespace dqc = ::compute_engine::ops::dual_quantize;
namespace dq = ::compute_engine::core::dual_quantize;

struct DualOpData {
  KernelPath path = KernelPath::kAuto;
  std::string init_error;
  ov::DualQuantizePlan plan;
  bool prepared = false;
};

template <KernelPath kPath>
void* DualInit(TfLiteContext* /*ctx*/, const char* /*buffer*/, std::size_t length) {
  auto* d = new (std::nothrow) DualOpData;
  if (d == nullptr) return nullptr;
  if (!oc::EffectivePath(kPath, &d->path, &d->init_error)) return d;
  if (length != 0) d->init_error = "takes no options (custom_options must be empty)";
  return d;
}

void DualFree(TfLiteContext* /*ctx*/, void* data) { delete static_cast<DualOpData*>(data); }

#define DQ_ENSURE(ctx, cond, ...) LCE_OP_ENSURE(ctx, ops::DUAL_QUANTIZE, cond, __VA_ARGS__)

// Every check is core/op_validate.h's, shared with the TFLM glue; then b1 / b2 are resized
// to x's shape with the packed last dimension, s to its own (the model's) shape.
TfLiteStatus DualPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<DualOpData*>(node->user_data);
  DQ_ENSURE(ctx, d != nullptr, "no op data (out of memory in Init)");
  d->prepared = false;
  DQ_ENSURE(ctx, d->init_error.empty(), "%s", d->init_error.c_str());
  ov::Node n;
  oc::DescribeNode(ctx, node, &n);
  std::string err;
  DQ_ENSURE(ctx, ov::ValidateDualQuantize(n, ov::OutputShape::kResize, &d->plan, &err), "%s",
            err.c_str());
  const int rank = d->plan.rank;
  for (int o = dqc::kB1; o <= dqc::kB2; ++o) {
    if (oc::ResizeIfNeeded(ctx, oc::Output(ctx, node, o), d->plan.bits_dims, rank) !=
        kTfLiteOk) {
      return kTfLiteError;
    }
  }
  if (oc::ResizeIfNeeded(ctx, oc::Output(ctx, node, dqc::kScale), d->plan.scale_dims, rank) !=
      kTfLiteOk) {
    return kTfLiteError;
  }
  d->prepared = true;
  return kTfLiteOk;
}

TfLiteStatus DualEval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<DualOpData*>(node->user_data);
  DQ_ENSURE(ctx, d != nullptr && d->prepared, "Eval before a successful Prepare");
  const TfLiteTensor* x = oc::Input(ctx, node, dqc::kX);
  TfLiteTensor* b1 = oc::Output(ctx, node, dqc::kB1);
  TfLiteTensor* b2 = oc::Output(ctx, node, dqc::kB2);
  TfLiteTensor* s = oc::Output(ctx, node, dqc::kScale);
  DQ_ENSURE(ctx, x != nullptr && b1 != nullptr && b2 != nullptr && s != nullptr &&
                     x->data.data != nullptr && b1->data.data != nullptr &&
                     b2->data.data != nullptr && s->data.data != nullptr,
            "unallocated tensors");
  const dq::Geometry& g = d->plan.geometry;
  const std::size_t bits =
      dq::Positions(g) * static_cast<std::size_t>(bp::PackedWords(g.channels())) * 4u;
  DQ_ENSURE(ctx, b1->bytes >= bits && b2->bytes >= bits &&
                     s->bytes >= dq::ScaleElements(g) * 4u,
            "outputs smaller than their shapes");
  const float* t = d->plan.thresholds;
  dq::DualQuantize(x->data.f, g, t, t + g.channels(), b1->data.i32, b2->data.i32, s->data.f,
                   d->path);
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

template <KernelPath kPath>
TfLiteRegistration* DualRegistration() {
  static TfLiteRegistration r =
      MakeRegistration(DualInit<kPath>, DualFree, DualPrepare, DualEval);
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

TfLiteRegistration* Register_LCE_DUAL_QUANTIZE(KernelPath path) {
  LCE_OPS_BY_PATH(lce_ops::DualRegistration, path);
}

}  // namespace tflite
}  // namespace compute_engine
