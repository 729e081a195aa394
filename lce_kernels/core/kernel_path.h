// Kernel paths shared by every op of lce_kernels (core/op_contract.h: ops::PROJECT_OPS):
// which implementation of a kernel runs.
//
//   kPortable  plain C++ (the reference: every other path is tested bit-identical to it)
//   kNeon      aarch64 NEON (compiled in on aarch64 only)
//   kAvx512    x86-64 AVX-512F + AVX512_VPOPCNTDQ (compiled in on x86-64 with GCC/Clang,
//              chosen at run time when the CPU has both)
//   kAuto      NEON on aarch64, else AVX-512 when the CPU has it, else portable
//
// A path this build or CPU lacks runs as portable (ResolveKernelPath). The path is chosen
// when the ops are registered (tflite/lce_ops_register.h: RegisterLceOps(resolver, path)).
// Header only, no TFLite dependency.
#ifndef LCE_KERNELS_CORE_KERNEL_PATH_H_
#define LCE_KERNELS_CORE_KERNEL_PATH_H_

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(LCE_KERNELS_NO_AVX512)
#define LCE_KERNELS_HAVE_AVX512 1
#else
#define LCE_KERNELS_HAVE_AVX512 0
#endif

#if defined(__aarch64__)
#define LCE_KERNELS_HAVE_NEON 1
#else
#define LCE_KERNELS_HAVE_NEON 0
#endif

namespace compute_engine {
namespace core {

enum class KernelPath { kAuto, kPortable, kNeon, kAvx512 };

// True if this build contains the NEON path.
inline bool BuildHasNeon() { return LCE_KERNELS_HAVE_NEON != 0; }

// True if this build contains the AVX-512 path and the CPU running it supports it.
inline bool CpuHasAvx512() {
#if LCE_KERNELS_HAVE_AVX512
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
  }();
  return has;
#else
  return false;
#endif
}

// The path that actually runs for a requested one.
inline KernelPath ResolveKernelPath(KernelPath path) {
  switch (path) {
    case KernelPath::kNeon:
      return BuildHasNeon() ? KernelPath::kNeon : KernelPath::kPortable;
    case KernelPath::kAvx512:
      return CpuHasAvx512() ? KernelPath::kAvx512 : KernelPath::kPortable;
    case KernelPath::kPortable:
      return KernelPath::kPortable;
    case KernelPath::kAuto:
      break;
  }
  if (BuildHasNeon()) return KernelPath::kNeon;
  if (CpuHasAvx512()) return KernelPath::kAvx512;
  return KernelPath::kPortable;
}

inline const char* KernelPathName(KernelPath path) {
  switch (path) {
    case KernelPath::kAuto: return "auto";
    case KernelPath::kPortable: return "portable";
    case KernelPath::kNeon: return "neon";
    case KernelPath::kAvx512: return "avx512";
  }
  return "?";
}

// "auto" | "portable" | "neon" | "avx512" -> *path; false for anything else.
inline bool ParseKernelPath(const char* name, KernelPath* path) {
  if (name == nullptr) return false;
  const KernelPath all[] = {KernelPath::kAuto, KernelPath::kPortable, KernelPath::kNeon,
                            KernelPath::kAvx512};
  for (KernelPath p : all) {
    if (std::strcmp(name, KernelPathName(p)) == 0) {
      *path = p;
      return true;
    }
  }
  return false;
}

}  // namespace core
}  // namespace compute_engine

#endif  // LCE_KERNELS_CORE_KERNEL_PATH_H_
