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
// Bit words: LCE's bitpacked int32 layout (LSB first, bit = 1 <=> -1; pad bits ignored).
// custom_options: a FlexBuffers map with int entries ops::bdfsmn::kOptionKeys (all required;
// verified and parsed with flexbuffers.h, see bdfsmn_options.h).
//
// Init parses the options (never fails hard: errors are reported from Prepare). It never
// trusts the length it is handed: the buffer is bounded and flexbuffers::VerifyBuffer'ed
// before any value is read (a model verified by model_verify.h also guarantees that the
// options lie inside the file). Prepare validates every tensor (count, type, rank, shape,
// byte size, constness) and every option, builds the kernel layer (repacked weights), and
// returns kTfLiteError with a message on any mismatch; Eval runs the core once per batch
// element.
//
// Kernel path: the one the op was registered with (lce_ops_register.h: Register_BDFSMN(path),
// RegisterLceOps(resolver, path)); with kAuto the deprecated LCE_BDFSMN_PATH still overrides
// it (op_common.h). TFLite headers: tflite_c.h (real ones when available, else tflite_abi.h).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "../core/bdfsmn.h"
#include "bdfsmn_options.h"
#include "lce_ops_register.h"  // TFLite ABI (real headers or tflite_abi.h) + declarations
#include "op_common.h"

namespace compute_engine {
namespace tflite {
namespace bdfsmn_op {

namespace core = compute_engine::core::bdfsmn;
namespace ops = compute_engine::ops;
using namespace ::compute_engine::ops::bdfsmn;  // NOLINT: Input, MemRow, ThreshRow, PwRow

struct OpData {
  int channels = 0, hidden = 0, left = 0, right = 0, dilation = 0;
  std::string options_error;  // non-empty: options invalid
  core::Layer layer;
  core::Workspace ws;
  core::Path path = core::Path::kAuto;
  int batch = 0, frames = 0;
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
  bdfsmn_options::Options o;
  if (!bdfsmn_options::Parse(reinterpret_cast<const std::uint8_t*>(buffer), length, &o,
                             &err)) {
    d->options_error = "cannot parse custom_options: " + err;
    return d;
  }
  d->channels = o.channels;
  d->hidden = o.hidden;
  d->left = o.left;
  d->right = o.right;
  d->dilation = o.dilation;
  return d;
}

void Free(TfLiteContext* /*context*/, void* buffer) { delete static_cast<OpData*>(buffer); }

using op_common::IsConst;

// Checks type, exact 2-D shape, byte size, data and constness of a parameter tensor.
TfLiteStatus CheckParam(TfLiteContext* ctx, const TfLiteTensor* t, const char* name,
                        TfLiteType type, int d0, int d1) {
  BD_ENSURE(ctx, t != nullptr, "input %s missing", name);
  BD_ENSURE(ctx, t->type == type, "%s has type %d, expected %d", name, static_cast<int>(t->type),
            static_cast<int>(type));
  BD_ENSURE(ctx, t->dims != nullptr && t->dims->size == 2, "%s must be 2-D", name);
  BD_ENSURE(ctx, t->dims->data[0] == d0 && t->dims->data[1] == d1,
            "%s has shape [%d, %d], expected [%d, %d]", name, t->dims->data[0],
            t->dims->data[1], d0, d1);
  BD_ENSURE(ctx, t->bytes == static_cast<size_t>(d0) * static_cast<size_t>(d1) * 4u,
            "%s has %zu bytes, expected %d", name, t->bytes, d0 * d1 * 4);
  BD_ENSURE(ctx, t->data.data != nullptr, "%s has no data", name);
  BD_ENSURE(ctx, IsConst(t), "%s must be a constant tensor", name);
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<OpData*>(node->user_data);
  BD_ENSURE(ctx, d != nullptr, "no op data (out of memory in Init)");
  BD_ENSURE(ctx, d->options_error.empty(), "%s", d->options_error.c_str());
  const int C = d->channels, H = d->hidden;
  BD_ENSURE(ctx, C >= 1 && C <= core::kMaxChannels && H >= 1 && H <= core::kMaxChannels,
            "channels/hidden out of range (%d, %d)", C, H);
  BD_ENSURE(ctx, d->left >= 0 && d->right >= 0 && d->left + d->right + 1 <= core::kMaxTaps,
            "left/right out of range (%d, %d)", d->left, d->right);
  BD_ENSURE(ctx, d->dilation >= 1 && d->dilation <= (1 << 16), "dilation out of range (%d)",
            d->dilation);
  BD_ENSURE(ctx, node->inputs != nullptr && node->inputs->size == kNumInputs,
            "expected %d inputs, got %d", kNumInputs, node->inputs ? node->inputs->size : -1);
  BD_ENSURE(ctx, node->outputs != nullptr && node->outputs->size == kNumOutputs,
            "expected %d output", kNumOutputs);

  const TfLiteTensor* x = op_common::Input(ctx, node, kX);
  BD_ENSURE(ctx, x != nullptr, "input x missing");
  BD_ENSURE(ctx, x->type == kTfLiteFloat32, "x must be float32");
  BD_ENSURE(ctx, x->dims != nullptr && x->dims->size >= 2 && x->dims->size <= 4,
            "x must have rank 2, 3 or 4");
  const int rank = x->dims->size;
  const int* xd = x->dims->data;
  int batch = 1, frames = 0;
  if (rank == 2) {
    frames = xd[0];
  } else if (rank == 3) {
    batch = xd[0];
    frames = xd[1];
  } else {
    batch = xd[0];
    frames = xd[1];
    BD_ENSURE(ctx, xd[2] == 1, "x of rank 4 must be [B, T, 1, C]");
  }
  BD_ENSURE(ctx, xd[rank - 1] == C, "x has %d channels, options say %d", xd[rank - 1], C);
  BD_ENSURE(ctx, batch >= 1 && frames >= 1 && frames <= (1 << 20), "bad batch/frames");
  BD_ENSURE(ctx, x->bytes == static_cast<size_t>(batch) * frames * C * 4u, "x byte size");

  const int K = d->left + d->right + 1, wc = core::PackedWords32(C),
            wh = core::PackedWords32(H);
  const TfLiteTensor* t[kNumInputs];
  for (int i = 0; i < kNumInputs; ++i) t[i] = op_common::Input(ctx, node, i);
  struct Param {
    ops::bdfsmn::Input i;
    TfLiteType type;
    int d0, d1;
  };
  const Param params[] = {
      {kMemW, kTfLiteInt32, K, wc},           {kMemP, kTfLiteFloat32, kMemRows, C},
      {kPw1W, kTfLiteInt32, H, wc},           {kPw1T, kTfLiteFloat32, kThreshRows, C},
      {kPw1P, kTfLiteFloat32, kPwRows, H},    {kPw2W, kTfLiteInt32, C, wh},
      {kPw2T, kTfLiteFloat32, kThreshRows, H}, {kPw2P, kTfLiteFloat32, kPwRows, C}};
  static_assert(sizeof(params) / sizeof(params[0]) == kNumInputs - 1, "every parameter input");
  for (const Param& p : params) {
    if (CheckParam(ctx, t[p.i], kInputNames[p.i], p.type, p.d0, p.d1) != kTfLiteOk) {
      return kTfLiteError;
    }
  }

  const int out_idx = node->outputs->data[0];
  BD_ENSURE(ctx, out_idx >= 0 && static_cast<size_t>(out_idx) < ctx->tensors_size,
            "bad output index");
  TfLiteTensor* out = &ctx->tensors[out_idx];
  BD_ENSURE(ctx, out->type == kTfLiteFloat32, "output must be float32");
  bool same = out->dims != nullptr && out->dims->size == rank;
  for (int i = 0; same && i < rank; ++i) same = out->dims->data[i] == xd[i];
  if (!same) {
    // ResizeTensor takes ownership; TFLite frees it with free() (TfLiteIntArrayFree).
    auto* shape = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (1 + rank)));
    BD_ENSURE(ctx, shape != nullptr, "out of memory");
    shape->size = rank;
    for (int i = 0; i < rank; ++i) shape->data[i] = xd[i];
    if (ctx->ResizeTensor(ctx, out, shape) != kTfLiteOk) return kTfLiteError;
  }

