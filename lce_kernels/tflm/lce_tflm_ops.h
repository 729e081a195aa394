// The project's ops for TensorFlow Lite Micro: ONE registration point, the TFLM twin of
// tflite/lce_ops_register.h.
//
//   ::tflite::MicroMutableOpResolver<N> resolver;
//   compute_engine::tflm::AddLceOps(&resolver);                       // kernel path: auto
//   compute_engine::tflm::AddLceOps(&resolver, KernelPath::kPortable);
//
// registers every op of core/op_contract.h's PROJECT_OPS under its custom name:
// ops::QUANTIZE, ops::DEQUANTIZE, ops::BCONV2D (Larq Compute Engine 0.16's ops),
// ops::BDFSMN (the binary DFSMN layer) and ops::DUAL_QUANTIZE (the dual-scale binarization),
// each around the same kernel core as the TFLite glue
// (lce_kernels/core). Semantics, supported configurations and error cases follow the TFLite
// glue (tflite/lce_ops.cc, tflite/bdfsmn_op.cc); what differs in TFLM:
//   * output shapes are never resized: the model must hold them, Prepare checks them;
//   * op data (options, kernel object) is placement-constructed in the arena
//     (AllocatePersistentBuffer) and destroyed by free();
//   * the kernel objects of the core (core::bdfsmn::Layer + Workspace, core::bconv2d::BConv2D)
//     own std::vector copies of the constant weights (repacked: 64-bit rows padded to 128
//     bits, pad bits cleared, prefix counts / transposed rows for the SIMD paths) and their
//     scratch. The core has no non-owning mode (a layer that reads its weights where they
//     are and takes caller-provided scratch), so those bytes come from the heap at Prepare,
//     not from the arena, and the weights are not read in place from the flatbuffer; Eval
//     allocates nothing. The firmware (firmware_sim/firmware) measures the heap separately.
//   * ops::QUANTIZE / ops::DEQUANTIZE / ops::DUAL_QUANTIZE have no weights copied and no
//     scratch: everything is in the arena (ops::DUAL_QUANTIZE reads its thresholds in place).
// The kernel path (kAuto: NEON on aarch64, AVX-512 when the x86-64 CPU has it, else portable)
// is fixed when registering, as in the TFLite glue.
#ifndef LCE_KERNELS_TFLM_LCE_TFLM_OPS_H_
#define LCE_KERNELS_TFLM_LCE_TFLM_OPS_H_

#include <cstring>

#include "../core/kernel_path.h"
#include "../core/op_contract.h"
#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

namespace compute_engine {
namespace tflm {

using ::compute_engine::core::KernelPath;

TFLMRegistration Register_QUANTIZE(KernelPath path = KernelPath::kAuto);
TFLMRegistration Register_DEQUANTIZE(KernelPath path = KernelPath::kAuto);
TFLMRegistration Register_BCONV_2D(KernelPath path = KernelPath::kAuto);
TFLMRegistration Register_BDFSMN(KernelPath path = KernelPath::kAuto);
TFLMRegistration Register_DUAL_QUANTIZE(KernelPath path = KernelPath::kAuto);

// Registration of project op `name` (one of ops::PROJECT_OPS); false for any other name.
inline bool RegistrationFor(const char* name, KernelPath path, TFLMRegistration* out) {
  namespace ops = ::compute_engine::ops;
  if (std::strcmp(name, ops::QUANTIZE) == 0) {
    *out = Register_QUANTIZE(path);
  } else if (std::strcmp(name, ops::DEQUANTIZE) == 0) {
    *out = Register_DEQUANTIZE(path);
  } else if (std::strcmp(name, ops::BCONV2D) == 0) {
    *out = Register_BCONV_2D(path);
  } else if (std::strcmp(name, ops::BDFSMN) == 0) {
    *out = Register_BDFSMN(path);
  } else if (std::strcmp(name, ops::DUAL_QUANTIZE) == 0) {
    *out = Register_DUAL_QUANTIZE(path);
  } else {
    return false;
  }
  return true;
}

// Adds every project op to the resolver (it needs ops::kNumProjectOps free slots).
template <unsigned int N>
TfLiteStatus AddLceOps(::tflite::MicroMutableOpResolver<N>* resolver,
                       KernelPath path = KernelPath::kAuto) {
  for (const char* name : ::compute_engine::ops::PROJECT_OPS) {
    TFLMRegistration r;
    if (!RegistrationFor(name, path, &r)) return kTfLiteError;
    if (resolver->AddCustom(name, &r) != kTfLiteOk) return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace tflm
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLM_LCE_TFLM_OPS_H_
