// XNNPACK-backed TFLM kernels for the float ops of the project's models (aarch64 firmware,
// Debian's libxnnpack-dev:arm64, the f32 operator API float_bench.cc uses).
//
// One TFLMRegistration per builtin: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB,
// MUL, PRELU, PAD, ABS, MEAN, AVERAGE_POOL_2D (VALID windows). float32 only: the firmware registers one of these for an op
// code only when every instance of that op in the model is float32 (else TFLM's reference
// kernel), and its Prepare names any configuration it does not take.
//   Prepare  checks the tensors, creates the XNNPACK operator (XNNPACK packs the constant
//            weights into its own heap buffers: counted by the firmware's xnn allocator).
//   Eval     binds the tensors' arena pointers (xnn_setup_*) when they differ from the last
//            call (the first Invoke: the firmware's warm-up, outside every counted region),
//            then xnn_run_operator (no thread pool).
// Without XNNPACK (x86-64 build, or no libxnnpack-dev:arm64) Available() is false and no
// registration exists.
#ifndef FIRMWARE_SIM_FIRMWARE_XNN_KERNELS_H_
#define FIRMWARE_SIM_FIRMWARE_XNN_KERNELS_H_

#include <string>

#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace firmware {
namespace xnn {

// True if this build has XNNPACK.
bool Available();
// xnn_initialize with the counted allocator (heap::Xnn()); false + *error on failure.
bool Initialize(std::string* error);
// The XNNPACK kernel of builtin `op`; false if there is none.
bool Registration(tflite::BuiltinOperator op, TFLMRegistration* out);

}  // namespace xnn
}  // namespace firmware

#endif  // FIRMWARE_SIM_FIRMWARE_XNN_KERNELS_H_
