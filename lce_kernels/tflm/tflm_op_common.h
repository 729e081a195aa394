// Helpers of the project's TensorFlow Lite Micro glue (lce_kernels/tflm/): tensor access
// through MicroContext (temporary TfLiteTensors in Prepare, released by a scope guard), the
// node described for the shared Prepare checks (core/op_validate.h), op data in the arena,
// error reports prefixed with the op's name.
//
// TFLM differs from TFLite where the glue is concerned (TFLM at 90b983c,
// TF_LITE_STATIC_MEMORY): kernels see tensors only through MicroContext in Prepare
// (AllocateTempInputTensor / AllocateTempOutputTensor, which must be deallocated) and
// ::tflite::micro::GetEvalInput / GetEvalOutput in Eval; there is no ResizeTensor (every
// output shape must already be in the model); constant tensors point into the flatbuffer
// (allocation_type kTfLiteMmapRo); op data lives in the arena (AllocatePersistentBuffer) and
// TFLM calls the registration's free() when the interpreter is destroyed.
#ifndef LCE_KERNELS_TFLM_TFLM_OP_COMMON_H_
#define LCE_KERNELS_TFLM_TFLM_OP_COMMON_H_

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>

#include "../core/op_validate.h"
#include "../tflite/validate_glue.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace compute_engine {
namespace tflm {
namespace common {

// Report `cond` failing as "<op>: <message>" (MicroPrintf) and return kTfLiteError.
#define LCE_TFLM_ENSURE(op, cond, ...)                   \
  do {                                                   \
    if (!(cond)) {                                       \
      ::compute_engine::tflm::common::Report(op, __VA_ARGS__); \
      return kTfLiteError;                               \
    }                                                    \
  } while (0)

__attribute__((format(printf, 2, 3))) inline void Report(const char* op, const char* fmt, ...) {
  char msg[256];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, args);
  va_end(args);
  MicroPrintf("%s: %s", op, msg);
}

// A fixed-size message kept in op data (Init cannot report: Prepare does).
struct Message {
  char text[192] = {0};
  bool empty() const { return text[0] == 0; }
  void Set(const char* s) {
    std::strncpy(text, s, sizeof text - 1);
    text[sizeof text - 1] = 0;
  }
};

// Placement-constructs T in a persistent arena buffer (nullptr if the arena is full). Its
// destructor must be run by the registration's free().
template <typename T>
T* NewOpData(TfLiteContext* ctx) {
  void* raw = ::tflite::GetMicroContext(ctx)->AllocatePersistentBuffer(sizeof(T));
  return raw == nullptr ? nullptr : new (raw) T;
}

template <typename T>
void DeleteOpData(void* data) {
  if (data != nullptr) static_cast<T*>(data)->~T();
}

// Temporary TfLiteTensors of one Prepare call, released when the scope ends.
class TempTensors {
 public:
  explicit TempTensors(TfLiteContext* ctx) : mc_(::tflite::GetMicroContext(ctx)) {}
  ~TempTensors() {
    for (int i = n_ - 1; i >= 0; --i) mc_->DeallocateTempTfLiteTensor(held_[i]);
  }
  TempTensors(const TempTensors&) = delete;
  TempTensors& operator=(const TempTensors&) = delete;

  // Input i of the node (nullptr if absent: index -1 or out of range).
  TfLiteTensor* Input(const TfLiteNode* node, int i) {
    if (node->inputs == nullptr || i < 0 || i >= node->inputs->size) return nullptr;
    return Hold(mc_->AllocateTempInputTensor(node, i));
  }
  TfLiteTensor* Output(const TfLiteNode* node, int i) {
    if (node->outputs == nullptr || i < 0 || i >= node->outputs->size) return nullptr;
    return Hold(mc_->AllocateTempOutputTensor(node, i));
  }

