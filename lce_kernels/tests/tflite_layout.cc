// Prints every size, field offset and enum value of the TFLite C ABI that the op glue
// (tflite/*.cc) uses, one "name value" line each, for the TFLite headers tflite_c.h selected
// at compile time (first line: "headers real" or "headers abi").
//
// The Makefile builds it twice (make layout): build/tflite_layout_real against the real
// tensorflow/lite/core/c/common.h, build/tflite_layout_abi against the hand-declared
// fallback tflite_abi.h; tests/test_kernel_build.py requires both outputs to be equal
// apart from the first line. (tflite_c.h also static_asserts the offsets that matter for
// the pinned TF 2.16 runtime: this program shows the complete list side by side.)
#include <cstddef>
#include <cstdio>

#include "../tflite/tflite_c.h"

#define LCE_SIZE(T) std::printf("sizeof(%s) %zu\n", #T, sizeof(T))
#define LCE_OFFSET(T, f) std::printf("offsetof(%s, %s) %zu\n", #T, #f, offsetof(T, f))
#define LCE_FIELD_SIZE(T, f) \
  std::printf("sizeof(%s::%s) %zu\n", #T, #f, sizeof(static_cast<T*>(nullptr)->f))
#define LCE_ENUM(e) std::printf("%s %d\n", #e, static_cast<int>(e))

int main() {
  std::printf("headers %s\n", LCE_KERNELS_TFLITE_HEADERS);

  LCE_SIZE(TfLiteIntArray);
  LCE_OFFSET(TfLiteIntArray, size);
  LCE_OFFSET(TfLiteIntArray, data);

  LCE_SIZE(TfLitePtrUnion);
  LCE_SIZE(TfLiteQuantizationParams);
  LCE_OFFSET(TfLiteQuantizationParams, scale);
  LCE_OFFSET(TfLiteQuantizationParams, zero_point);

  LCE_SIZE(TfLiteTensor);
  LCE_OFFSET(TfLiteTensor, type);
  LCE_OFFSET(TfLiteTensor, data);
  LCE_OFFSET(TfLiteTensor, dims);
  LCE_OFFSET(TfLiteTensor, params);
  LCE_OFFSET(TfLiteTensor, allocation_type);
  LCE_OFFSET(TfLiteTensor, bytes);
  LCE_OFFSET(TfLiteTensor, allocation);
  LCE_OFFSET(TfLiteTensor, name);
  LCE_OFFSET(TfLiteTensor, delegate);
  LCE_OFFSET(TfLiteTensor, buffer_handle);
  LCE_OFFSET(TfLiteTensor, data_is_stale);
  LCE_OFFSET(TfLiteTensor, is_variable);
  LCE_OFFSET(TfLiteTensor, quantization);
  LCE_OFFSET(TfLiteTensor, sparsity);
  LCE_OFFSET(TfLiteTensor, dims_signature);
  LCE_FIELD_SIZE(TfLiteTensor, type);
  LCE_FIELD_SIZE(TfLiteTensor, allocation_type);

  LCE_OFFSET(TfLiteNode, inputs);
  LCE_OFFSET(TfLiteNode, outputs);
  LCE_OFFSET(TfLiteNode, intermediates);
  LCE_OFFSET(TfLiteNode, temporaries);
  LCE_OFFSET(TfLiteNode, user_data);
  LCE_OFFSET(TfLiteNode, builtin_data);
  LCE_OFFSET(TfLiteNode, custom_initial_data);
  LCE_OFFSET(TfLiteNode, custom_initial_data_size);
  LCE_OFFSET(TfLiteNode, delegate);
  LCE_OFFSET(TfLiteNode, might_have_side_effect);

  LCE_OFFSET(TfLiteContext, tensors_size);
  LCE_OFFSET(TfLiteContext, GetExecutionPlan);
  LCE_OFFSET(TfLiteContext, tensors);
  LCE_OFFSET(TfLiteContext, impl_);
  LCE_OFFSET(TfLiteContext, ResizeTensor);
  LCE_OFFSET(TfLiteContext, ReportError);

  LCE_SIZE(TfLiteRegistration);
  LCE_OFFSET(TfLiteRegistration, init);
  LCE_OFFSET(TfLiteRegistration, free);
  LCE_OFFSET(TfLiteRegistration, prepare);
  LCE_OFFSET(TfLiteRegistration, invoke);
  LCE_OFFSET(TfLiteRegistration, profiling_string);
  LCE_OFFSET(TfLiteRegistration, builtin_code);
  LCE_OFFSET(TfLiteRegistration, custom_name);
  LCE_OFFSET(TfLiteRegistration, version);
  LCE_OFFSET(TfLiteRegistration, registration_external);
  LCE_OFFSET(TfLiteRegistration, async_kernel);
  LCE_OFFSET(TfLiteRegistration, inplace_operator);

  LCE_ENUM(kTfLiteOk);
  LCE_ENUM(kTfLiteError);
  LCE_ENUM(kTfLiteNoType);
  LCE_ENUM(kTfLiteFloat32);
  LCE_ENUM(kTfLiteInt32);
  LCE_ENUM(kTfLiteUInt8);
  LCE_ENUM(kTfLiteInt64);
  LCE_ENUM(kTfLiteBool);
  LCE_ENUM(kTfLiteInt16);
  LCE_ENUM(kTfLiteInt8);
  LCE_ENUM(kTfLiteFloat16);
  LCE_ENUM(kTfLiteMmapRo);
  LCE_ENUM(kTfLiteArenaRw);
  LCE_ENUM(kTfLitePersistentRo);
  LCE_ENUM(kTfLiteDynamic);
  LCE_ENUM(kTfLiteNoQuantization);
  LCE_ENUM(kTfLiteAffineQuantization);
  return 0;
}
