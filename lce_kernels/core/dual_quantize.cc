// The dual-scale binarization (dual_quantize.h): portable, AVX-512 (x86-64, run time) and
// NEON (aarch64) row kernels; the positions and the means of s are shared.
//
// Built with -ffp-contract=off everywhere (Makefile, firmware_sim/firmware.mk, BUILD): the
// two subtractions of r are never fused or reordered.
//
// The sum of |r| is the same float operations on every path. A run of consecutive positions
// sharing one element of s goes to the row kernel in one call; row k of the run adds channel
// c into lane c % 16 of lane set k % 4 (channels in order; four independent add chains:
// AVX-512's four registers, NEON's four x four, the portable loop's arrays); at the end of
// the run the sets are added lane by lane in set order, the lanes 0..15 in order, and that
// sum is added to its element of s. So s is bit-identical across paths (x86-64 and aarch64
// firmware agree bit for bit; the contract itself allows rounding). Conv2's per-sample s
// (256 rows of 16 channels) reduces once, not 256 times.
#include "dual_quantize.h"

#include <cmath>
#include <cstring>

#include "simd.h"

#if LCE_KERNELS_HAVE_AVX512
#define LCE_AVX512_FN __attribute__((target("avx512f")))
#endif

namespace compute_engine {
namespace core {
namespace dual_quantize {

namespace {

inline int Words(int n) { return (n + 31) / 32; }

inline std::int32_t AsWord(std::uint32_t w) {
  std::int32_t s;
  std::memcpy(&s, &w, sizeof s);
  return s;
}

// The sum of a run: lane sets 0..3 added lane by lane in set order, then lanes 0..15 in order.
inline float SumSets(const float (*sets)[16]) {
  float sum = 0.0f;
  for (int l = 0; l < 16; ++l) sum += ((sets[0][l] + sets[1][l]) + sets[2][l]) + sets[3][l];
  return sum;
}

// A run of `rows` consecutive rows of C channels (one element of s): writes their words of
// b1 / b2 and returns the float sum of |r|: row k adds channel c into lane c % 16 of lane
// set k % 4 (four independent add chains), channels in order (SumSets).
float RowsPortable(const float* x, std::size_t rows, int n, const float* t0, const float* t1,
                   std::int32_t* b1, std::int32_t* b2) {
  float sets[4][16] = {};
  const int words = Words(n);
  for (std::size_t k = 0; k < rows; ++k, x += n, b1 += words, b2 += words) {
    float* lanes = sets[k & 3];
    for (int j = 0; j < words; ++j) {
      const int c0 = 32 * j, c1 = c0 + 32 < n ? c0 + 32 : n;
      std::uint32_t w1 = 0, w2 = 0;
      for (int c = c0; c < c1; ++c) {
        const float d = x[c] - t0[c];
        const bool neg1 = d < 0.0f;
        const float v1 = neg1 ? -1.0f : 1.0f;
        const float r = (x[c] - v1) - t1[c];
        w1 |= static_cast<std::uint32_t>(neg1) << (c - c0);
        w2 |= static_cast<std::uint32_t>(r < 0.0f) << (c - c0);
        lanes[c & 15] += std::fabs(r);
      }
      b1[j] = AsWord(w1);
      b2[j] = AsWord(w2);
    }
  }
  return SumSets(sets);
}

#if LCE_KERNELS_HAVE_AVX512
// GCC 12's AVX-512 intrinsics trip -Wmaybe-uninitialized in its own headers (bitpack.cc).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
using simd::TailMask16;

// 16 channels (lanes outside `v` read nothing, give bit 0 and add nothing).
LCE_AVX512_FN inline void Half(const float* x, const float* t0, const float* t1, __mmask16 v,
                               __mmask16* m1, __mmask16* m2, __m512* acc) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512 xv = _mm512_maskz_loadu_ps(v, x);
  const __m512 d = _mm512_sub_ps(xv, _mm512_maskz_loadu_ps(v, t0));
  *m1 = _mm512_mask_cmp_ps_mask(v, d, zero, _CMP_LT_OQ);
  const __m512 v1 = _mm512_mask_blend_ps(*m1, _mm512_set1_ps(1.0f), _mm512_set1_ps(-1.0f));
  const __m512 r = _mm512_sub_ps(_mm512_sub_ps(xv, v1), _mm512_maskz_loadu_ps(v, t1));
  *m2 = _mm512_mask_cmp_ps_mask(v, r, zero, _CMP_LT_OQ);
  *acc = _mm512_mask_add_ps(*acc, v, *acc, _mm512_abs_ps(r));
}

// One row into accumulator `acc`.
LCE_AVX512_FN inline void RowAvx512(const float* x, int words, __mmask16 last_lo,
                                    __mmask16 last_hi, const float* t0, const float* t1,
                                    std::int32_t* b1, std::int32_t* b2, __m512* acc) {
  for (int j = 0; j < words; ++j) {
    const int c0 = 32 * j;
    const bool last = j + 1 == words;
    __mmask16 lo1, lo2, hi1 = 0, hi2 = 0;
    Half(x + c0, t0 + c0, t1 + c0, last ? last_lo : static_cast<__mmask16>(0xFFFF), &lo1,
         &lo2, acc);
    if (!last || last_hi != 0) {
      Half(x + c0 + 16, t0 + c0 + 16, t1 + c0 + 16,
           last ? last_hi : static_cast<__mmask16>(0xFFFF), &hi1, &hi2, acc);
    }
    b1[j] = AsWord(static_cast<std::uint32_t>(lo1) | (static_cast<std::uint32_t>(hi1) << 16));
    b2[j] = AsWord(static_cast<std::uint32_t>(lo2) | (static_cast<std::uint32_t>(hi2) << 16));
  }
}

LCE_AVX512_FN float RowsAvx512(const float* x, std::size_t rows, int n, const float* t0,
                               const float* t1, std::int32_t* b1, std::int32_t* b2) {
  // four named accumulators (lane sets 0..3) stay in registers: rows in groups of four
  __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  const int words = Words(n);
  const __mmask16 last_lo = TailMask16(n - 32 * (words - 1));
  const __mmask16 last_hi = TailMask16(n - 32 * (words - 1) - 16);
  const std::size_t xs = static_cast<std::size_t>(n), ws = static_cast<std::size_t>(words);
  std::size_t k = 0;
  for (; k + 4 <= rows; k += 4, x += 4 * xs, b1 += 4 * ws, b2 += 4 * ws) {
    RowAvx512(x, words, last_lo, last_hi, t0, t1, b1, b2, &acc0);
    RowAvx512(x + xs, words, last_lo, last_hi, t0, t1, b1 + ws, b2 + ws, &acc1);
    RowAvx512(x + 2 * xs, words, last_lo, last_hi, t0, t1, b1 + 2 * ws, b2 + 2 * ws, &acc2);
    RowAvx512(x + 3 * xs, words, last_lo, last_hi, t0, t1, b1 + 3 * ws, b2 + 3 * ws, &acc3);
  }
  const std::size_t left = rows - k;  // 0..3 rows: lane sets 0, 1, 2
  if (left > 0) RowAvx512(x, words, last_lo, last_hi, t0, t1, b1, b2, &acc0);
  if (left > 1) RowAvx512(x + xs, words, last_lo, last_hi, t0, t1, b1 + ws, b2 + ws, &acc1);
  if (left > 2)
    RowAvx512(x + 2 * xs, words, last_lo, last_hi, t0, t1, b1 + 2 * ws, b2 + 2 * ws, &acc2);
  float sets[4][16];
  _mm512_storeu_ps(sets[0], acc0);
  _mm512_storeu_ps(sets[1], acc1);
  _mm512_storeu_ps(sets[2], acc2);
  _mm512_storeu_ps(sets[3], acc3);
  return SumSets(sets);
}
#pragma GCC diagnostic pop
#endif

#if LCE_KERNELS_HAVE_NEON
// Bit values of channels 4g .. 4g + 3 of a word (g = 0..7).
const std::uint32_t kNeonBits[32] = {
    1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
    1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
    1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
    1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};

// Channels c .. c + 3 of one row: the masks of bit1 / bit2 (all ones where the bit is 1) and
// |r| returned (the arithmetic of every NEON row kernel).
__attribute__((always_inline)) inline float32x4_t Masks4(const float* x, float32x4_t tv0,
                                                         float32x4_t tv1, uint32x4_t* m1,
                                                         uint32x4_t* m2) {
  // the portable formulas, bit for bit, in fewer instructions: fl(a - b) < 0 exactly when
  // a < b, and |fl(a - b)| is one FABD (see bdfsmn.cc, Bin4)
  const float32x4_t xv = vld1q_f32(x);
  *m1 = vcltq_f32(xv, tv0);
  const float32x4_t xb =
      vsubq_f32(xv, vbslq_f32(*m1, vdupq_n_f32(-1.0f), vdupq_n_f32(1.0f)));
  *m2 = vcltq_f32(xb, tv1);
  return vabdq_f32(xb, tv1);
}

// Channels c .. c + 3 of one row (x: their 4 floats, tv0 / tv1: their thresholds): their
// bit values OR-ed into p1 / p2 and |r| returned.
__attribute__((always_inline)) inline float32x4_t Block4(const float* x, float32x4_t tv0,
                                                         float32x4_t tv1, uint32x4_t bits,
                                                         uint32x4_t* p1, uint32x4_t* p2) {
  uint32x4_t m1, m2;
  const float32x4_t a = Masks4(x, tv0, tv1, &m1, &m2);
  *p1 = vorrq_u32(*p1, vandq_u32(m1, bits));
  *p2 = vorrq_u32(*p2, vandq_u32(m2, bits));
  return a;
}

// One row of n channels: its words of b1 / b2 written, |r| of channel c added into lane
// c % 16 of the lane set (a0: lanes 0..3, a1: 4..7, a2: 8..11, a3: 12..15), channels in
// order. Inlined into callers that keep the lane sets in named registers.
__attribute__((always_inline)) inline void RowNeon(const float* x, int n, const float* t0,
                                                  const float* t1, std::int32_t* b1,
                                                  std::int32_t* b2, float32x4_t* a0,
                                                  float32x4_t* a1, float32x4_t* a2,
                                                  float32x4_t* a3) {
  const int words = Words(n);
  for (int j = 0; j < words; ++j) {
    const int c0 = 32 * j, c1 = c0 + 32 < n ? c0 + 32 : n;
    uint32x4_t p1 = vdupq_n_u32(0), p2 = vdupq_n_u32(0);
    int c = c0;
    for (; c + 16 <= c1; c += 16) {
      *a0 = vaddq_f32(*a0, Block4(x + c, vld1q_f32(t0 + c), vld1q_f32(t1 + c),
                                  vld1q_u32(kNeonBits + (c - c0)), &p1, &p2));
      *a1 = vaddq_f32(*a1, Block4(x + c + 4, vld1q_f32(t0 + c + 4), vld1q_f32(t1 + c + 4),
                                  vld1q_u32(kNeonBits + (c + 4 - c0)), &p1, &p2));
      *a2 = vaddq_f32(*a2, Block4(x + c + 8, vld1q_f32(t0 + c + 8), vld1q_f32(t1 + c + 8),
                                  vld1q_u32(kNeonBits + (c + 8 - c0)), &p1, &p2));
      *a3 = vaddq_f32(*a3, Block4(x + c + 12, vld1q_f32(t0 + c + 12), vld1q_f32(t1 + c + 12),
                                  vld1q_u32(kNeonBits + (c + 12 - c0)), &p1, &p2));
    }
    std::uint32_t w1 = vaddvq_u32(p1), w2 = vaddvq_u32(p2);
    if (c < c1) {  // the last 1..15 channels of the row (only in its last word), lane by lane
      float lanes[16];
      vst1q_f32(lanes, *a0);
      vst1q_f32(lanes + 4, *a1);
      vst1q_f32(lanes + 8, *a2);
      vst1q_f32(lanes + 12, *a3);
      for (; c < c1; ++c) {
        const bool neg1 = x[c] - t0[c] < 0.0f;
        const float r = (x[c] - (neg1 ? -1.0f : 1.0f)) - t1[c];
        w1 |= static_cast<std::uint32_t>(neg1) << (c - c0);
        w2 |= static_cast<std::uint32_t>(r < 0.0f) << (c - c0);
        lanes[c & 15] += std::fabs(r);
      }
      *a0 = vld1q_f32(lanes);
      *a1 = vld1q_f32(lanes + 4);
      *a2 = vld1q_f32(lanes + 8);
      *a3 = vld1q_f32(lanes + 12);
    }
    b1[j] = AsWord(w1);
    b2[j] = AsWord(w2);
  }
}

// The masks of 4 channels of 4 rows narrowed to bytes: {row 0's 4, row 1's 4, row 2's 4,
// row 3's 4}, each 0xFF or 0.
__attribute__((always_inline)) inline uint8x16_t Narrow4x4(const uint32x4_t* m) {
  const uint16x8_t ab = vuzp1q_u16(vreinterpretq_u16_u32(m[0]), vreinterpretq_u16_u32(m[1]));
  const uint16x8_t cd = vuzp1q_u16(vreinterpretq_u16_u32(m[2]), vreinterpretq_u16_u32(m[3]));
  return vuzp1q_u8(vreinterpretq_u8_u16(ab), vreinterpretq_u8_u16(cd));
}

// Bit values of channels 4g .. 4g + 3 inside their byte of a 16-channel word, for 4 rows.
const std::uint8_t kByteBits[2][16] = {{1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8},
                                       {16, 32, 64, 128, 16, 32, 64, 128, 16, 32, 64, 128, 16,
                                        32, 64, 128}};

// The |r| of channels c .. c + 3 of rows k .. k + 3 (x: channel c of row k, row stride xs;
// t0 / t1: the 4 channels' thresholds), transposed so that a lane is a row: t[q] = channel
// c + q of the 4 rows; the bit values of the 4 channels of the 4 rows (bytes, Narrow4x4's
// order, `bits` their values) OR-ed into *q1 / *q2.
__attribute__((always_inline)) inline void Block4x4(const float* x, std::size_t xs,
                                                    const float* t0, const float* t1,
                                                    uint8x16_t bits, uint8x16_t* q1,
                                                    uint8x16_t* q2, float32x4_t* t) {
  const float32x4_t tv0 = vld1q_f32(t0), tv1 = vld1q_f32(t1);
  uint32x4_t m1[4], m2[4];
  const float32x4_t a0 = Masks4(x, tv0, tv1, &m1[0], &m2[0]);
  const float32x4_t a1 = Masks4(x + xs, tv0, tv1, &m1[1], &m2[1]);
  const float32x4_t a2 = Masks4(x + 2 * xs, tv0, tv1, &m1[2], &m2[2]);
  const float32x4_t a3 = Masks4(x + 3 * xs, tv0, tv1, &m1[3], &m2[3]);
  *q1 = vorrq_u8(*q1, vandq_u8(Narrow4x4(m1), bits));
  *q2 = vorrq_u8(*q2, vandq_u8(Narrow4x4(m2), bits));
  // 4x4 transpose: 32-bit pairs, then 64-bit halves
  const float32x4_t u0 = vtrn1q_f32(a0, a1), u1 = vtrn2q_f32(a0, a1);
  const float32x4_t v0 = vtrn1q_f32(a2, a3), v1 = vtrn2q_f32(a2, a3);
  t[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(u0), vreinterpretq_f64_f32(v0)));
  t[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(u1), vreinterpretq_f64_f32(v1)));
  t[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(u0), vreinterpretq_f64_f32(v0)));
  t[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(u1), vreinterpretq_f64_f32(v1)));
}

