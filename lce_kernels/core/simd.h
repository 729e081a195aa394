// The SIMD preamble of the core kernels (bdfsmn.cc, bitpack.cc, bconv2d.cc,
// dual_quantize.cc), once: the intrinsic headers of the paths this build has
// (LCE_KERNELS_HAVE_NEON / _AVX512, kernel_path.h) and the tail mask of a 16-lane AVX-512
// vector. Each kernel file keeps its own function target attribute (the AVX-512 features its
// path uses: avx512f for the binarizations, + avx512vpopcntdq for the binary GEMMs, + avx512bw
// and fma for the DFSMN layer), because the CPU check of its path tests exactly those.
// Header only, no TFLite dependency.
#ifndef LCE_KERNELS_CORE_SIMD_H_
#define LCE_KERNELS_CORE_SIMD_H_

#include "kernel_path.h"

#if LCE_KERNELS_HAVE_NEON
#include <arm_neon.h>
#endif
#if LCE_KERNELS_HAVE_AVX512
#include <immintrin.h>
#endif

namespace compute_engine {
namespace core {
namespace simd {

#if LCE_KERNELS_HAVE_AVX512
// Lanes 0 .. n-1 of a 16-lane vector: all 16 for n >= 16, none for n <= 0.
inline __mmask16 TailMask16(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF)
                 : static_cast<__mmask16>(n <= 0 ? 0u : (1u << n) - 1u);
}
#endif

}  // namespace simd
}  // namespace core
}  // namespace compute_engine

#endif  // LCE_KERNELS_CORE_SIMD_H_
