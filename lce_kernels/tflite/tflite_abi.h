// FALLBACK declaration of the TensorFlow Lite C ABI used by the op glue, for builds without
// the real tensorflow/lite/core/c/common.h (tflite_c.h picks it only then; the Makefile uses
// the real header whenever the pinned TFLM tarball is available).
//
// The tensorflow pip wheel ships no TFLite headers, so the few structs an op needs are
// declared here. PINNED: TensorFlow 2.16.x (tested with the tensorflow==2.16.2 wheel).
//
// Source: tensorflow/lite/core/c/common.h (the field order was taken from that file; the
// header itself states the structs are "semi-ABI stable: new values are only added at the
// end, never reordered", and its TfLiteRegistration_V1/V2/V3 legacy structs document the
// history of TfLiteRegistration). We only rely on:
//   - TfLiteTensor: the full 2.16 field list (its size is the stride of context->tensors),
//   - TfLiteNode:   the leading fields up to custom_initial_data_size,
//   - TfLiteContext: the leading fields up to ReportError,
//   - TfLiteRegistration: all fields up to inplace_operator (2.16 has them all); we pass a
//     zero-initialised struct, and AddCustom copies sizeof(TfLiteRegistration of the
//     runtime), so declaring the complete struct is REQUIRED (a shorter one would be read
//     past its end).
// tflite_c.h asserts the layout (for this file and the real header alike);
// tests/test_kernel_build.py compiles lce_kernels/tests/tflite_layout.cc against both and
// compares every size, offset and enum value the glue uses. When moving to another TF
// version, re-check this file against that version's common.h.
#ifndef LCE_KERNELS_TFLITE_TFLITE_ABI_H_
#define LCE_KERNELS_TFLITE_TFLITE_ABI_H_

#include <cstddef>
#include <cstdint>

extern "C" {

typedef enum TfLiteStatus {
  kTfLiteOk = 0,
  kTfLiteError = 1,
  kTfLiteDelegateError = 2,
  kTfLiteApplicationError = 3,
  kTfLiteDelegateDataNotFound = 4,
  kTfLiteDelegateDataWriteError = 5,
  kTfLiteDelegateDataReadError = 6,
  kTfLiteUnresolvedOps = 7,
  kTfLiteCancelled = 8,
} TfLiteStatus;

typedef enum {
  kTfLiteNoType = 0,
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt64 = 4,
  kTfLiteString = 5,
  kTfLiteBool = 6,
  kTfLiteInt16 = 7,
  kTfLiteComplex64 = 8,
  kTfLiteInt8 = 9,
  kTfLiteFloat16 = 10,
  kTfLiteFloat64 = 11,
  kTfLiteComplex128 = 12,
  kTfLiteUInt64 = 13,
  kTfLiteResource = 14,
  kTfLiteVariant = 15,
  kTfLiteUInt32 = 16,
  kTfLiteUInt16 = 17,
  kTfLiteInt4 = 18,
} TfLiteType;

typedef struct TfLiteIntArray {
  int size;
  int data[];  // flexible array member (C99; accepted by g++ as an extension)
} TfLiteIntArray;

typedef struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

typedef enum TfLiteQuantizationType {
  kTfLiteNoQuantization = 0,
  kTfLiteAffineQuantization = 1,
} TfLiteQuantizationType;

typedef struct TfLiteQuantization {
  TfLiteQuantizationType type;
  void* params;
} TfLiteQuantization;

typedef union TfLitePtrUnion {
  int32_t* i32;
  uint32_t* u32;
  int64_t* i64;
  uint64_t* u64;
  float* f;
  void* f16;
  void* bf16;
  double* f64;
  char* raw;
  const char* raw_const;
  uint8_t* uint8;
  bool* b;
  int16_t* i16;
  uint16_t* ui16;
  void* c64;
  void* c128;
  int8_t* int8;
  void* data;
} TfLitePtrUnion;

typedef enum TfLiteAllocationType {
  kTfLiteMemNone = 0,
  kTfLiteMmapRo,
  kTfLiteArenaRw,
  kTfLiteArenaRwPersistent,
  kTfLiteDynamic,
  kTfLitePersistentRo,
  kTfLiteCustom,
  kTfLiteVariantObject,
} TfLiteAllocationType;

typedef int TfLiteBufferHandle;
struct TfLiteDelegate;
struct TfLiteSparsity;
struct TfLiteRegistration;
struct TfLiteAsyncKernel;
struct TfLiteRegistrationExternal;

typedef struct TfLiteTensor {
  TfLiteType type;
  TfLitePtrUnion data;
  TfLiteIntArray* dims;
  TfLiteQuantizationParams params;
  TfLiteAllocationType allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
  struct TfLiteDelegate* delegate;
  TfLiteBufferHandle buffer_handle;
  bool data_is_stale;
  bool is_variable;
  TfLiteQuantization quantization;
  struct TfLiteSparsity* sparsity;
  const TfLiteIntArray* dims_signature;
} TfLiteTensor;

typedef struct TfLiteNode {
  TfLiteIntArray* inputs;
  TfLiteIntArray* outputs;
  TfLiteIntArray* intermediates;
  TfLiteIntArray* temporaries;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
  struct TfLiteDelegate* delegate;
  bool might_have_side_effect;
} TfLiteNode;

// Leading fields only: the struct is always owned and allocated by the runtime.
typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext* context,
                                   TfLiteIntArray** execution_plan);
  TfLiteTensor* tensors;
  void* impl_;
  TfLiteStatus (*ResizeTensor)(struct TfLiteContext*, TfLiteTensor* tensor,
                               TfLiteIntArray* new_size);
  void (*ReportError)(struct TfLiteContext*, const char* msg, ...);
  // ... further fields not used (never instantiate this struct).
} TfLiteContext;

typedef struct TfLiteRegistration {
  void* (*init)(TfLiteContext* context, const char* buffer, size_t length);
  void (*free)(TfLiteContext* context, void* buffer);
  TfLiteStatus (*prepare)(TfLiteContext* context, TfLiteNode* node);
  TfLiteStatus (*invoke)(TfLiteContext* context, TfLiteNode* node);
  const char* (*profiling_string)(const TfLiteContext* context, const TfLiteNode* node);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  struct TfLiteRegistrationExternal* registration_external;
  struct TfLiteAsyncKernel* (*async_kernel)(TfLiteContext* context, TfLiteNode* node);
  uint64_t inplace_operator;
} TfLiteRegistration;

}  // extern "C"

#endif  // LCE_KERNELS_TFLITE_TFLITE_ABI_H_