// The 16-bit words of 4 rows from their low-byte (channels 0..7) and high-byte (8..15) bit
// bytes (Narrow4x4's order: 4 bytes per row, disjoint bits), widened to 4 int32 words.
__attribute__((always_inline)) inline void StoreWords4(uint8x16_t lo, uint8x16_t hi,
                                                       std::int32_t* w) {
  uint8x16_t t = vpaddq_u8(lo, hi);  // {lo: 2 bytes per row, hi: 2 bytes per row}
  t = vpaddq_u8(t, t);                // {lo rows 0..3, hi rows 0..3, ...}
  const uint8x8_t l = vget_low_u8(t);
  const uint8x8_t z = vzip1_u8(l, vext_u8(l, l, 4));  // {lo 0, hi 0, lo 1, hi 1, ...}
  vst1q_s32(w, vreinterpretq_s32_u32(vmovl_u16(vreinterpret_u16_u8(z))));
}

// A row's lanes from memory, RowNeon, back to memory (lanes: 16 floats).
__attribute__((always_inline)) inline void RowIntoLanes(const float* x, int n,
                                                       const float* t0, const float* t1,
                                                       std::int32_t* b1, std::int32_t* b2,
                                                       float* lanes) {
  float32x4x4_t a = vld1q_f32_x4(lanes);
  RowNeon(x, n, t0, t1, b1, b2, &a.val[0], &a.val[1], &a.val[2], &a.val[3]);
  vst1q_f32_x4(lanes, a);
}

