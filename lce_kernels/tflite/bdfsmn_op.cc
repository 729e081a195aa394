// TFLite glue of the binary DFSMN op, ops::BDFSMN: one binary DFSMN layer (kernel:
// lce_kernels/core/bdfsmn.h; name, input order, parameter rows and option keys:
// core/op_contract.h, namespace ops::bdfsmn).
//
// Inputs (all but x must be constant tensors of the model; C channels, H hidden, K taps):
//   kX     float32 [T, C], [B, T, C] or [B, T, 1, C] (the model's (B, T, 1, C) layout)
//   kMemW  int32   [K, ceil(C/32)]  memory-block weight signs, K = left + right + 1
//   kMemP  float32 [kMemRows, C]    rows MemRow: t0, t1, t2, mul, bias, slope
//   kPw1W  int32   [H, ceil(C/32)]  pw1 weight signs (one row per output channel)
//   kPw1T  float32 [kThreshRows, C] rows ThreshRow: t0, t1 of the binarization of m
//   kPw1P  float32 [kPwRows, H]     rows PwRow: mul, bias, slope
//   kPw2W  int32   [C, ceil(H/32)]
//   kPw2T  float32 [kThreshRows, H]
//   kPw2P  float32 [kPwRows, C]
// Output 0: float32, same shape as x.
// Streaming form (ops::bdfsmn::kNumStreamingInputs inputs, right == 0): input kState float32
// [S, C] | [B, S, C] | [B, S, 1, C] (S = left * dilation, x's rank; not constant), output
// kNewState of the state's shape; core::Layer::EvalStream per batch element.
// Bit words: LCE's bitpacked int32 layout (LSB first, bit = 1 <=> -1; pad bits ignored).
// custom_options: a FlexBuffers map with int entries ops::bdfsmn::kOptionKeys (all required;
// verified and parsed with flexbuffers.h, see bdfsmn_options.h).
//
// Init parses the options (never fails hard: errors are reported from Prepare). It never
// trusts the length it is handed: the buffer is bounded and flexbuffers::VerifyBuffer'ed
// before any value is read (a model verified by model_verify.h also guarantees that the
// options lie inside the file). Prepare validates every tensor (count, type, rank, shape,
// byte size, constness) and every option with core/op_validate.h (the same checks and
// messages as the TFLM glue), builds the kernel layer (repacked weights), and returns
// kTfLiteError with a message on any mismatch; Eval runs the core once per batch element.
//
// Kernel path: the one the op was registered with (lce_ops_register.h: Register_BDFSMN(path),
// RegisterLceOps(resolver, path)), nothing else. TFLite headers: tflite_c.h (real ones when available, else tflite_abi.h).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "../core/bdfsmn.h"
#include "../core/op_validate.h"
#include "bdfsmn_options.h"
#include "lce_ops_register.h"  // TFLite ABI (real headers or tflite_abi.h) + declarations
#include "op_common.h"

