// TensorFlow Lite Micro glue of ops::BDFSMN (the bitwise DFSMN op), one binary DFSMN layer around
// lce_kernels/core/bdfsmn.h. Inputs, shapes and options as the TFLite glue
// (tflite/bdfsmn_op.cc, core/op_contract.h):
//   kX float32 [T, C] | [B, T, C] | [B, T, 1, C]; the eight parameter tensors constant, of
//   the shapes op_contract.h gives; output float32, the shape of x (held by the model).
// Options: a FlexBuffers map of the five ints ops::bdfsmn::kOptionKeys, parsed by
// tflite/bdfsmn_options.h (bounded length, flexbuffers::VerifyBuffer, then typed reads).
//
// Init: op data in the arena, options parsed (problems kept for Prepare). Prepare: every
// tensor checked (count, type, rank, shape, bytes, constness), the core layer built from the
// constant tensors (core::Layer::Init copies and repacks them: heap) and its workspace sized
// (core::Layer::Prepare: heap). Eval: the core once per batch element; allocates nothing.
#include <cstdint>

#include "../core/bdfsmn.h"
#include "../core/op_contract.h"
#include "../tflite/bdfsmn_options.h"
#include "lce_tflm_ops.h"
#include "tflm_op_common.h"

namespace compute_engine {
namespace tflm {
namespace bdfsmn_tflm {

namespace core = ::compute_engine::core::bdfsmn;
namespace ops = ::compute_engine::ops;
namespace cm = ::compute_engine::tflm::common;
using namespace ::compute_engine::ops::bdfsmn;  // NOLINT: Input, MemRow, ThreshRow, PwRow

struct OpData {
  bool options_ok = false;
  cm::Message init_error;
  ::compute_engine::tflite::bdfsmn_options::Options o;
  core::Layer layer;
  core::Workspace ws;
  KernelPath path = KernelPath::kAuto;
  int batch = 0, frames = 0;
  bool prepared = false;
};

#define BD_ENSURE(cond, ...) LCE_TFLM_ENSURE(ops::BDFSMN, cond, __VA_ARGS__)

template <KernelPath kPath>
void* Init(TfLiteContext* ctx, const char* buffer, size_t length) {
  OpData* d = cm::NewOpData<OpData>(ctx);
  if (d == nullptr) return nullptr;
  d->path = ::compute_engine::core::ResolveKernelPath(kPath);
  std::string err;
  if (::compute_engine::tflite::bdfsmn_options::Parse(
          reinterpret_cast<const std::uint8_t*>(buffer), length, &d->o, &err)) {
    d->options_ok = true;
  } else {
    d->init_error.Set(("cannot parse custom_options: " + err).c_str());
  }
  return d;
}

void Free(TfLiteContext* /*ctx*/, void* data) { cm::DeleteOpData<OpData>(data); }

TfLiteStatus CheckParam(const TfLiteTensor* t, const char* name, TfLiteType type, int d0,
                        int d1) {
  BD_ENSURE(t != nullptr, "input %s missing", name);
  BD_ENSURE(t->type == type, "%s has type %s, expected %s", name, cm::TypeName(t->type),
            cm::TypeName(type));
  BD_ENSURE(cm::Rank(t) == 2, "%s must be 2-D", name);
  BD_ENSURE(t->dims->data[0] == d0 && t->dims->data[1] == d1,
            "%s has shape [%d, %d], expected [%d, %d]", name, t->dims->data[0],
            t->dims->data[1], d0, d1);
  BD_ENSURE(cm::HasBytes(t, static_cast<std::size_t>(d0) * static_cast<std::size_t>(d1), 4u),
            "%s has %zu bytes, expected %zu", name, t->bytes,
            static_cast<std::size_t>(d0) * static_cast<std::size_t>(d1) * 4u);
  BD_ENSURE(t->data.data != nullptr, "%s has no data", name);
  BD_ENSURE(cm::IsConst(t), "%s must be a constant tensor", name);
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<OpData*>(node->user_data);
  BD_ENSURE(d != nullptr, "no op data (arena full in Init)");
  d->prepared = false;
  BD_ENSURE(d->options_ok, "%s", d->init_error.text);
  const int C = d->o.channels, H = d->o.hidden;
  BD_ENSURE(C >= 1 && C <= core::kMaxChannels && H >= 1 && H <= core::kMaxChannels,
            "channels/hidden out of range (%d, %d)", C, H);
  BD_ENSURE(d->o.left >= 0 && d->o.right >= 0 && d->o.left + d->o.right + 1 <= core::kMaxTaps,
            "left/right out of range (%d, %d)", d->o.left, d->o.right);
  BD_ENSURE(d->o.dilation >= 1 && d->o.dilation <= (1 << 16), "dilation out of range (%d)",
            d->o.dilation);
  BD_ENSURE(node->inputs != nullptr && node->inputs->size == kNumInputs,
            "expected %d inputs, got %d", static_cast<int>(kNumInputs),
            node->inputs ? node->inputs->size : -1);
  BD_ENSURE(node->outputs != nullptr && node->outputs->size == kNumOutputs,
            "expected %d output", kNumOutputs);

  cm::TempTensors tt(ctx);
  const TfLiteTensor* x = tt.Input(node, kX);
  BD_ENSURE(x != nullptr, "input x missing");
  BD_ENSURE(x->type == kTfLiteFloat32, "x must be float32, is %s", cm::TypeName(x->type));
  const int rank = cm::Rank(x);
  BD_ENSURE(rank >= 2 && rank <= 4, "x must have rank 2, 3 or 4, has %d", rank);
  const int* xd = x->dims->data;
  int batch = 1, frames = 0;
  if (rank == 2) {
    frames = xd[0];
  } else {
    batch = xd[0];
    frames = xd[1];
    BD_ENSURE(rank == 3 || xd[2] == 1, "x of rank 4 must be [B, T, 1, C]");
  }
  BD_ENSURE(xd[rank - 1] == C, "x has %d channels, options say %d", xd[rank - 1], C);
  BD_ENSURE(batch >= 1 && frames >= 1 && frames <= (1 << 20), "bad batch/frames (%d, %d)",
            batch, frames);
  BD_ENSURE(cm::HasBytes(x, static_cast<std::size_t>(batch) * frames * C, 4u),
            "x has %zu bytes, its shape needs %zu", x->bytes,
            static_cast<std::size_t>(batch) * frames * C * 4u);

  const int K = d->o.left + d->o.right + 1, wc = core::PackedWords32(C),
            wh = core::PackedWords32(H);
  const TfLiteTensor* t[kNumInputs] = {};
  t[kX] = x;
  for (int i = 1; i < kNumInputs; ++i) t[i] = tt.Input(node, i);
  struct Param {
    Input i;
    TfLiteType type;
    int d0, d1;
  };
  const Param params[] = {
      {kMemW, kTfLiteInt32, K, wc},            {kMemP, kTfLiteFloat32, kMemRows, C},
      {kPw1W, kTfLiteInt32, H, wc},            {kPw1T, kTfLiteFloat32, kThreshRows, C},
      {kPw1P, kTfLiteFloat32, kPwRows, H},     {kPw2W, kTfLiteInt32, C, wh},
      {kPw2T, kTfLiteFloat32, kThreshRows, H}, {kPw2P, kTfLiteFloat32, kPwRows, C}};
  static_assert(sizeof(params) / sizeof(params[0]) == kNumInputs - 1, "every parameter input");
  for (const Param& p : params) {
    if (CheckParam(t[p.i], kInputNames[p.i], p.type, p.d0, p.d1) != kTfLiteOk) {
      return kTfLiteError;
    }
  }

  const TfLiteTensor* out = tt.Output(node, 0);
  BD_ENSURE(out != nullptr, "output missing");
  BD_ENSURE(out->type == kTfLiteFloat32, "output must be float32, is %s",
            cm::TypeName(out->type));
  char a[64], b[64];
  BD_ENSURE(cm::SameDims(out->dims, xd, rank), "output shape %s differs from x's %s",
            cm::ShapeString(out->dims, a, sizeof a), cm::ShapeString(x->dims, b, sizeof b));

  auto f = [&](int i) { return static_cast<const float*>(t[i]->data.data); };
  auto w = [&](int i) { return static_cast<const std::uint32_t*>(t[i]->data.data); };
  auto row = [&](int i, int r, int n) { return f(i) + static_cast<std::size_t>(r) * n; };
  core::LayerSpec s;
  s.channels = C;
  s.hidden = H;
  s.left = d->o.left;
  s.right = d->o.right;
  s.dilation = d->o.dilation;
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
  BD_ENSURE(d->layer.Init(s, &err), "invalid parameters: %s", err.c_str());
  d->layer.Prepare(frames, &d->ws);
  d->batch = batch;
  d->frames = frames;
  d->prepared = true;
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<OpData*>(node->user_data);
  BD_ENSURE(d != nullptr && d->prepared, "Eval before a successful Prepare");
  const TfLiteEvalTensor* x = ::tflite::micro::GetEvalInput(ctx, node, kX);
  TfLiteEvalTensor* out = ::tflite::micro::GetEvalOutput(ctx, node, 0);
  BD_ENSURE(x != nullptr && out != nullptr && x->data.data != nullptr &&
                out->data.data != nullptr,
            "unallocated tensors");
  const std::size_t per = static_cast<std::size_t>(d->frames) * d->o.channels;
  const std::size_t bytes = per * d->batch * sizeof(float);
  BD_ENSURE(!cm::Overlap(x->data.data, bytes, out->data.data, bytes),
            "input and output share memory (the kernel needs separate buffers)");
  const float* xp = ::tflite::micro::GetTensorData<float>(x);
  float* op = ::tflite::micro::GetTensorData<float>(out);
  for (int b = 0; b < d->batch; ++b) {
    BD_ENSURE(d->layer.Eval(xp + b * per, d->frames, op + b * per, &d->ws, d->path),
              "kernel rejected the call");
  }
  return kTfLiteOk;
}

template <KernelPath kPath>
TFLMRegistration Registration() {
  return ::tflite::micro::RegisterOp(Init<kPath>, Prepare, Eval, Free);
}

}  // namespace bdfsmn_tflm

TFLMRegistration Register_BDFSMN(KernelPath path) {
  switch (path) {
    case KernelPath::kPortable: return bdfsmn_tflm::Registration<KernelPath::kPortable>();
    case KernelPath::kNeon: return bdfsmn_tflm::Registration<KernelPath::kNeon>();
    case KernelPath::kAvx512: return bdfsmn_tflm::Registration<KernelPath::kAvx512>();
    case KernelPath::kAuto: break;
  }
  return bdfsmn_tflm::Registration<KernelPath::kAuto>();
}

}  // namespace tflm
}  // namespace compute_engine
