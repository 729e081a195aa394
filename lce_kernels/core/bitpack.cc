// Bit packing of activations: portable, AVX-512 (x86-64, run time) and NEON (aarch64) paths.
// See bitpack.h for the layout and the rules per type.
#include "bitpack.h"

#include <cstring>

#include "simd.h"

#if LCE_KERNELS_HAVE_AVX512
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
// 32 floats -> one word (two 16-lane compares); lanes outside `valid` read nothing, give 0.
LCE_AVX512_FN inline std::uint32_t Pack32(const float* p, __mmask16 v0, __mmask16 v1) {
  const __m512 zero = _mm512_setzero_ps();
  const __mmask16 lo = _mm512_mask_cmp_ps_mask(v0, _mm512_maskz_loadu_ps(v0, p), zero, _CMP_LT_OQ);
  const __mmask16 hi =
      _mm512_mask_cmp_ps_mask(v1, _mm512_maskz_loadu_ps(v1, p + 16), zero, _CMP_LT_OQ);
  return static_cast<std::uint32_t>(lo) | (static_cast<std::uint32_t>(hi) << 16);
}

using simd::TailMask16;

LCE_AVX512_FN void PackFloatAvx512(const float* in, std::size_t rows, int n, std::int32_t* out) {
  const int words = PackedWords(n);
  if (n % 32 == 0) {  // rows are whole words: one stream
    const std::size_t total = rows * static_cast<std::size_t>(words);
    for (std::size_t j = 0; j < total; ++j) out[j] = AsWord(Pack32(in + 32 * j, 0xFFFF, 0xFFFF));
    return;
  }
  if (n == 16) {  // one half word per row (pad bits 0)
    const __m512 zero = _mm512_setzero_ps();
    for (std::size_t r = 0; r < rows; ++r)
      out[r] = AsWord(static_cast<std::uint32_t>(
          _mm512_cmp_ps_mask(_mm512_loadu_ps(in + 16 * r), zero, _CMP_LT_OQ)));
    return;
  }
  const __mmask16 t0 = TailMask16(n % 32), t1 = TailMask16(n % 32 - 16);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = in + r * static_cast<std::size_t>(n);
    std::int32_t* o = out + r * static_cast<std::size_t>(words);
    int j = 0;
    for (; j < words - 1; ++j) o[j] = AsWord(Pack32(row + 32 * j, 0xFFFF, 0xFFFF));
    o[j] = AsWord(Pack32(row + 32 * j, t0, t1));  // lanes past the row's end: not read, bit 0
  }
}

LCE_AVX512_FN void UnpackFloatAvx512(const std::int32_t* in, std::size_t rows, int n,
                                     float* out) {
  const int words = PackedWords(n);
  const __m512 plus = _mm512_set1_ps(1.0f), minus = _mm512_set1_ps(-1.0f);
  if (n % 16 == 0) {  // rows end on whole 16-lane groups
    const std::size_t groups = static_cast<std::size_t>(n / 16);
    for (std::size_t r = 0; r < rows; ++r) {
      const std::int32_t* w = in + r * static_cast<std::size_t>(words);
      float* o = out + r * static_cast<std::size_t>(n);
      for (std::size_t g = 0; g < groups; ++g) {
        const __mmask16 bits = static_cast<__mmask16>(FromWord(w[g >> 1]) >> (16 * (g & 1)));
        _mm512_storeu_ps(o + 16 * g, _mm512_mask_blend_ps(bits, plus, minus));
      }
    }
    return;
  }
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int32_t* w = in + r * static_cast<std::size_t>(words);
    float* o = out + r * static_cast<std::size_t>(n);
    for (int c0 = 0; c0 < n; c0 += 16) {
      const std::uint32_t word = FromWord(w[c0 >> 5]);
      const __mmask16 bits = static_cast<__mmask16>(word >> (c0 & 31));
      _mm512_mask_storeu_ps(o + c0, TailMask16(n - c0), _mm512_mask_blend_ps(bits, plus, minus));
    }
  }
}
#pragma GCC diagnostic pop
#endif

