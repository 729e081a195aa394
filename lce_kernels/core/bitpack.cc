// Bit packing of activations: portable, AVX-512 (x86-64, run time) and NEON (aarch64) paths.
// See bitpack.h for the layout and the rules per type.
#include "bitpack.h"

#include <cstring>

#if LCE_KERNELS_HAVE_NEON
#include <arm_neon.h>
#endif
#if LCE_KERNELS_HAVE_AVX512
#include <immintrin.h>
#define LCE_AVX512_FN __attribute__((target("avx512f")))
#endif

namespace compute_engine {
namespace core {
namespace bitpack {

namespace {

inline std::int32_t AsWord(std::uint32_t w) {
  std::int32_t s;
  std::memcpy(&s, &w, sizeof s);
  return s;
}

inline std::uint32_t FromWord(std::int32_t s) {
  std::uint32_t w;
  std::memcpy(&w, &s, sizeof w);
  return w;
}

// ---------------- portable ----------------
template <typename T, typename NegFn>
void PackPortable(const T* in, std::size_t rows, int n, std::int32_t* out, NegFn neg) {
  const int words = PackedWords(n);
  for (std::size_t r = 0; r < rows; ++r) {
    const T* row = in + r * static_cast<std::size_t>(n);
    std::int32_t* o = out + r * static_cast<std::size_t>(words);
    for (int j = 0; j < words; ++j) {
      const int c0 = 32 * j, c1 = c0 + 32 < n ? c0 + 32 : n;
      std::uint32_t w = 0;
      for (int c = c0; c < c1; ++c) w |= static_cast<std::uint32_t>(neg(row[c])) << (c - c0);
      o[j] = AsWord(w);
    }
  }
}

template <typename T>
void UnpackPortable(const std::int32_t* in, std::size_t rows, int n, T zero_value, T one_value,
                    T* out) {
  const int words = PackedWords(n);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int32_t* w = in + r * static_cast<std::size_t>(words);
    T* o = out + r * static_cast<std::size_t>(n);
    for (int c = 0; c < n; ++c) {
      o[c] = ((FromWord(w[c >> 5]) >> (c & 31)) & 1u) != 0u ? one_value : zero_value;
    }
  }
}

// ---------------- AVX-512 ----------------
#if LCE_KERNELS_HAVE_AVX512
// GCC 12's AVX-512 intrinsics fill "don't care" operands with _mm512_undefined_*(), which
// -Wmaybe-uninitialized flags inside the compiler's own headers (GCC bug 105593); the
// warning is silenced for this block only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
LCE_AVX512_FN void PackFloatAvx512(const float* in, std::size_t rows, int n, std::int32_t* out) {
  const int words = PackedWords(n);
  const __m512 zero = _mm512_setzero_ps();
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = in + r * static_cast<std::size_t>(n);
    std::int32_t* o = out + r * static_cast<std::size_t>(words);
    for (int j = 0; j < words; ++j) {
      std::uint32_t w = 0;
      for (int half = 0; half < 2; ++half) {
        const int c0 = 32 * j + 16 * half;
        const int left = n - c0;
        if (left <= 0) break;
        // Lanes past the row's end are neither read nor set (masked load gives 0.0f).
        const __mmask16 valid = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                                           : static_cast<__mmask16>((1u << left) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(valid, row + c0);
        const __mmask16 neg = _mm512_mask_cmp_ps_mask(valid, v, zero, _CMP_LT_OQ);
        w |= static_cast<std::uint32_t>(neg) << (16 * half);
      }
      o[j] = AsWord(w);
    }
  }
}

LCE_AVX512_FN void UnpackFloatAvx512(const std::int32_t* in, std::size_t rows, int n,
                                     float* out) {
  const int words = PackedWords(n);
  const __m512 plus = _mm512_set1_ps(1.0f), minus = _mm512_set1_ps(-1.0f);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int32_t* w = in + r * static_cast<std::size_t>(words);
    float* o = out + r * static_cast<std::size_t>(n);
    for (int c0 = 0; c0 < n; c0 += 16) {
      const std::uint32_t word = FromWord(w[c0 >> 5]);
      const __mmask16 bits = static_cast<__mmask16>(word >> (c0 & 31));
      const int left = n - c0;
      const __mmask16 valid = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                                         : static_cast<__mmask16>((1u << left) - 1u);
      _mm512_mask_storeu_ps(o + c0, valid, _mm512_mask_blend_ps(bits, plus, minus));
    }
  }
}
#pragma GCC diagnostic pop
#endif

// ---------------- NEON ----------------
#if LCE_KERNELS_HAVE_NEON
void PackFloatNeon(const float* in, std::size_t rows, int n, std::int32_t* out) {
  const int words = PackedWords(n), full = n / 32;
  static const std::uint32_t kBits[4] = {1u, 2u, 4u, 8u};
  const uint32x4_t bits = vld1q_u32(kBits);
  const float32x4_t zero = vdupq_n_f32(0.0f);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = in + r * static_cast<std::size_t>(n);
    std::int32_t* o = out + r * static_cast<std::size_t>(words);
    for (int j = 0; j < full; ++j) {
      std::uint32_t w = 0;
      for (int g = 0; g < 8; ++g) {
        const uint32x4_t neg = vcltq_f32(vld1q_f32(row + 32 * j + 4 * g), zero);
        w |= vaddvq_u32(vandq_u32(neg, bits)) << (4 * g);
      }
      o[j] = AsWord(w);
    }
    if (full < words) {  // tail word: scalar, pad bits 0
      std::uint32_t w = 0;
      for (int c = 32 * full; c < n; ++c) {
        w |= static_cast<std::uint32_t>(row[c] < 0.0f) << (c - 32 * full);
      }
      o[full] = AsWord(w);
    }
  }
}

void UnpackFloatNeon(const std::int32_t* in, std::size_t rows, int n, float* out) {
  const int words = PackedWords(n);
  static const std::uint32_t kBits[4] = {1u, 2u, 4u, 8u};
  const uint32x4_t bits = vld1q_u32(kBits);
  const float32x4_t plus = vdupq_n_f32(1.0f), minus = vdupq_n_f32(-1.0f);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int32_t* w = in + r * static_cast<std::size_t>(words);
    float* o = out + r * static_cast<std::size_t>(n);
    int c = 0;
    for (; c + 4 <= n; c += 4) {
      const std::uint32_t nib = (FromWord(w[c >> 5]) >> (c & 31)) & 15u;
      const uint32x4_t set = vtstq_u32(vdupq_n_u32(nib), bits);
      vst1q_f32(o + c, vbslq_f32(set, minus, plus));
    }
    for (; c < n; ++c) o[c] = ((FromWord(w[c >> 5]) >> (c & 31)) & 1u) != 0u ? -1.0f : 1.0f;
  }
}
#endif

}  // namespace