// Every row its own element of s (no leading axis reduced), RowsPortable's float order for
// a run of one row: lane l = the sum of |r| over channels l, l + 16, ... in order, s = the
// lanes added in order 0..15 (sets 1..3 are zeros: adding +0 changes nothing). Writes s
// (sums, not yet divided) for `rows` rows.
//   n == 16 (the streaming conv2 input): four rows per pass, transposed so that a lane is a
//   row; each lane holds one channel, so s is the running sum of the transposed blocks in
//   channel order, one add per 4 rows and channel, no lane registers; the compare masks
//   narrowed to bytes (4 channels x 4 rows per register, Narrow4x4) and each row's 16-bit
//   word of each plane summed from them by pairwise adds (StoreWords4).
//   otherwise: row by row (RowNeon into 4 lane registers), the 16 lanes summed in order.
void EachRowNeon(const float* x, std::size_t rows, int n, const float* t0, const float* t1,
                 std::int32_t* b1, std::int32_t* b2, float* s) {
  const int words = Words(n);
  const std::size_t xs = static_cast<std::size_t>(n), ws = static_cast<std::size_t>(words);
  std::size_t k = 0;
  if (n == 16) {
    const uint8x16_t bits_lo = vld1q_u8(kByteBits[0]), bits_hi = vld1q_u8(kByteBits[1]);
    for (; k + 4 <= rows; k += 4) {
      const float* xk = x + k * xs;
      // bit bytes of channels 0..7 (lo) and 8..15 (hi), per plane
      uint8x16_t lo1 = vdupq_n_u8(0), lo2 = vdupq_n_u8(0), hi1 = vdupq_n_u8(0),
                 hi2 = vdupq_n_u8(0);
      float32x4_t t[4];
      Block4x4(xk, xs, t0, t1, bits_lo, &lo1, &lo2, t);
      float32x4_t sum = t[0];  // (0 + lane 0) = lane 0: the portable sum's first step
      sum = vaddq_f32(sum, t[1]);
      sum = vaddq_f32(sum, t[2]);
      sum = vaddq_f32(sum, t[3]);
      // channels 4..7: high half of the low byte; 8..11 / 12..15: the high byte
#pragma GCC unroll 3
      for (int c = 4; c < 16; c += 4) {
        const bool low_byte = c < 8;
        Block4x4(xk + c, xs, t0 + c, t1 + c, c == 8 ? bits_lo : bits_hi,
                 low_byte ? &lo1 : &hi1, low_byte ? &lo2 : &hi2, t);
        sum = vaddq_f32(sum, t[0]);
        sum = vaddq_f32(sum, t[1]);
        sum = vaddq_f32(sum, t[2]);
        sum = vaddq_f32(sum, t[3]);
      }
      vst1q_f32(s + k, sum);
      StoreWords4(lo1, hi1, b1 + k);
      StoreWords4(lo2, hi2, b2 + k);
    }
  }
  for (; k < rows; ++k) {
    float lanes[16] = {};
    RowIntoLanes(x + k * xs, n, t0, t1, b1 + k * ws, b2 + k * ws, lanes);
    float sum = 0.0f;
    for (int l = 0; l < 16; ++l) sum += lanes[l];
    s[k] = sum;
  }
}