namespace compute_engine {
namespace tflite {
namespace bdfsmn_op {

namespace core = compute_engine::core::bdfsmn;
namespace ops = compute_engine::ops;
namespace ov = ::compute_engine::core::op_validate;
using ::compute_engine::ops::bdfsmn::kX;

struct OpData {
  ov::BdfsmnOptions options;
  std::string options_error;  // non-empty: options invalid
  core::Layer layer;
  core::Workspace ws;
  core::Path path = core::Path::kAuto;
  int batch = 0, frames = 0;
  bool streaming = false;
  int state_frames = 0;
};

#define BD_ENSURE(ctx, cond, ...) LCE_OP_ENSURE(ctx, ops::BDFSMN, cond, __VA_ARGS__)

// kPath: the registered kernel path (one registration per path, see Register_BDFSMN).
template <KernelPath kPath>
void* Init(TfLiteContext* /*context*/, const char* buffer, size_t length) {
  auto* d = new (std::nothrow) OpData;
  if (d == nullptr) return nullptr;
  std::string err;
  if (!op_common::EffectivePath(kPath, &d->path, &err)) {
    d->options_error = err;
    return d;
  }
  if (!bdfsmn_options::Parse(reinterpret_cast<const std::uint8_t*>(buffer), length,
                             &d->options, &err)) {
    d->options_error = "cannot parse custom_options: " + err;
    return d;
  }
  return d;
}

void Free(TfLiteContext* /*context*/, void* buffer) { delete static_cast<OpData*>(buffer); }

// Every check is core/op_validate.h's (shared with the TFLM glue); then the output is resized
// to x's shape and the workspace sized.
TfLiteStatus Prepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<OpData*>(node->user_data);
  BD_ENSURE(ctx, d != nullptr, "no op data (out of memory in Init)");
  d->frames = 0;
  BD_ENSURE(ctx, d->options_error.empty(), "%s", d->options_error.c_str());
  ov::Node n;
  op_common::DescribeNode(ctx, node, &n);
  ov::BdfsmnPlan plan;
  std::string err;
  BD_ENSURE(ctx, ov::ValidateBdfsmn(d->options, n, ov::OutputShape::kResize, &d->layer, &plan,
                                    &err),
            "%s", err.c_str());
  TfLiteTensor* out = op_common::Output(ctx, node, 0);
  if (op_common::ResizeIfNeeded(ctx, out, plan.out_dims, plan.rank) != kTfLiteOk) {
    return kTfLiteError;
  }
  if (plan.streaming) {
    TfLiteTensor* ns = op_common::Output(ctx, node, ops::bdfsmn::kNewState);
    if (op_common::ResizeIfNeeded(ctx, ns, plan.state_dims, plan.rank) != kTfLiteOk) {
      return kTfLiteError;
    }
  }
  d->streaming = plan.streaming;
  d->state_frames = plan.state_frames;
  d->layer.Prepare(plan.frames, &d->ws);
  d->ws.keep_h = false;  // nothing reads the intermediate h (core/bdfsmn.h, Workspace)
  d->batch = plan.batch;
  d->frames = plan.frames;
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<OpData*>(node->user_data);
  BD_ENSURE(ctx, d != nullptr && d->frames >= 1, "Eval before a successful Prepare");
  const TfLiteTensor* x = op_common::Input(ctx, node, kX);
  TfLiteTensor* out = &ctx->tensors[node->outputs->data[0]];
  BD_ENSURE(ctx, x != nullptr && x->data.data != nullptr && out->data.data != nullptr,
            "unallocated tensors");
  const size_t per = static_cast<size_t>(d->frames) * static_cast<size_t>(d->options.channels);
  const float* xp = static_cast<const float*>(x->data.data);
  float* op = static_cast<float*>(out->data.data);
  if (d->streaming) {
    const TfLiteTensor* st = op_common::Input(ctx, node, ops::bdfsmn::kState);
    TfLiteTensor* ns = &ctx->tensors[node->outputs->data[ops::bdfsmn::kNewState]];
    BD_ENSURE(ctx, st != nullptr && st->data.data != nullptr && ns->data.data != nullptr,
              "unallocated state tensors");
    const size_t sper =
        static_cast<size_t>(d->state_frames) * static_cast<size_t>(d->options.channels);
    const float* sp = static_cast<const float*>(st->data.data);
    float* nsp = static_cast<float*>(ns->data.data);
    for (int b = 0; b < d->batch; ++b) {
      BD_ENSURE(ctx,
                d->layer.EvalStream(xp + b * per, d->frames, sp + b * sper, op + b * per,
                                    nsp + b * sper, &d->ws, d->path),
                "kernel rejected the call");
    }
    return kTfLiteOk;
  }
  for (int b = 0; b < d->batch; ++b) {
    BD_ENSURE(ctx, d->layer.Eval(xp + b * per, d->frames, op + b * per, &d->ws, d->path),
              "kernel rejected the call");
  }
  return kTfLiteOk;
}

template <KernelPath kPath>
TfLiteRegistration* Registration() {
  static TfLiteRegistration r = [] {
    TfLiteRegistration reg;
    std::memset(&reg, 0, sizeof reg);
    reg.init = Init<kPath>;
    reg.free = Free;
    reg.prepare = Prepare;
    reg.invoke = Eval;
    reg.version = 1;
    return reg;
  }();
  return &r;
}

}  // namespace bdfsmn_op

TfLiteRegistration* Register_BDFSMN(KernelPath path) {
  switch (path) {
    case KernelPath::kPortable: return bdfsmn_op::Registration<KernelPath::kPortable>();
    case KernelPath::kNeon: return bdfsmn_op::Registration<KernelPath::kNeon>();
    case KernelPath::kAvx512: return bdfsmn_op::Registration<KernelPath::kAvx512>();
    case KernelPath::kAuto: break;
  }
  return bdfsmn_op::Registration<KernelPath::kAuto>();
}

}  // namespace tflite
}  // namespace compute_engine
