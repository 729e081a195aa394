// The ONE registration point of the project's TFLite ops, shaped like Larq Compute Engine's
// larq_compute_engine/tflite/kernels/lce_ops_register.h (v0.16.0).
//
//   custom code     registration                    kernel (lce_kernels/)
//   LceQuantize     Register_LCE_QUANTIZE(path)     core/bitpack.h   (tflite/lce_ops.cc)
//   LceDequantize   Register_LCE_DEQUANTIZE(path)   core/bitpack.h   (tflite/lce_ops.cc)
//   LceBconv2d      Register_LCE_BCONV_2D(path)     core/bconv2d.h   (tflite/lce_ops.cc)
//   LceBDfsmn       Register_BDFSMN(path)           core/bdfsmn.h    (tflite/bdfsmn_op.cc)
//
// The first three have the semantics of LCE 0.16's ops of the same names as its converter
// emits them (README.md: "LCE-compatible ops"); LceBDfsmn is the project's binary DFSMN
// layer. The kernel path is chosen here, when registering:
//
//   compute_engine::tflite::RegisterLceOps(&resolver);                        // kAuto
//   compute_engine::tflite::RegisterLceOps(&resolver, KernelPath::kPortable);
//
// kAuto picks NEON on aarch64, AVX-512 on x86-64 CPUs that have it, else portable; a path
// the build or CPU lacks runs as portable. DEPRECATED fallback: with kAuto, the environment
// variable LCE_BDFSMN_PATH=auto|portable|neon|avx512 (read when the interpreter creates each
// op) still overrides the choice; an unknown value fails Prepare.
//
// Inside LCE's Bazel tree (real TFLite headers: LCE_BDFSMN_USE_TFLITE_HEADERS, set by the
// BUILD targets) call RegisterLceOps(resolver) after RegisterLCECustomOps(resolver): the
// later AddCustom wins, so the project's LceQuantize / LceDequantize / LceBconv2d replace
// LCE's (call only the AddCustom lines you want to keep LCE's). From Python
// (InterpreterWithCustomOps), use the C registerers of tflite/lce_ops_capi.cc
// (pipeline/bdfsmn.py: registerer()).
#ifndef LCE_KERNELS_TFLITE_LCE_OPS_REGISTER_H_
#define LCE_KERNELS_TFLITE_LCE_OPS_REGISTER_H_

#if defined(LCE_BDFSMN_USE_TFLITE_HEADERS)
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/mutable_op_resolver.h"
#else
#include "tflite_abi.h"
#endif

#include "../core/kernel_path.h"

namespace compute_engine {
namespace tflite {

using KernelPath = ::compute_engine::core::KernelPath;

TfLiteRegistration* Register_LCE_QUANTIZE(KernelPath path = KernelPath::kAuto);
TfLiteRegistration* Register_LCE_DEQUANTIZE(KernelPath path = KernelPath::kAuto);
TfLiteRegistration* Register_LCE_BCONV_2D(KernelPath path = KernelPath::kAuto);
TfLiteRegistration* Register_BDFSMN(KernelPath path = KernelPath::kAuto);

// Registers every op of the project with kernel path `path`.
inline void RegisterLceOps(::tflite::MutableOpResolver* resolver,
                           KernelPath path = KernelPath::kAuto) {
  resolver->AddCustom("LceQuantize", Register_LCE_QUANTIZE(path));
  resolver->AddCustom("LceDequantize", Register_LCE_DEQUANTIZE(path));
  resolver->AddCustom("LceBconv2d", Register_LCE_BCONV_2D(path));
  resolver->AddCustom("LceBDfsmn", Register_BDFSMN(path));
}

}  // namespace tflite
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLITE_LCE_OPS_REGISTER_H_