// A run of rows sharing one element of s (RowsPortable's order): row k into lane set k % 4
// (the sets in memory: one 4-register load and store per row), summed by SumSets.
float RowsNeon(const float* x, std::size_t rows, int n, const float* t0, const float* t1,
               std::int32_t* b1, std::int32_t* b2) {
  float sets[4][16] = {};
  const std::size_t xs = static_cast<std::size_t>(n), ws = static_cast<std::size_t>(Words(n));
  for (std::size_t k = 0; k < rows; ++k, x += xs, b1 += ws, b2 += ws)
    RowIntoLanes(x, n, t0, t1, b1, b2, sets[k & 3]);
  return SumSets(sets);
}

#endif

using RowFn = float (*)(const float*, std::size_t, int, const float*, const float*,
                        std::int32_t*, std::int32_t*);

RowFn RowFor(KernelPath path) {
  const KernelPath p = ResolveKernelPath(path);
#if LCE_KERNELS_HAVE_AVX512
  if (p == KernelPath::kAvx512) return RowsAvx512;
#endif
#if LCE_KERNELS_HAVE_NEON
  if (p == KernelPath::kNeon) return RowsNeon;
#endif
  (void)p;
  return RowsPortable;
}

}  // namespace

std::size_t Positions(const Geometry& g) {
  std::size_t n = 1;
  for (int i = 0; i + 1 < g.rank; ++i) n *= static_cast<std::size_t>(g.dims[i]);
  return n;
}

