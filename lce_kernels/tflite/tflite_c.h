// The TFLite headers the op glue compiles against: one of three variants, chosen by the
// build (never by the sources that include this file).
//
//   LCE_KERNELS_IN_TFLITE_TREE        inside a TFLite / Larq Compute Engine Bazel tree
//     (lce_kernels/BUILD :lce_ops): TFLite's own headers, the ones LCE v0.16.0's
//     lce_ops_register.h includes (tensorflow/lite/c/common.h, tensorflow/lite/op_resolver.h
//     for MutableOpResolver). Runtime and op compiled together: no ABI to pin.
//   LCE_KERNELS_REAL_TFLITE_C_HEADER  the Makefile's default whenever the pinned TFLM tarball
//     is available: the real tensorflow/lite/core/c/common.h (TFLM's copy is TFLite's),
//     compiled WITHOUT TF_LITE_STATIC_MEMORY (TFLite's layouts, not TFLM's), plus the one
//     MutableOpResolver member we call (the tensorflow wheel ships no C++ headers).
//   neither                           the fallback: tflite_abi.h, the same structs declared by
//     hand, plus the same MutableOpResolver declaration.
//
// The two stand-alone variants link against the tensorflow wheel's libtensorflow_cc.so.2
// (TF 2.16.x), so both assert the layouts of that runtime below; tests/test_kernel_build.py
// builds both and compares every size / offset / enum the glue uses
// (lce_kernels/tests/tflite_layout.cc) and the outputs of the committed models.
#ifndef LCE_KERNELS_TFLITE_TFLITE_C_H_
#define LCE_KERNELS_TFLITE_TFLITE_C_H_

#include <cstddef>

#if defined(LCE_KERNELS_IN_TFLITE_TREE)

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/op_resolver.h"
#define LCE_KERNELS_TFLITE_HEADERS "tflite-tree"

#else  // stand-alone op library for the tensorflow 2.16 wheel

#if defined(TF_LITE_STATIC_MEMORY)
#error "TF_LITE_STATIC_MEMORY gives TFLite Micro's struct layouts: the TFLite op glue needs TFLite's (build TFLite Micro glue separately)"
#endif

#if defined(LCE_KERNELS_REAL_TFLITE_C_HEADER)
#include "tensorflow/lite/core/c/common.h"
#define LCE_KERNELS_TFLITE_HEADERS "real"
#else
#include "tflite_abi.h"
#define LCE_KERNELS_TFLITE_HEADERS "abi"
#endif

// Layout of the runtime we link (TF 2.16, LP64: x86-64, aarch64), for whichever declaration
// was included: every offset the glue reads or writes.
static_assert(sizeof(void*) == 8, "LP64 only");
static_assert(offsetof(TfLiteIntArray, data) == 4, "TfLiteIntArray layout");
static_assert(offsetof(TfLiteTensor, type) == 0, "TfLiteTensor layout");
static_assert(offsetof(TfLiteTensor, data) == 8, "TfLiteTensor layout");
static_assert(offsetof(TfLiteTensor, dims) == 16, "TfLiteTensor layout");
static_assert(offsetof(TfLiteTensor, params) == 24, "TfLiteTensor layout");
static_assert(offsetof(TfLiteTensor, allocation_type) == 32, "TfLiteTensor layout");
static_assert(offsetof(TfLiteTensor, bytes) == 40, "TfLiteTensor layout");
static_assert(sizeof(TfLiteTensor) == 112, "TfLiteTensor size (stride of context->tensors)");
static_assert(offsetof(TfLiteNode, inputs) == 0, "TfLiteNode layout");
static_assert(offsetof(TfLiteNode, outputs) == 8, "TfLiteNode layout");
static_assert(offsetof(TfLiteNode, user_data) == 32, "TfLiteNode layout");
static_assert(offsetof(TfLiteNode, custom_initial_data_size) == 56, "TfLiteNode layout");
static_assert(offsetof(TfLiteContext, tensors_size) == 0, "TfLiteContext layout");
static_assert(offsetof(TfLiteContext, tensors) == 16, "TfLiteContext layout");
static_assert(offsetof(TfLiteContext, ResizeTensor) == 32, "TfLiteContext layout");
static_assert(offsetof(TfLiteContext, ReportError) == 40, "TfLiteContext layout");
static_assert(offsetof(TfLiteRegistration, init) == 0, "TfLiteRegistration layout");
static_assert(offsetof(TfLiteRegistration, prepare) == 16, "TfLiteRegistration layout");
static_assert(offsetof(TfLiteRegistration, invoke) == 24, "TfLiteRegistration layout");
static_assert(offsetof(TfLiteRegistration, version) == 56, "TfLiteRegistration layout");
static_assert(sizeof(TfLiteRegistration) == 88, "TfLiteRegistration size (TF 2.16)");
static_assert(kTfLiteFloat32 == 1 && kTfLiteInt32 == 2 && kTfLiteBool == 6 && kTfLiteInt8 == 9,
              "TfLiteType values");
static_assert(kTfLiteMmapRo == 1 && kTfLitePersistentRo == 5, "TfLiteAllocationType values");

namespace tflite {
// Only the one non-virtual member we call; defined in libtensorflow_cc.so.2 (exported as
// tflite::MutableOpResolver::AddCustom(char const*, TfLiteRegistration const*, int)).
class MutableOpResolver {
 public:
  void AddCustom(const char* name, const TfLiteRegistration* registration, int version = 1);
};
}  // namespace tflite

#endif  // LCE_KERNELS_IN_TFLITE_TREE

#endif  // LCE_KERNELS_TFLITE_TFLITE_C_H_