void PackFloat(const float* in, std::size_t rows, int n, std::int32_t* out, KernelPath path) {
  const KernelPath p = ResolveKernelPath(path);
#if LCE_KERNELS_HAVE_AVX512
  if (p == KernelPath::kAvx512) return PackFloatAvx512(in, rows, n, out);
#endif
#if LCE_KERNELS_HAVE_NEON
  if (p == KernelPath::kNeon) return PackFloatNeon(in, rows, n, out);
#endif
  (void)p;
  PackPortable(in, rows, n, out, [](float x) { return x < 0.0f; });
}

void PackInt8(const std::int8_t* in, std::size_t rows, int n, std::int32_t zero_point,
              std::int32_t* out) {
  PackPortable(in, rows, n, out,
               [zero_point](std::int8_t x) { return static_cast<std::int32_t>(x) < zero_point; });
}

void PackBool(const std::uint8_t* in, std::size_t rows, int n, std::int32_t* out) {
  PackPortable(in, rows, n, out, [](std::uint8_t x) { return x == 0u; });
}

void UnpackFloat(const std::int32_t* in, std::size_t rows, int n, float* out, KernelPath path) {
  const KernelPath p = ResolveKernelPath(path);
#if LCE_KERNELS_HAVE_AVX512
  if (p == KernelPath::kAvx512) return UnpackFloatAvx512(in, rows, n, out);
#endif
#if LCE_KERNELS_HAVE_NEON
  if (p == KernelPath::kNeon) return UnpackFloatNeon(in, rows, n, out);
#endif
  (void)p;
  UnpackPortable(in, rows, n, 1.0f, -1.0f, out);
}

void UnpackInt8(const std::int32_t* in, std::size_t rows, int n, std::int8_t zero_value,
                std::int8_t one_value, std::int8_t* out) {
  UnpackPortable(in, rows, n, zero_value, one_value, out);
}

void UnpackBool(const std::int32_t* in, std::size_t rows, int n, std::uint8_t* out) {
  UnpackPortable(in, rows, n, static_cast<std::uint8_t>(1), static_cast<std::uint8_t>(0), out);
}

}  // namespace bitpack
}  // namespace core
}  // namespace compute_engine
