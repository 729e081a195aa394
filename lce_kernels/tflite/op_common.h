// Helpers shared by the TFLite glue of the project's ops (tflite/lce_ops.cc,
// tflite/bdfsmn_op.cc): the kernel path an op instance runs (registered path, deprecated
// LCE_BDFSMN_PATH fallback), error reports prefixed with the op's name (LCE_OP_ENSURE), tensor
// access that never trusts an index, constness, element counts without overflow, output
// resizing.
#ifndef LCE_KERNELS_TFLITE_OP_COMMON_H_
#define LCE_KERNELS_TFLITE_OP_COMMON_H_

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "lce_ops_register.h"

namespace compute_engine {
namespace tflite {
namespace op_common {

// The path an op instance runs: the registered one; for kAuto the deprecated environment
// variable LCE_BDFSMN_PATH may still override it (read when the op is created). False (with
// *error) for an unknown value.
inline bool EffectivePath(KernelPath registered, KernelPath* path, std::string* error) {
  *path = registered;
  if (registered != KernelPath::kAuto) return true;
  const char* v = std::getenv("LCE_BDFSMN_PATH");
  if (v == nullptr || *v == '\0') return true;
  if (!::compute_engine::core::ParseKernelPath(v, path)) {
    *error = std::string("LCE_BDFSMN_PATH='") + v + "': expected auto, portable, neon or avx512";
    return false;
  }
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

inline int Rank(const TfLiteTensor* t) { return t->dims == nullptr ? -1 : t->dims->size; }

// Product of the dims (every dim >= 0) if it stays <= 2^31; false otherwise.
inline bool NumElements(const TfLiteTensor* t, std::size_t* n) {
  if (t->dims == nullptr) return false;
  std::size_t p = 1;
  for (int i = 0; i < t->dims->size; ++i) {
    const int d = t->dims->data[i];
    if (d < 0) return false;
    p *= static_cast<std::size_t>(d);
    if (p > (std::size_t{1} << 31)) return false;
  }
  *n = p;
  return true;
}

// True if the tensor's byte size is exactly `elements` values of `elem_size` bytes (arena
// tensors have no data before allocation: check data only for constants).
inline bool HasBytes(const TfLiteTensor* t, std::size_t elements, std::size_t elem_size) {
  return t->bytes == elements * elem_size;
}

// Resizes `t` to `dims` (rank <= 8) unless it already has them.
inline TfLiteStatus ResizeIfNeeded(TfLiteContext* ctx, TfLiteTensor* t, const int* dims,
                                   int rank) {
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

inline const char* TypeName(TfLiteType t) {
  switch (t) {
    case kTfLiteFloat32: return "float32";
    case kTfLiteInt32: return "int32";
    case kTfLiteUInt8: return "uint8";
    case kTfLiteInt64: return "int64";
    case kTfLiteBool: return "bool";
    case kTfLiteInt16: return "int16";
    case kTfLiteInt8: return "int8";
    case kTfLiteFloat16: return "float16";
    default: return "other";
  }
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
