// Helpers shared by the TFLite glue of the project's ops (tflite/lce_ops.cc,
// tflite/bdfsmn_op.cc): the kernel path an op instance runs (the registered one), error reports prefixed with the op's name (LCE_OP_ENSURE), tensor
// access that never trusts an index, constness, the node described for the shared Prepare
// checks (core/op_validate.h), output resizing.
#ifndef LCE_KERNELS_TFLITE_OP_COMMON_H_
#define LCE_KERNELS_TFLITE_OP_COMMON_H_

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../core/op_validate.h"
#include "lce_ops_register.h"
#include "validate_glue.h"

namespace compute_engine {
namespace tflite {
namespace op_common {

// The path an op instance runs: the one it was registered with (never the environment).
// Always true; the signature keeps room for a registration-time check (*error).
inline bool EffectivePath(KernelPath registered, KernelPath* path, std::string* /*error*/) {
  *path = registered;
  return true;
}

// Reports "<op>: <printf(fmt, ...)>" through the context (messages longer than 1 KiB are cut).
__attribute__((format(printf, 3, 4))) inline void ReportOpError(TfLiteContext* ctx,
                                                                const char* op,
                                                                const char* fmt, ...) {
  char msg[1024];
  std::va_list args;
  va_start(args, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, args);
  va_end(args);
  ctx->ReportError(ctx, "%s: %s", op, msg);
}

// Tensor i of the node's inputs / outputs; nullptr if absent (-1) or out of range.
inline const TfLiteTensor* Input(TfLiteContext* ctx, const TfLiteNode* node, int i) {
  if (node->inputs == nullptr || i < 0 || i >= node->inputs->size) return nullptr;
  const int idx = node->inputs->data[i];
  if (idx < 0 || static_cast<std::size_t>(idx) >= ctx->tensors_size) return nullptr;
  return &ctx->tensors[idx];
}

inline TfLiteTensor* Output(TfLiteContext* ctx, const TfLiteNode* node, int i) {
  if (node->outputs == nullptr || i < 0 || i >= node->outputs->size) return nullptr;
  const int idx = node->outputs->data[i];
  if (idx < 0 || static_cast<std::size_t>(idx) >= ctx->tensors_size) return nullptr;
  return &ctx->tensors[idx];
}

inline bool IsConst(const TfLiteTensor* t) {
  return t->allocation_type == kTfLiteMmapRo || t->allocation_type == kTfLitePersistentRo;
}

using validate_glue::Rank;

// Resizes `t` to `dims` (rank <= 8) unless it already has them (kTfLiteError if t is null).
inline TfLiteStatus ResizeIfNeeded(TfLiteContext* ctx, TfLiteTensor* t, const int* dims,
                                   int rank) {
  if (t == nullptr) return kTfLiteError;
  bool same = t->dims != nullptr && t->dims->size == rank;
  for (int i = 0; same && i < rank; ++i) same = t->dims->data[i] == dims[i];
  if (same) return kTfLiteOk;
  // ResizeTensor takes ownership; TFLite frees it with free() (TfLiteIntArrayFree).
  auto* shape = static_cast<TfLiteIntArray*>(
      std::malloc(sizeof(int) * (1 + static_cast<std::size_t>(rank))));
  if (shape == nullptr) return kTfLiteError;
  shape->size = rank;
  for (int i = 0; i < rank; ++i) shape->data[i] = dims[i];
  return ctx->ResizeTensor(ctx, t, shape);
}

// The node as the shared Prepare checks see it (core/op_validate.h): counts, and per tensor
// validate_glue.h's description with TFLite's constness (kTfLiteMmapRo or kTfLitePersistentRo).
namespace ov = ::compute_engine::core::op_validate;

inline ov::Tensor Describe(const TfLiteTensor* t) { return validate_glue::Describe(t, IsConst); }

inline void DescribeNode(TfLiteContext* ctx, const TfLiteNode* node, ov::Node* n) {
  n->num_inputs = node->inputs == nullptr ? -1 : node->inputs->size;
  n->num_outputs = node->outputs == nullptr ? -1 : node->outputs->size;
  for (int i = 0; i < n->num_inputs && i < ov::kMaxInputs; ++i) {
    n->inputs[i] = Describe(Input(ctx, node, i));
  }
  for (int i = 0; i < n->num_outputs && i < ov::kMaxOutputs; ++i) {
    n->outputs[i] = Describe(Output(ctx, node, i));
  }
  n->output = Describe(Output(ctx, node, 0));
}

}  // namespace op_common
}  // namespace tflite
}  // namespace compute_engine

// If `cond` is false: report "<op>: <message>" (printf-style arguments) and fail the call.
#define LCE_OP_ENSURE(ctx, op, cond, ...)                                         \
  do {                                                                            \
    if (!(cond)) {                                                                \
      ::compute_engine::tflite::op_common::ReportOpError((ctx), (op), __VA_ARGS__); \
      return kTfLiteError;                                                        \
    }                                                                             \
  } while (0)

#endif  // LCE_KERNELS_TFLITE_OP_COMMON_H_