std::size_t ScaleElements(const Geometry& g) {
  std::size_t n = 1;
  for (int i = 0; i + 1 < g.rank; ++i) {
    if (!g.reduced[i]) n *= static_cast<std::size_t>(g.dims[i]);
  }
  return n;
}

std::size_t ScaleCount(const Geometry& g) {
  std::size_t n = static_cast<std::size_t>(g.channels());
  for (int i = 0; i + 1 < g.rank; ++i) {
    if (g.reduced[i]) n *= static_cast<std::size_t>(g.dims[i]);
  }
  return n;
}

void ScaleDims(const Geometry& g, int* dims) {
  for (int i = 0; i + 1 < g.rank; ++i) dims[i] = g.reduced[i] ? 1 : g.dims[i];
  dims[g.rank - 1] = 1;
}

void DualQuantize(const float* x, const Geometry& g, const float* t0, const float* t1,
                  std::int32_t* b1, std::int32_t* b2, float* s, KernelPath path) {
  const RowFn row = RowFor(path);
  const int n = g.channels(), words = Words(n);
  const int axes = g.rank - 1;
  const std::size_t scales = ScaleElements(g), positions = Positions(g);
  for (std::size_t i = 0; i < scales; ++i) s[i] = 0.0f;
  // Position counter over the leading axes and the matching index into s.
  int idx[kMaxRank] = {0, 0, 0, 0};
  std::size_t sstride[kMaxRank] = {0, 0, 0, 0};
  std::size_t acc = 1;
  for (int i = axes - 1; i >= 0; --i) {
    sstride[i] = g.reduced[i] ? 0 : acc;
    if (!g.reduced[i]) acc *= static_cast<std::size_t>(g.dims[i]);
  }
  // The reduced axes at the end of the leading ones make runs of consecutive rows that share
  // one element of s: the rows of a run go to the row kernel in one call.
  int first = axes;
  std::size_t run = 1;
  while (first > 0 && g.reduced[first - 1]) {
    --first;
    run *= static_cast<std::size_t>(g.dims[first]);
  }
  const std::size_t runs = run == 0 ? 0 : positions / run;
  const std::size_t row_words = static_cast<std::size_t>(words) * run;
#if LCE_KERNELS_HAVE_NEON
  if (ResolveKernelPath(path) == KernelPath::kNeon && scales == positions) {
    EachRowNeon(x, positions, n, t0, t1, b1, b2, s);  // one s per row (per position)
    const float count = static_cast<float>(ScaleCount(g));
    const float32x4_t cv = vdupq_n_f32(count);
    std::size_t i = 0;
    for (; i + 4 <= scales; i += 4) vst1q_f32(s + i, vdivq_f32(vld1q_f32(s + i), cv));  // IEEE:
    for (; i < scales; ++i) s[i] /= count;  // the same quotients as the scalar division
    return;
  }
#endif
  std::size_t si = 0;
  for (std::size_t k = 0; k < runs; ++k) {
    s[si] += row(x + k * run * static_cast<std::size_t>(n), run, n, t0, t1, b1 + k * row_words,
                 b2 + k * row_words);
    for (int i = first - 1; i >= 0; --i) {  // next run
      si += sstride[i];
      if (++idx[i] < g.dims[i]) break;
      si -= sstride[i] * static_cast<std::size_t>(g.dims[i]);
      idx[i] = 0;
    }
  }
  const float count = static_cast<float>(ScaleCount(g));
  for (std::size_t i = 0; i < scales; ++i) s[i] /= count;
}

}  // namespace dual_quantize
}  // namespace core
}  // namespace compute_engine
