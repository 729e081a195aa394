// The SIMD preamble of the core kernels (bdfsmn.cc, bitpack.cc, bconv2d.cc,
// dual_quantize.cc), once: the intrinsic headers of the paths this build has
// (LCE_KERNELS_HAVE_NEON / _AVX512, kernel_path.h), the tail mask of a 16-lane AVX-512
// vector, and the floating-point mode of the kernels' float arithmetic (ScopedFlushDenormals).
// Each kernel file keeps its own function target attribute (the AVX-512 features its
// path uses: avx512f for the binarizations, + avx512vpopcntdq for the binary GEMMs, + avx512bw
// and fma for the DFSMN layer), because the CPU check of its path tests exactly those.
// Header only, no TFLite dependency.
#ifndef LCE_KERNELS_CORE_SIMD_H_
#define LCE_KERNELS_CORE_SIMD_H_

#include <cstdint>

#include "kernel_path.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

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

// Denormals flushed to zero for the scope, the previous mode restored after: FTZ + DAZ in
// MXCSR on x86 (scalar SSE and every AVX-512 instruction), FZ in FPCR on AArch64 (scalar and
// NEON); elsewhere a no-op. The entry points of the kernels whose float arithmetic runs on
// learned per-channel parameters (the bdfsmn Layer's stages, BConv2D's output transform) hold
// one, so every path (portable, NEON, AVX-512) gives the same bits also where a value
// underflows, as TensorFlow's CPU kernels and XNNPACK flush too, and no path slows down: an x86
// core takes a microcode assist per denormal result (a student whose dead channels weight
// decay had taken to ~1e-31 ran 17 % slower). The stand-alone binarizers (bitpack's
// quantize, DualQuantize) keep IEEE semantics: a denormal input keeps its sign.
class ScopedFlushDenormals {
 public:
  ScopedFlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | kFtzDaz);
#elif defined(__aarch64__)
    std::uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    saved_ = fpcr;
    fpcr |= kFz;
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr));
#endif
  }
  ~ScopedFlushDenormals() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(static_cast<unsigned int>(saved_));
#elif defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_));
#endif
  }
  ScopedFlushDenormals(const ScopedFlushDenormals&) = delete;
  ScopedFlushDenormals& operator=(const ScopedFlushDenormals&) = delete;

 private:
  static constexpr unsigned int kFtzDaz = 0x8040u;          // MXCSR bit 15 FTZ, bit 6 DAZ
  static constexpr std::uint64_t kFz = std::uint64_t{1} << 24;  // FPCR bit 24 FZ
#if defined(__x86_64__) || defined(__i386__)
  unsigned int saved_ = 0;
#else
  std::uint64_t saved_ = 0;
#endif
};

}  // namespace simd
}  // namespace core
}  // namespace compute_engine

#endif  // LCE_KERNELS_CORE_SIMD_H_