 private:
  TfLiteTensor* Hold(TfLiteTensor* t) {
    if (t != nullptr && n_ < kMax) held_[n_++] = t;
    return t;
  }
  static constexpr int kMax = 16;
  ::tflite::MicroContext* mc_;
  TfLiteTensor* held_[kMax] = {};
  int n_ = 0;
};

inline bool IsConst(const TfLiteTensor* t) { return t->allocation_type == kTfLiteMmapRo; }

using ::compute_engine::tflite::validate_glue::Rank;

// Shape / size helpers of the firmware's own kernels (firmware_sim/firmware/xnn_kernels.cc).
// Element count of a shape with every dimension >= 0 (false on a negative dimension or
// overflow past 2^31).
inline bool NumElements(const TfLiteIntArray* dims, std::size_t* n) {
  if (dims == nullptr) return false;
  std::size_t e = 1;
  for (int i = 0; i < dims->size; ++i) {
    if (dims->data[i] < 0) return false;
    e *= static_cast<std::size_t>(dims->data[i]);
    if (e > (std::size_t{1} << 31)) return false;
  }
  *n = e;
  return true;
}

// The tensor holds exactly `elements` values of `elem_size` bytes, and has data.
inline bool HasBytes(const TfLiteTensor* t, std::size_t elements, std::size_t elem_size) {
  return t->bytes == elements * elem_size;
}

inline bool SameDims(const TfLiteIntArray* a, const int* b, int rank) {
  if (a == nullptr || a->size != rank) return false;
  for (int i = 0; i < rank; ++i) {
    if (a->data[i] != b[i]) return false;
  }
  return true;
}

// "[d0, d1, ...]" into buf.
inline const char* ShapeString(const TfLiteIntArray* dims, char* buf, std::size_t size) {
  if (dims == nullptr) {
    std::snprintf(buf, size, "(none)");
    return buf;
  }
  std::size_t off = 0;
  off += static_cast<std::size_t>(std::snprintf(buf, size, "["));
  for (int i = 0; i < dims->size && off < size; ++i) {
    off += static_cast<std::size_t>(
        std::snprintf(buf + off, size - off, i ? ", %d" : "%d", dims->data[i]));
  }
  if (off < size) std::snprintf(buf + off, size - off, "]");
  return buf;
}

inline const char* TypeName(TfLiteType t) {
  switch (t) {
    case kTfLiteFloat32: return "float32";
    case kTfLiteInt32: return "int32";
    case kTfLiteInt8: return "int8";
    case kTfLiteUInt8: return "uint8";
    case kTfLiteBool: return "bool";
    case kTfLiteInt16: return "int16";
    case kTfLiteInt64: return "int64";
    default: return "other";
  }
}

// The node as the shared Prepare checks see it (core/op_validate.h): counts, and per tensor
// validate_glue.h's description with TFLM's constness (kTfLiteMmapRo: constants point into the
// flatbuffer). The views stay valid while `tt` holds the tensors.
namespace ov = ::compute_engine::core::op_validate;

inline ov::Tensor Describe(const TfLiteTensor* t) {
  return ::compute_engine::tflite::validate_glue::Describe(t, IsConst);
}

inline void DescribeNode(const TfLiteNode* node, TempTensors* tt, ov::Node* n) {
  n->num_inputs = node->inputs == nullptr ? -1 : node->inputs->size;
  n->num_outputs = node->outputs == nullptr ? -1 : node->outputs->size;
  for (int i = 0; i < n->num_inputs && i < ov::kMaxInputs; ++i) {
    n->inputs[i] = Describe(tt->Input(node, i));
  }
  for (int i = 0; i < n->num_outputs && i < ov::kMaxOutputs; ++i) {
    n->outputs[i] = Describe(tt->Output(node, i));
  }
  n->output = n->num_outputs >= 1 ? n->outputs[0] : Describe(tt->Output(node, 0));
}

// The two byte ranges overlap.
inline bool Overlap(const void* a, std::size_t na, const void* b, std::size_t nb) {
  const auto pa = reinterpret_cast<std::uintptr_t>(a), pb = reinterpret_cast<std::uintptr_t>(b);
  return pa < pb + nb && pb < pa + na;
}

}  // namespace common
}  // namespace tflm
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLM_TFLM_OP_COMMON_H_
