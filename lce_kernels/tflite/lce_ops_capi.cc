// C entry points of the op library (build/libbdfsmn_op.so) for Python's
// InterpreterWithCustomOps(custom_op_registerers=[...]): by symbol name (library loaded with
// RTLD_GLOBAL) or through ctypes with the resolver's address. All of them go through the one
// registration point, lce_ops_register.h.
//
//   LceOpsRegisterer          every op of the project (ops::PROJECT_OPS in
//                             core/op_contract.h), kernel path auto
//   LceOpsRegistererPortable  every op, portable path
//   LceOpsRegistererNeon      every op, NEON path (portable where the build has none)
//   LceOpsRegistererAvx512    every op, AVX-512 path (portable where the CPU has none)
//   LceOpsKernelPath(name)    the path that runs for a registerer of path `name` ("auto",
//                             "portable", ...) here: "portable", "neon", "avx512", or
//                             "invalid" (unknown name)
//   LceOpsTfliteHeaders()     which TFLite headers this library was compiled against
//                             (tflite_c.h): "real" (tensorflow/lite/core/c/common.h) or
//                             "abi" (the hand-declared fallback, tflite_abi.h)
#include <string>

#include "lce_ops_register.h"
#include "op_common.h"

namespace {

namespace cet = ::compute_engine::tflite;
using ::compute_engine::core::KernelPath;

void Register(void* resolver, KernelPath path) {
  cet::RegisterLceOps(static_cast<::tflite::MutableOpResolver*>(resolver), path);
}

}  // namespace

#define LCE_OPS_EXPORT extern "C" __attribute__((visibility("default")))

LCE_OPS_EXPORT void LceOpsRegisterer(void* resolver) { Register(resolver, KernelPath::kAuto); }

LCE_OPS_EXPORT void LceOpsRegistererPortable(void* resolver) {
  Register(resolver, KernelPath::kPortable);
}

LCE_OPS_EXPORT void LceOpsRegistererNeon(void* resolver) { Register(resolver, KernelPath::kNeon); }

LCE_OPS_EXPORT void LceOpsRegistererAvx512(void* resolver) {
  Register(resolver, KernelPath::kAvx512);
}

LCE_OPS_EXPORT const char* LceOpsKernelPath(const char* requested) {
  KernelPath p = KernelPath::kAuto;
  if (!::compute_engine::core::ParseKernelPath(requested, &p)) return "invalid";
  std::string err;
  if (!cet::op_common::EffectivePath(p, &p, &err)) return "invalid";
  return ::compute_engine::core::KernelPathName(::compute_engine::core::ResolveKernelPath(p));
}

LCE_OPS_EXPORT const char* LceOpsTfliteHeaders() { return LCE_KERNELS_TFLITE_HEADERS; }