// ---------------- NEON ----------------
#if LCE_KERNELS_HAVE_NEON
// Bit values of channel 4g + lane (g = 0..7) of a 32-channel word.
const std::uint32_t* NeonBitValues() {
  static const std::uint32_t kBits[32] = {
      1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
      1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
      1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
      1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};
  return kBits;
}

// G groups of 4 floats (G * 4 <= 32 channels) -> one word: per group the sign mask (x < 0)
// ANDed with / inserted (BIT) under its channels' bit values, then two pairwise adds.
template <int G>  // 4 or 8
inline std::uint32_t PackGroupsNeon(const float* p, const uint32x4_t* cb) {
  uint32x4_t pat = vdupq_n_u32(0);
#pragma GCC unroll 8
  for (int g = 0; g < G; g += 4) {
    const float32x4x4_t v = vld1q_f32_x4(p + 4 * g);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {  // G is a multiple of 4
      const uint32x4_t m = vcltzq_f32(v.val[i]);
      pat = g + i == 0 ? vandq_u32(m, cb[0]) : vbslq_u32(cb[g + i], m, pat);
    }
  }
  pat = vpaddq_u32(pat, pat);
  return vgetq_lane_u32(vpaddq_u32(pat, pat), 0);
}

void PackFloatNeon(const float* in, std::size_t rows, int n, std::int32_t* out) {
  const int words = PackedWords(n), full = n / 32;
  uint32x4_t cb[8];
  for (int g = 0; g < 8; ++g) cb[g] = vld1q_u32(NeonBitValues() + 4 * g);
  if (n == 16) {  // one half word per row (pad bits 0)
    for (std::size_t r = 0; r < rows; ++r) out[r] = AsWord(PackGroupsNeon<4>(in + 16 * r, cb));
    return;
  }
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = in + r * static_cast<std::size_t>(n);
    std::int32_t* o = out + r * static_cast<std::size_t>(words);
    for (int j = 0; j < full; ++j) o[j] = AsWord(PackGroupsNeon<8>(row + 32 * j, cb));
    if (full < words) {  // tail word: scalar, pad bits 0
      std::uint32_t w = 0;
      for (int c = 32 * full; c < n; ++c) {
        w |= static_cast<std::uint32_t>(row[c] < 0.0f) << (c - 32 * full);
      }
      o[full] = AsWord(w);
    }
  }
}

// Per 16 channels: the word broadcast once, one compare (CMTST) and one select per 4 floats,
// one 4-register store.
void UnpackFloatNeon(const std::int32_t* in, std::size_t rows, int n, float* out) {
  const int words = PackedWords(n);
  uint32x4_t cb[8];
  for (int g = 0; g < 8; ++g) cb[g] = vld1q_u32(NeonBitValues() + 4 * g);
  const float32x4_t plus = vdupq_n_f32(1.0f), minus = vdupq_n_f32(-1.0f);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int32_t* w = in + r * static_cast<std::size_t>(words);
    float* o = out + r * static_cast<std::size_t>(n);
    int c = 0;
    for (; c + 16 <= n; c += 16) {
      const uint32x4_t v = vdupq_n_u32(FromWord(w[c >> 5]));
      const int h = (c & 31) >> 2;  // first group of this half word
      float32x4x4_t y;
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) y.val[i] = vbslq_f32(vtstq_u32(v, cb[h + i]), minus, plus);
      vst1q_f32_x4(o + c, y);
    }
    for (; c + 4 <= n; c += 4) {
      const uint32x4_t v = vdupq_n_u32(FromWord(w[c >> 5]));
      vst1q_f32(o + c, vbslq_f32(vtstq_u32(v, cb[(c & 31) >> 2]), minus, plus));
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
