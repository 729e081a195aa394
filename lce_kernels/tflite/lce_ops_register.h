// The ONE registration point of the project's TFLite ops, shaped like Larq Compute Engine's
// larq_compute_engine/tflite/kernels/lce_ops_register.h (v0.16.0): a Register_* function per
// op and one inline function that adds them all to a MutableOpResolver.
//
//   custom code (core/op_contract.h)  registration                 kernel (lce_kernels/)
//   ops::QUANTIZE                     Register_LCE_QUANTIZE(path)   core/bitpack.h  (lce_ops.cc)
//   ops::DEQUANTIZE                   Register_LCE_DEQUANTIZE(path) core/bitpack.h  (lce_ops.cc)
//   ops::BCONV2D                      Register_LCE_BCONV_2D(path)   core/bconv2d.h  (lce_ops.cc)
//   ops::BDFSMN                       Register_BDFSMN(path)         core/bdfsmn.h   (bdfsmn_op.cc)
//   ops::DUAL_QUANTIZE                Register_LCE_DUAL_QUANTIZE(path)
//                                                                   core/dual_quantize.h
//                                                                                   (lce_ops.cc)
//
// The first three have the semantics of LCE 0.16's ops of the same names as its converter
// emits them (README.md: "LCE-compatible ops"); ops::BDFSMN is the project's binary DFSMN
// layer, ops::DUAL_QUANTIZE its dual-scale binarization (one op for the converter's chain
// of eight; no LCE runtime has either). The kernel path is chosen here, when registering:
//
//   compute_engine::tflite::RegisterLceOps(&resolver);                        // kAuto
//   compute_engine::tflite::RegisterLceOps(&resolver, KernelPath::kPortable);
//
// kAuto picks NEON on aarch64, AVX-512 on x86-64 CPUs that have it, else portable; a path
// the build or CPU lacks runs as portable. Nothing else picks the path (no environment
// variable).
//
// TFLite headers: tflite_c.h (inside LCE's Bazel tree, LCE_KERNELS_IN_TFLITE_TREE set by
// lce_kernels/BUILD: TFLite's own, the ones LCE's lce_ops_register.h includes). There, call
// RegisterLceOps(resolver) after RegisterLCECustomOps(resolver): the later AddCustom wins,
// so the project's bit-packing and bconv2d ops replace LCE's (register only
// ops::BDFSMN and ops::DUAL_QUANTIZE, with Register_BDFSMN() and
// Register_LCE_DUAL_QUANTIZE(), to keep LCE's own). From Python
// (InterpreterWithCustomOps), use the C registerers of tflite/lce_ops_capi.cc
// (pipeline/bdfsmn.py: registerer()).
#ifndef LCE_KERNELS_TFLITE_LCE_OPS_REGISTER_H_
#define LCE_KERNELS_TFLITE_LCE_OPS_REGISTER_H_

#include "../core/kernel_path.h"
#include "../core/op_contract.h"
#include "tflite_c.h"

namespace compute_engine {
namespace tflite {

using KernelPath = ::compute_engine::core::KernelPath;

TfLiteRegistration* Register_LCE_QUANTIZE(KernelPath path = KernelPath::kAuto);
TfLiteRegistration* Register_LCE_DEQUANTIZE(KernelPath path = KernelPath::kAuto);
TfLiteRegistration* Register_LCE_BCONV_2D(KernelPath path = KernelPath::kAuto);
TfLiteRegistration* Register_BDFSMN(KernelPath path = KernelPath::kAuto);
TfLiteRegistration* Register_LCE_DUAL_QUANTIZE(KernelPath path = KernelPath::kAuto);

// Registers every op of the project (ops::PROJECT_OPS) with kernel path `path`.
inline void RegisterLceOps(::tflite::MutableOpResolver* resolver,
                           KernelPath path = KernelPath::kAuto) {
  resolver->AddCustom(::compute_engine::ops::QUANTIZE, Register_LCE_QUANTIZE(path));
  resolver->AddCustom(::compute_engine::ops::DEQUANTIZE, Register_LCE_DEQUANTIZE(path));
  resolver->AddCustom(::compute_engine::ops::BCONV2D, Register_LCE_BCONV_2D(path));
  resolver->AddCustom(::compute_engine::ops::BDFSMN, Register_BDFSMN(path));
  resolver->AddCustom(::compute_engine::ops::DUAL_QUANTIZE, Register_LCE_DUAL_QUANTIZE(path));
}

}  // namespace tflite
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLITE_LCE_OPS_REGISTER_H_