  auto f = [&](int i) { return static_cast<const float*>(t[i]->data.data); };
  auto w = [&](int i) { return static_cast<const std::uint32_t*>(t[i]->data.data); };
  core::LayerSpec s;
  s.channels = C;
  s.hidden = H;
  s.left = d->left;
  s.right = d->right;
  s.dilation = d->dilation;
  // Row r of the [rows, n] float parameter tensor i.
  auto row = [&](int i, int r, int n) { return f(i) + static_cast<std::size_t>(r) * n; };
  s.mem_weights = w(kMemW);
  s.mem_t0 = row(kMemP, kMemT0, C);
  s.mem_t1 = row(kMemP, kMemT1, C);
  s.mem_t2 = row(kMemP, kMemT2, C);
  s.mem_mul = row(kMemP, kMemMul, C);
  s.mem_bias = row(kMemP, kMemBias, C);
  s.mem_slope = row(kMemP, kMemSlope, C);
  s.pw1_weights = w(kPw1W);
  s.pw1_t0 = row(kPw1T, kT0, C);
  s.pw1_t1 = row(kPw1T, kT1, C);
  s.pw1_mul = row(kPw1P, kPwMul, H);
  s.pw1_bias = row(kPw1P, kPwBias, H);
  s.pw1_slope = row(kPw1P, kPwSlope, H);
  s.pw2_weights = w(kPw2W);
  s.pw2_t0 = row(kPw2T, kT0, H);
  s.pw2_t1 = row(kPw2T, kT1, H);
  s.pw2_mul = row(kPw2P, kPwMul, C);
  s.pw2_bias = row(kPw2P, kPwBias, C);
  s.pw2_slope = row(kPw2P, kPwSlope, C);
  std::string err;
  BD_ENSURE(ctx, d->layer.Init(s, &err), "invalid parameters: %s", err.c_str());
  d->layer.Prepare(frames, &d->ws);
  d->ws.keep_h = false;  // nothing reads the intermediate h (core/bdfsmn.h, Workspace)
  d->batch = batch;
  d->frames = frames;
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<OpData*>(node->user_data);
  BD_ENSURE(ctx, d != nullptr && d->frames >= 1, "Eval before a successful Prepare");
  const TfLiteTensor* x = op_common::Input(ctx, node, kX);
  TfLiteTensor* out = &ctx->tensors[node->outputs->data[0]];
  BD_ENSURE(ctx, x != nullptr && x->data.data != nullptr && out->data.data != nullptr,
            "unallocated tensors");
  const size_t per = static_cast<size_t>(d->frames) * static_cast<size_t>(d->channels);
  const float* xp = static_cast<const float*>(x->data.data);
  float* op = static_cast<float*>(out->data.data);
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
