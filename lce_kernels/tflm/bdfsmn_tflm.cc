// TensorFlow Lite Micro glue of ops::BDFSMN (the bitwise DFSMN op), one binary DFSMN layer around
// lce_kernels/core/bdfsmn.h. Inputs, shapes and options as the TFLite glue
// (tflite/bdfsmn_op.cc, core/op_contract.h):
//   kX float32 [T, C] | [B, T, C] | [B, T, 1, C]; the eight parameter tensors constant, of
//   the shapes op_contract.h gives; output float32, the shape of x (held by the model).
//   Streaming form (ops::bdfsmn::kNumStreamingInputs inputs, right == 0): input kState and
//   output kNewState, float32 [.., S, .., C] (S = left * dilation), core::Layer::EvalStream.
// Options: a FlexBuffers map of the five ints ops::bdfsmn::kOptionKeys, parsed by
// tflite/bdfsmn_options.h (bounded length, flexbuffers::VerifyBuffer, then typed reads).
//
// Init: op data in the arena, options parsed (problems kept for Prepare). Prepare: every
// tensor checked (count, type, rank, shape, bytes, constness) by core/op_validate.h (the
// same checks and messages as the TFLite glue), the core layer built from the
// constant tensors (core::Layer::Init copies and repacks them: heap) and its workspace sized
// (core::Layer::Prepare: heap). Eval: the core once per batch element; allocates nothing.
#include <cstdint>

#include "../core/bdfsmn.h"
#include "../core/op_contract.h"
#include "../core/op_validate.h"
#include "../tflite/bdfsmn_options.h"
#include "lce_tflm_ops.h"
#include "tflm_op_common.h"

namespace compute_engine {
namespace tflm {
namespace bdfsmn_tflm {

namespace core = ::compute_engine::core::bdfsmn;
namespace ops = ::compute_engine::ops;
namespace cm = ::compute_engine::tflm::common;
namespace ov = ::compute_engine::core::op_validate;
using ::compute_engine::ops::bdfsmn::kX;

struct OpData {
  bool options_ok = false;
  cm::Message init_error;
  ov::BdfsmnOptions o;
  core::Layer layer;
  core::Workspace ws;
  KernelPath path = KernelPath::kAuto;
  int batch = 0, frames = 0;
  bool streaming = false;
  int state_frames = 0;
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

// Every check (and building the layer) is core/op_validate.h's, shared with the TFLite glue;
// the output shape must already be x's (kFixed: TFLM never resizes).
TfLiteStatus Prepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<OpData*>(node->user_data);
  BD_ENSURE(d != nullptr, "no op data (arena full in Init)");
  d->prepared = false;
  BD_ENSURE(d->options_ok, "%s", d->init_error.text);
  cm::TempTensors tt(ctx);
  ov::Node n;
  cm::DescribeNode(node, &tt, &n);
  ov::BdfsmnPlan plan;
  std::string err;
  BD_ENSURE(ov::ValidateBdfsmn(d->o, n, ov::OutputShape::kFixed, &d->layer, &plan, &err), "%s",
            err.c_str());
  d->layer.Prepare(plan.frames, &d->ws);
  d->batch = plan.batch;
  d->frames = plan.frames;
  d->streaming = plan.streaming;
  d->state_frames = plan.state_frames;
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
  if (d->streaming) {
    const TfLiteEvalTensor* st = ::tflite::micro::GetEvalInput(ctx, node, ops::bdfsmn::kState);
    TfLiteEvalTensor* ns = ::tflite::micro::GetEvalOutput(ctx, node, ops::bdfsmn::kNewState);
    BD_ENSURE(st != nullptr && ns != nullptr && st->data.data != nullptr &&
                  ns->data.data != nullptr,
              "unallocated state tensors");
    const std::size_t sper = static_cast<std::size_t>(d->state_frames) * d->o.channels;
    const std::size_t sbytes = sper * d->batch * sizeof(float);
    BD_ENSURE(!cm::Overlap(st->data.data, sbytes, out->data.data, bytes) &&
                  !cm::Overlap(x->data.data, bytes, ns->data.data, sbytes) &&
                  !cm::Overlap(ns->data.data, sbytes, out->data.data, bytes),
              "state, input and outputs share memory (the kernel needs separate buffers)");
    const float* sp = ::tflite::micro::GetTensorData<float>(st);
    float* nsp = ::tflite::micro::GetTensorData<float>(ns);
    for (int b = 0; b < d->batch; ++b) {
      BD_ENSURE(d->layer.EvalStream(xp + b * per, d->frames, sp + b * sper, op + b * per,
                                    nsp + b * sper, &d->ws, d->path),
                "kernel rejected the call");
    }
    return kTfLiteOk;
  }
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
