// A TfLiteTensor as the shared Prepare checks (core/op_validate.h) see it, written once for
// both op glues (TFLite: tflite/op_common.h; TensorFlow Lite Micro: tflm/tflm_op_common.h).
// (The options need no mapping: the parsers fill core/op_options.h's structs directly.)
//
// The TFLite C types come from the header each glue compiles against: TFLM's
// tensorflow/lite/c/common.h when TF_LITE_STATIC_MEMORY is set (tflm/, firmware_sim), else
// tflite_c.h (the TFLite tree's, the real or the hand-declared header). Constness is the one
// runtime-specific part (TFLite: kTfLiteMmapRo or kTfLitePersistentRo; TFLM: kTfLiteMmapRo):
// each glue passes its own test.
#ifndef LCE_KERNELS_TFLITE_VALIDATE_GLUE_H_
#define LCE_KERNELS_TFLITE_VALIDATE_GLUE_H_

#if defined(TF_LITE_STATIC_MEMORY)
#include "tensorflow/lite/c/common.h"
#else
#include "tflite_c.h"
#endif

#include "../core/op_validate.h"

namespace compute_engine {
namespace tflite {
namespace validate_glue {

namespace ov = ::compute_engine::core::op_validate;

inline int Rank(const TfLiteTensor* t) { return t->dims == nullptr ? -1 : t->dims->size; }

inline ov::DType ToDType(TfLiteType t) {
  switch (t) {
    case kTfLiteFloat32: return ov::DType::kFloat32;
    case kTfLiteInt32: return ov::DType::kInt32;
    case kTfLiteInt8: return ov::DType::kInt8;
    case kTfLiteUInt8: return ov::DType::kUInt8;
    case kTfLiteBool: return ov::DType::kBool;
    case kTfLiteInt16: return ov::DType::kInt16;
    case kTfLiteInt64: return ov::DType::kInt64;
    case kTfLiteFloat16: return ov::DType::kFloat16;
    default: return ov::DType::kOther;
  }
}

// `t` (nullptr: absent) as the checks see it: presence, type, shape, bytes, data, constness
// (the runtime's `is_const`) and per-tensor quantization. Views into `t`.
inline ov::Tensor Describe(const TfLiteTensor* t, bool (*is_const)(const TfLiteTensor*)) {
  ov::Tensor d;
  if (t == nullptr) return d;
  d.present = true;
  d.type = ToDType(t->type);
  d.rank = Rank(t);
  d.dims = t->dims == nullptr ? nullptr : t->dims->data;
  d.bytes = t->bytes;
  d.data = t->data.data;
  d.is_const = is_const(t);
  d.scale = t->params.scale;
  d.zero_point = t->params.zero_point;
  return d;
}

}  // namespace validate_glue
}  // namespace tflite
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLITE_VALIDATE_GLUE_H_
