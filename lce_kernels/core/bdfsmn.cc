// Binary DFSMN layer kernel: portable path (always built) and aarch64 NEON path.
// See bdfsmn.h for the math. Float evaluation order (both paths, no FMA contraction):
//   binarize: d = v - t0; b = d < 0 ? -1 : 1; r = (v - b) - t1; acc[c % 4] += |r|;
//             s = ((acc0 + acc1) + (acc2 + acc3)) / n
//   memory:   S2 = 0; for valid k ascending: S2 += bit ? -s[tau] : s[tau]
//             z = ((float(D1) + S2) - t2 * float(W)) * mul + bias
//   pointwise: z = (float(P1) + s * float(P2)) * mul + bias
//   PReLU:    p = z < 0 ? z * slope : z;   residual: out = m + p
#include "bdfsmn.h"

#include <cmath>
#include <cstring>

#if defined(__aarch64__)
#include <arm_neon.h>
#define BDFSMN_HAVE_NEON 1
#else
#define BDFSMN_HAVE_NEON 0
#endif

// AVX-512 path: GCC / Clang on x86-64 only (function target attributes + cpu_supports);
// define BDFSMN_NO_AVX512 to leave it out.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(BDFSMN_NO_AVX512)
#include <immintrin.h>
#define BDFSMN_HAVE_AVX512 1
#define BDFSMN_AVX512 __attribute__((target("avx512f,avx512vpopcntdq")))
#else
#define BDFSMN_HAVE_AVX512 0
#endif

namespace compute_engine {
namespace core {
namespace bdfsmn {

namespace {

inline int Round16(int n) { return (n + 15) & ~15; }

inline float PRelu(float z, float slope) { return z < 0.0f ? z * slope : z; }

// Valid taps of frame t: k indices and source frames tau (ascending k).
inline int ValidTaps(int t, int frames, int taps, int left, int dil, int* ks, int* taus) {
  int nv = 0;
  for (int k = 0; k < taps; ++k) {
    const int tau = t + (k - left) * dil;
    if (tau >= 0 && tau < frames) {
      ks[nv] = k;
      taus[nv] = tau;
      ++nv;
    }
  }
  return nv;
}

// rows x n bits in 64-bit rows of `words64` words (pad bits clear) -> 32-bit words
// transposed to [PackedWords32(n)][Round16(rows)], zero columns for the padded rows.
void TransposeWords(const std::vector<std::uint64_t>& w, int rows, int n, int words64,
                    std::vector<std::uint32_t>* wt) {
  const int kw = PackedWords32(n), rp = Round16(rows);
  wt->assign(static_cast<std::size_t>(kw) * rp, 0u);
  for (int o = 0; o < rows; ++o) {
    for (int j = 0; j < kw; ++j) {
      const std::uint64_t word = w[static_cast<std::size_t>(o) * words64 + j / 2];
      (*wt)[static_cast<std::size_t>(j) * rp + o] =
          static_cast<std::uint32_t>(word >> (32 * (j % 2)));
    }
  }
}

inline const std::uint32_t* TransposedOrNull(const std::vector<std::uint32_t>& v) {
  return v.empty() ? nullptr : v.data();
}

bool CopyVec(const float* src, int n, int padded, const char* name, std::vector<float>* dst,
             std::string* error) {
  if (src == nullptr) {
    *error = std::string("null parameter vector ") + name;
    return false;
  }
  dst->assign(static_cast<std::size_t>(padded), 0.0f);
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(src[i])) {
      *error = std::string("non-finite value in ") + name + " at index " + std::to_string(i);
      return false;
    }
    (*dst)[static_cast<std::size_t>(i)] = src[i];
  }
  return true;
}

}  // namespace

void RepackRows(const std::uint32_t* src, int rows, int n, int words64, std::uint64_t* dst) {
  const int w32 = PackedWords32(n);
  for (int row = 0; row < rows; ++row) {
    const std::uint32_t* s = src + static_cast<std::size_t>(row) * w32;
    std::uint64_t* d = dst + static_cast<std::size_t>(row) * words64;
    for (int j = 0; j < words64; ++j) d[j] = 0;
    for (int j = 0; j < w32; ++j) {
      d[j / 2] |= static_cast<std::uint64_t>(s[j]) << (32 * (j % 2));
    }
    // clear pad bits n .. 64 * words64
    const int full = n / 64, rem = n % 64;
    if (rem != 0) d[full] &= (std::uint64_t{1} << rem) - 1;
    for (int j = full + (rem != 0 ? 1 : 0); j < words64; ++j) d[j] = 0;
  }
}

bool HasNeon() { return BDFSMN_HAVE_NEON != 0; }

bool HasAvx512() {
#if BDFSMN_HAVE_AVX512
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
  }();
  return has;
#else
  return false;
#endif
}

bool PathAvailable(Path path) {
  switch (path) {
    case Path::kAuto: return true;
    case Path::kPortable: return true;
    case Path::kNeon: return HasNeon();
    case Path::kAvx512: return HasAvx512();
  }
  return false;
}

Path ResolvePath(Path path) {
  if (path == Path::kAuto) {
    if (HasNeon()) return Path::kNeon;
    if (HasAvx512()) return Path::kAvx512;
    return Path::kPortable;
  }
  return PathAvailable(path) ? path : Path::kPortable;  // unavailable: portable fallback
}

const char* PathName(Path path) {
  switch (path) {
    case Path::kAuto:
      return HasNeon() ? "auto(neon)" : HasAvx512() ? "auto(avx512)" : "auto(portable)";
    case Path::kPortable: return "portable";
    case Path::kNeon: return "neon";
    case Path::kAvx512: return "avx512";
  }
  return "?";
}

// ------------------------------------------------------------------------------------
// Kernels: friend of Layer, holds both implementations.
// ------------------------------------------------------------------------------------
struct Kernels {
  static bool UseNeon(Path path) { return ResolvePath(path) == Path::kNeon; }
  static bool UseAvx512(Path path) { return ResolvePath(path) == Path::kAvx512; }

  // ---------------- portable ----------------
  static void BinarizePortable(const float* v, int frames, int n, const float* t0,
                               const float* t1, std::uint64_t* b1, std::uint64_t* b2,
                               float* s) {
    const int words = PaddedWords64(n);
    for (int t = 0; t < frames; ++t) {
      const float* row = v + static_cast<std::size_t>(t) * n;
      std::uint64_t* o1 = b1 + static_cast<std::size_t>(t) * words;
      std::uint64_t* o2 = b2 + static_cast<std::size_t>(t) * words;
      for (int j = 0; j < words; ++j) o1[j] = o2[j] = 0;
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int c = 0; c < n; ++c) {
        const float d = row[c] - t0[c];
        const bool neg1 = d < 0.0f;
        const float b = neg1 ? -1.0f : 1.0f;
        const float r = (row[c] - b) - t1[c];
        const bool neg2 = r < 0.0f;
        acc[c & 3] += std::fabs(r);
        o1[c >> 6] |= static_cast<std::uint64_t>(neg1) << (c & 63);
        o2[c >> 6] |= static_cast<std::uint64_t>(neg2) << (c & 63);
      }
      s[t] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) / static_cast<float>(n);
    }
  }

  template <bool kCounts>
  static void MemoryPortable(const Layer& L, const float* x, const std::uint64_t* b1,
                             const std::uint64_t* b2, const float* s, int frames, float* m,
                             std::int32_t* d1o, std::int32_t* wso, float* s2o) {
    const int C = L.c_, wc = L.wc_, K = L.taps();
    int ks[kMaxTaps], taus[kMaxTaps];
    std::uint64_t x1[kMaxTaps], x2[kMaxTaps], wb[kMaxTaps];
    for (int t = 0; t < frames; ++t) {
      const int nv = ValidTaps(t, frames, K, L.l_, L.dil_, ks, taus);
      for (int j = 0; j * 64 < C; ++j) {
        for (int i = 0; i < nv; ++i) {
          wb[i] = L.mem_w_[static_cast<std::size_t>(ks[i]) * wc + j];
          x1[i] = wb[i] ^ b1[static_cast<std::size_t>(taus[i]) * wc + j];
          x2[i] = wb[i] ^ b2[static_cast<std::size_t>(taus[i]) * wc + j];
        }
        const int cend = C < 64 * (j + 1) ? C : 64 * (j + 1);
        for (int c = 64 * j; c < cend; ++c) {
          const int bit = c & 63;
          int n1 = 0, nw = 0;
          float s2 = 0.0f;
          for (int i = 0; i < nv; ++i) {
            n1 += static_cast<int>((x1[i] >> bit) & 1u);
            nw += static_cast<int>((wb[i] >> bit) & 1u);
            const float st = s[taus[i]];
            s2 += ((x2[i] >> bit) & 1u) ? -st : st;
          }
          const int d1 = nv - 2 * n1, ws = nv - 2 * nw;
          const std::size_t idx = static_cast<std::size_t>(t) * C + c;
          if (kCounts) {
            d1o[idx] = d1;
            wso[idx] = ws;
            s2o[idx] = s2;
          } else {
            float z = (static_cast<float>(d1) + s2) - L.mem_t2_[c] * static_cast<float>(ws);
            z = z * L.mem_mul_[c] + L.mem_bias_[c];
            m[idx] = x[idx] + PRelu(z, L.mem_slope_[c]);
          }
        }
      }
    }
  }

  // Pointwise binary conv: O outputs, K input bits, W 64-bit words per row.
  template <bool kCounts>
  static void PointwisePortable(const std::uint64_t* w, int O, int K, int W,
                                const std::uint64_t* b1, const std::uint64_t* b2,
                                const float* s, int frames, const float* mul,
                                const float* bias, const float* slope, const float* res,
                                float* out, std::int32_t* p1o, std::int32_t* p2o) {
    for (int t = 0; t < frames; ++t) {
      const std::uint64_t* a1 = b1 + static_cast<std::size_t>(t) * W;
      const std::uint64_t* a2 = b2 + static_cast<std::size_t>(t) * W;
      const float st = s[t];
      for (int o = 0; o < O; ++o) {
        const std::uint64_t* wr = w + static_cast<std::size_t>(o) * W;
        int n1 = 0, n2 = 0;
        for (int j = 0; j < W; ++j) {
          n1 += __builtin_popcountll(wr[j] ^ a1[j]);
          n2 += __builtin_popcountll(wr[j] ^ a2[j]);
        }
        const int p1 = K - 2 * n1, p2 = K - 2 * n2;
        const std::size_t idx = static_cast<std::size_t>(t) * O + o;
        if (kCounts) {
          p1o[idx] = p1;
          p2o[idx] = p2;
        } else {
          const float z = (static_cast<float>(p1) + st * static_cast<float>(p2)) * mul[o] +
                          bias[o];
          const float p = PRelu(z, slope[o]);
          out[idx] = res != nullptr ? res[idx] + p : p;
        }
      }
    }
  }

#if BDFSMN_HAVE_NEON
  // ---------------- NEON ----------------
  // 16 sign masks (4 x u32x4, all ones = negative) -> 16 bits, channel q = bit q: narrowed
  // to bytes, ANDed with the byte's bit value, then pairwise-added down to two bytes.
  static inline std::uint64_t MaskBits16(uint32x4_t m0, uint32x4_t m1, uint32x4_t m2,
                                         uint32x4_t m3, uint8x16_t bytebits) {
    const uint16x8_t lo = vcombine_u16(vmovn_u32(m0), vmovn_u32(m1));
    const uint16x8_t hi = vcombine_u16(vmovn_u32(m2), vmovn_u32(m3));
    uint8x16_t b = vandq_u8(vcombine_u8(vmovn_u16(lo), vmovn_u16(hi)), bytebits);
    b = vpaddq_u8(b, b);
    b = vpaddq_u8(b, b);
    b = vpaddq_u8(b, b);  // byte 0: channels 0..7, byte 1: channels 8..15
    return vgetq_lane_u16(vreinterpretq_u16_u8(b), 0);
  }

  static void BinarizeNeon(const float* v, int frames, int n, const float* t0,
                           const float* t1, std::uint64_t* b1, std::uint64_t* b2, float* s) {
    static const uint32_t kBits[4] = {1u, 2u, 4u, 8u};
    static const uint8_t kByteBits[16] = {1, 2, 4, 8, 16, 32, 64, 128,
                                          1, 2, 4, 8, 16, 32, 64, 128};
    const uint32x4_t lanebits = vld1q_u32(kBits);
    const uint8x16_t bytebits = vld1q_u8(kByteBits);
    const float32x4_t zero = vdupq_n_f32(0.0f), one = vdupq_n_f32(1.0f),
                      mone = vdupq_n_f32(-1.0f);
    const int words = PaddedWords64(n);
    const int n4 = n & ~3, n16 = n & ~15;
    for (int t = 0; t < frames; ++t) {
      const float* row = v + static_cast<std::size_t>(t) * n;
      std::uint64_t* o1 = b1 + static_cast<std::size_t>(t) * words;
      std::uint64_t* o2 = b2 + static_cast<std::size_t>(t) * words;
      for (int j = 0; j < words; ++j) o1[j] = o2[j] = 0;
      float32x4_t acc = zero;
      int c = 0;
      // 16 channels per step; the |r| sums are added in channel order (4-lane acc as below)
      for (; c < n16; c += 16) {
        uint32x4_t m1[4], m2[4];
        for (int q = 0; q < 4; ++q) {
          const float32x4_t xv = vld1q_f32(row + c + 4 * q);
          m1[q] = vcltq_f32(vsubq_f32(xv, vld1q_f32(t0 + c + 4 * q)), zero);
          const float32x4_t b = vbslq_f32(m1[q], mone, one);
          const float32x4_t r = vsubq_f32(vsubq_f32(xv, b), vld1q_f32(t1 + c + 4 * q));
          m2[q] = vcltq_f32(r, zero);
          acc = vaddq_f32(acc, vabsq_f32(r));
        }
        o1[c >> 6] |= MaskBits16(m1[0], m1[1], m1[2], m1[3], bytebits) << (c & 63);
        o2[c >> 6] |= MaskBits16(m2[0], m2[1], m2[2], m2[3], bytebits) << (c & 63);
      }
      for (; c < n4; c += 4) {
        const float32x4_t xv = vld1q_f32(row + c);
        const uint32x4_t m1 = vcltq_f32(vsubq_f32(xv, vld1q_f32(t0 + c)), zero);
        const float32x4_t b = vbslq_f32(m1, mone, one);
        const float32x4_t r = vsubq_f32(vsubq_f32(xv, b), vld1q_f32(t1 + c));
        const uint32x4_t m2 = vcltq_f32(r, zero);
        acc = vaddq_f32(acc, vabsq_f32(r));
        const std::uint64_t nib1 = vaddvq_u32(vandq_u32(m1, lanebits));
        const std::uint64_t nib2 = vaddvq_u32(vandq_u32(m2, lanebits));
        o1[c >> 6] |= nib1 << (c & 63);
        o2[c >> 6] |= nib2 << (c & 63);
      }
      float a[4];
      vst1q_f32(a, acc);
      for (; c < n; ++c) {  // tail: same lane assignment as the portable path
        const float d = row[c] - t0[c];
        const bool neg1 = d < 0.0f;
        const float b = neg1 ? -1.0f : 1.0f;
        const float r = (row[c] - b) - t1[c];
        const bool neg2 = r < 0.0f;
        a[c & 3] += std::fabs(r);
        o1[c >> 6] |= static_cast<std::uint64_t>(neg1) << (c & 63);
        o2[c >> 6] |= static_cast<std::uint64_t>(neg2) << (c & 63);
      }
      s[t] = ((a[0] + a[1]) + (a[2] + a[3])) / static_cast<float>(n);
    }
  }

  // 16 channels per step: each tap's 16 bits (per plane) are broadcast once (DUP) and tested
  // against 4 per-group bit constants (CMTST), one compare per 4 channels, tap and plane; the
  // 4 groups' counts and S2 sums stay in registers (named, so that GCC does not spill them)
  // across the taps (k ascending, as in the portable order). The W term comes from prefix
  // counts of the weight bits (Layer::mem_wpre_): the valid taps are a contiguous k range.
  template <bool kCounts>
  static void MemoryNeon(const Layer& L, const float* x, const std::uint64_t* b1,
                         const std::uint64_t* b2, const float* s, int frames, float* m,
                         std::int32_t* d1o, std::int32_t* wso, float* s2o) {
    const int C = L.c_, wc = L.wc_, K = L.taps(), Cp = Round16(C);
    int ks[kMaxTaps], taus[kMaxTaps];
    float32x4_t sp[kMaxTaps], sn[kMaxTaps];
    const float32x4_t zero = vdupq_n_f32(0.0f);
    static const uint32_t kBits[16] = {1u,     2u,     4u,     8u,     16u,    32u,
                                       64u,    128u,   256u,   512u,   1024u,  2048u,
                                       4096u,  8192u,  16384u, 32768u};
    const uint32x4_t g0 = vld1q_u32(kBits), g1 = vld1q_u32(kBits + 4),
                     g2 = vld1q_u32(kBits + 8), g3 = vld1q_u32(kBits + 12);
    for (int t = 0; t < frames; ++t) {
      const int nv = ValidTaps(t, frames, K, L.l_, L.dil_, ks, taus);
      for (int i = 0; i < nv; ++i) {
        sp[i] = vdupq_n_f32(s[taus[i]]);
        sn[i] = vdupq_n_f32(-s[taus[i]]);
      }
      const int32x4_t nvv = vdupq_n_s32(nv);
      const std::size_t lo = static_cast<std::size_t>(nv > 0 ? ks[0] : 0) * Cp;
      const std::size_t hi = static_cast<std::size_t>(nv > 0 ? ks[nv - 1] + 1 : 0) * Cp;
      for (int c16 = 0; c16 < C; c16 += 16) {
        const int j = c16 >> 6, sh = c16 & 63;
        int32x4_t n0 = vdupq_n_s32(0), n1 = n0, n2 = n0, n3 = n0;
        float32x4_t s0 = zero, s1 = zero, s2 = zero, s3 = zero;
        for (int i = 0; i < nv; ++i) {
          const std::uint64_t wb = L.mem_w_[static_cast<std::size_t>(ks[i]) * wc + j];
          const std::size_t ai = static_cast<std::size_t>(taus[i]) * wc + j;
          const uint32x4_t v1 = vdupq_n_u32(static_cast<std::uint32_t>((wb ^ b1[ai]) >> sh));
          const uint32x4_t v2 = vdupq_n_u32(static_cast<std::uint32_t>((wb ^ b2[ai]) >> sh));
          // mask lane = all ones (-1) where the bit is set: subtracting counts it
          n0 = vsubq_s32(n0, vreinterpretq_s32_u32(vtstq_u32(v1, g0)));
          n1 = vsubq_s32(n1, vreinterpretq_s32_u32(vtstq_u32(v1, g1)));
          n2 = vsubq_s32(n2, vreinterpretq_s32_u32(vtstq_u32(v1, g2)));
          n3 = vsubq_s32(n3, vreinterpretq_s32_u32(vtstq_u32(v1, g3)));
          s0 = vaddq_f32(s0, vbslq_f32(vtstq_u32(v2, g0), sn[i], sp[i]));
          s1 = vaddq_f32(s1, vbslq_f32(vtstq_u32(v2, g1), sn[i], sp[i]));
          s2 = vaddq_f32(s2, vbslq_f32(vtstq_u32(v2, g2), sn[i], sp[i]));
          s3 = vaddq_f32(s3, vbslq_f32(vtstq_u32(v2, g3), sn[i], sp[i]));
        }
        MemoryStore4<kCounts>(L, x, m, d1o, wso, s2o, t, c16 + 0, nvv, n0, s0, lo, hi);
        MemoryStore4<kCounts>(L, x, m, d1o, wso, s2o, t, c16 + 4, nvv, n1, s1, lo, hi);
        MemoryStore4<kCounts>(L, x, m, d1o, wso, s2o, t, c16 + 8, nvv, n2, s2, lo, hi);
        MemoryStore4<kCounts>(L, x, m, d1o, wso, s2o, t, c16 + 12, nvv, n3, s3, lo, hi);
      }
    }
  }

  // Channels c0..c0+3 of frame t from the memory block's bit count n1 and S2 sum.
  template <bool kCounts>
  static inline void MemoryStore4(const Layer& L, const float* x, float* m, std::int32_t* d1o,
                                  std::int32_t* wso, float* s2o, int t, int c0, int32x4_t nvv,
                                  int32x4_t n1, float32x4_t s2, std::size_t lo,
                                  std::size_t hi) {
    const int C = L.c_;
    if (c0 >= C) return;
    const int32x4_t d1 = vsubq_s32(nvv, vshlq_n_s32(n1, 1));
    // weight bits of the valid taps: a difference of prefix counts
    const int32x4_t nw =
        vsubq_s32(vld1q_s32(&L.mem_wpre_[hi + c0]), vld1q_s32(&L.mem_wpre_[lo + c0]));
    const int32x4_t ws = vsubq_s32(nvv, vshlq_n_s32(nw, 1));
    const int lanes = C - c0 < 4 ? C - c0 : 4;
    const std::size_t idx = static_cast<std::size_t>(t) * C + c0;
    if (kCounts) {
      std::int32_t a[4], b[4];
      float f[4];
      vst1q_s32(a, d1);
      vst1q_s32(b, ws);
      vst1q_f32(f, s2);
      for (int q = 0; q < lanes; ++q) {
        d1o[idx + q] = a[q];
        wso[idx + q] = b[q];
        s2o[idx + q] = f[q];
      }
    } else {
      // parameter vectors are padded to a multiple of 16 by Layer::Init
      const float32x4_t zero = vdupq_n_f32(0.0f);
      float32x4_t z = vaddq_f32(vcvtq_f32_s32(d1), s2);
      z = vsubq_f32(z, vmulq_f32(vld1q_f32(&L.mem_t2_[c0]), vcvtq_f32_s32(ws)));
      z = vaddq_f32(vmulq_f32(z, vld1q_f32(&L.mem_mul_[c0])), vld1q_f32(&L.mem_bias_[c0]));
      const float32x4_t p =
          vbslq_f32(vcltq_f32(z, zero), vmulq_f32(z, vld1q_f32(&L.mem_slope_[c0])), z);
      if (lanes == 4) {
        vst1q_f32(m + idx, vaddq_f32(vld1q_f32(x + idx), p));
      } else {
        float pa[4];
        vst1q_f32(pa, p);
        for (int q = 0; q < lanes; ++q) m[idx + q] = x[idx + q] + pa[q];
      }
    }
  }

  template <bool kCounts>
  static inline void PointwiseStore(int t, int o, int O, int K, std::uint32_t n1,
                                    std::uint32_t n2, float st, const float* mul,
                                    const float* bias, const float* slope, const float* res,
                                    float* out, std::int32_t* p1o, std::int32_t* p2o) {
    const int p1 = K - 2 * static_cast<int>(n1), p2 = K - 2 * static_cast<int>(n2);
    const std::size_t idx = static_cast<std::size_t>(t) * O + o;
    if (kCounts) {
      p1o[idx] = p1;
      p2o[idx] = p2;
    } else {
      const float z =
          (static_cast<float>(p1) + st * static_cast<float>(p2)) * mul[o] + bias[o];
      const float p = PRelu(z, slope[o]);
      out[idx] = res != nullptr ? res[idx] + p : p;
    }
  }

  // Outputs o..o+3 from their popcounts n1 / n2 (4 lanes); the same float operations in the
  // same order as PointwiseStore, lane by lane.
  template <bool kCounts>
  static inline void PointwiseStore4(int t, int o, int O, int K, uint32x4_t n1, uint32x4_t n2,
                                     float st, const float* mul, const float* bias,
                                     const float* slope, const float* res, float* out,
                                     std::int32_t* p1o, std::int32_t* p2o) {
    const int32x4_t kv = vdupq_n_s32(K);
    const int32x4_t p1 = vsubq_s32(kv, vshlq_n_s32(vreinterpretq_s32_u32(n1), 1));
    const int32x4_t p2 = vsubq_s32(kv, vshlq_n_s32(vreinterpretq_s32_u32(n2), 1));
    const std::size_t idx = static_cast<std::size_t>(t) * O + o;
    if (kCounts) {
      vst1q_s32(p1o + idx, p1);
      vst1q_s32(p2o + idx, p2);
    } else {
      float32x4_t z =
          vaddq_f32(vcvtq_f32_s32(p1), vmulq_f32(vdupq_n_f32(st), vcvtq_f32_s32(p2)));
      z = vaddq_f32(vmulq_f32(z, vld1q_f32(mul + o)), vld1q_f32(bias + o));
      float32x4_t p =
          vbslq_f32(vcltq_f32(z, vdupq_n_f32(0.0f)), vmulq_f32(z, vld1q_f32(slope + o)), z);
      if (res != nullptr) p = vaddq_f32(vld1q_f32(res + idx), p);
      vst1q_f32(out + idx, p);
    }
  }

  // Blocks of 4 output rows x 1 frame; both bit planes of the frame are XORed against the
  // same weight registers; byte popcounts (vcntq_u8) are pairwise-accumulated into 16-bit
  // lanes (vpadalq_u8: no overflow below 4096 q-words = 524288 bits) and reduced once.
  template <bool kCounts>
  static void PointwiseNeon(const std::uint64_t* w, int O, int K, int W,
                            const std::uint64_t* b1, const std::uint64_t* b2, const float* s,
                            int frames, const float* mul, const float* bias,
                            const float* slope, const float* res, float* out,
                            std::int32_t* p1o, std::int32_t* p2o) {
    const int nq = W / 2;  // W is a multiple of 2 (128-bit rows)
    for (int t = 0; t < frames; ++t) {
      const std::uint8_t* a1 =
          reinterpret_cast<const std::uint8_t*>(b1 + static_cast<std::size_t>(t) * W);
      const std::uint8_t* a2 =
          reinterpret_cast<const std::uint8_t*>(b2 + static_cast<std::size_t>(t) * W);
      const float st = s[t];
      int o = 0;
      for (; o + 4 <= O; o += 4) {
        const std::uint8_t* w0 =
            reinterpret_cast<const std::uint8_t*>(w + static_cast<std::size_t>(o) * W);
        const std::uint8_t* w1 = w0 + 8 * W;
        const std::uint8_t* w2 = w1 + 8 * W;
        const std::uint8_t* w3 = w2 + 8 * W;
        uint16x8_t c10 = vdupq_n_u16(0), c11 = c10, c12 = c10, c13 = c10;
        uint16x8_t c20 = c10, c21 = c10, c22 = c10, c23 = c10;
        for (int q = 0; q < nq; ++q) {
          const uint8x16_t x1 = vld1q_u8(a1 + 16 * q);
          const uint8x16_t x2 = vld1q_u8(a2 + 16 * q);
          const uint8x16_t k0 = vld1q_u8(w0 + 16 * q);
          const uint8x16_t k1 = vld1q_u8(w1 + 16 * q);
          const uint8x16_t k2 = vld1q_u8(w2 + 16 * q);
          const uint8x16_t k3 = vld1q_u8(w3 + 16 * q);
          c10 = vpadalq_u8(c10, vcntq_u8(veorq_u8(k0, x1)));
          c20 = vpadalq_u8(c20, vcntq_u8(veorq_u8(k0, x2)));
          c11 = vpadalq_u8(c11, vcntq_u8(veorq_u8(k1, x1)));
          c21 = vpadalq_u8(c21, vcntq_u8(veorq_u8(k1, x2)));
          c12 = vpadalq_u8(c12, vcntq_u8(veorq_u8(k2, x1)));
          c22 = vpadalq_u8(c22, vcntq_u8(veorq_u8(k2, x2)));
          c13 = vpadalq_u8(c13, vcntq_u8(veorq_u8(k3, x1)));
          c23 = vpadalq_u8(c23, vcntq_u8(veorq_u8(k3, x2)));
        }
        // reduce the 4 rows' 16-bit lane sums to one u32 lane each (pairwise adds), then the
        // post-processing of the 4 outputs runs 4 lanes wide
        const uint32x4_t n1 =
            vpaddlq_u16(vpaddq_u16(vpaddq_u16(c10, c11), vpaddq_u16(c12, c13)));
        const uint32x4_t n2 =
            vpaddlq_u16(vpaddq_u16(vpaddq_u16(c20, c21), vpaddq_u16(c22, c23)));
        PointwiseStore4<kCounts>(t, o, O, K, n1, n2, st, mul, bias, slope, res, out, p1o, p2o);
      }
      for (; o < O; ++o) {
        const std::uint8_t* w0 =
            reinterpret_cast<const std::uint8_t*>(w + static_cast<std::size_t>(o) * W);
        uint16x8_t c1 = vdupq_n_u16(0), c2 = c1;
        for (int q = 0; q < nq; ++q) {
          const uint8x16_t k0 = vld1q_u8(w0 + 16 * q);
          c1 = vpadalq_u8(c1, vcntq_u8(veorq_u8(k0, vld1q_u8(a1 + 16 * q))));
          c2 = vpadalq_u8(c2, vcntq_u8(veorq_u8(k0, vld1q_u8(a2 + 16 * q))));
        }
        PointwiseStore<kCounts>(t, o, O, K, vaddlvq_u16(c1), vaddlvq_u16(c2), st, mul, bias,
                                slope, res, out, p1o, p2o);
      }
    }
  }
#endif  // BDFSMN_HAVE_NEON

#if BDFSMN_HAVE_AVX512
// GCC 12's AVX-512 intrinsics fill "don't care" operands with _mm512_undefined_*(), which
// -Wmaybe-uninitialized flags inside the compiler's own headers (GCC bug 105593); the
// warning is silenced for this block only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
  // ---------------- AVX-512 (x86-64, run-time dispatch) ----------------
  // Compiled with function-level target attributes: the rest of the library needs no
  // AVX-512 flags, and these functions only run when CpuHasAvx512() says so.
  BDFSMN_AVX512 static inline __mmask16 TailMask(int lanes) {
    return lanes >= 16 ? static_cast<__mmask16>(0xFFFF)
                       : static_cast<__mmask16>((1u << lanes) - 1u);
  }

  template <int Q>  // 128-bit quarter Q of a zmm
  BDFSMN_AVX512 static inline __m128 Quarter(__m512 v) {
    return _mm512_extractf32x4_ps(v, Q);
  }

  // NF frames at once: the |r| sum of one frame is a chain of dependent adds (kept in the
  // portable order for bit-identical floats), so independent frames are interleaved.
  template <int NF>
  BDFSMN_AVX512 static void BinarizeFramesAvx512(const float* v, int t, int n,
                                                 const float* t0, const float* t1,
                                                 std::uint64_t* b1, std::uint64_t* b2,
                                                 float* s) {
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f),
                 mone = _mm512_set1_ps(-1.0f);
    const int words = PaddedWords64(n);
    __m128 acc[NF];
    for (int f = 0; f < NF; ++f) {
      acc[f] = _mm_setzero_ps();
      std::uint64_t* o1 = b1 + static_cast<std::size_t>(t + f) * words;
      std::uint64_t* o2 = b2 + static_cast<std::size_t>(t + f) * words;
      for (int j = 0; j < words; ++j) o1[j] = o2[j] = 0;
    }
    for (int c = 0; c < n; c += 16) {
      const __mmask16 km = TailMask(n - c);
      const __m512 t0v = _mm512_maskz_loadu_ps(km, t0 + c);
      const __m512 t1v = _mm512_maskz_loadu_ps(km, t1 + c);
      const int word = c >> 6, shift = c & 63;  // c is a multiple of 16
      for (int f = 0; f < NF; ++f) {
        const std::size_t tf = static_cast<std::size_t>(t + f);
        const __m512 xv = _mm512_maskz_loadu_ps(km, v + tf * n + c);
        const __mmask16 m1 = _mm512_mask_cmp_ps_mask(km, _mm512_sub_ps(xv, t0v), zero,
                                                     _CMP_LT_OQ);
        const __m512 b = _mm512_mask_blend_ps(m1, one, mone);
        const __m512 r = _mm512_sub_ps(_mm512_sub_ps(xv, b), t1v);
        const __mmask16 m2 = _mm512_mask_cmp_ps_mask(km, r, zero, _CMP_LT_OQ);
        // |r| of lanes >= n are +0 and leave the (non-negative) sums unchanged; the four
        // 128-bit quarters are added in channel order: acc[q] sums c = q (mod 4) ascending,
        // exactly the portable order.
        const __m512 ar = _mm512_maskz_mov_ps(km, _mm512_abs_ps(r));
        acc[f] = _mm_add_ps(acc[f], _mm512_castps512_ps128(ar));
        acc[f] = _mm_add_ps(acc[f], Quarter<1>(ar));
        acc[f] = _mm_add_ps(acc[f], Quarter<2>(ar));
        acc[f] = _mm_add_ps(acc[f], Quarter<3>(ar));
        b1[tf * words + word] |= static_cast<std::uint64_t>(m1) << shift;
        b2[tf * words + word] |= static_cast<std::uint64_t>(m2) << shift;
      }
    }
    for (int f = 0; f < NF; ++f) {
      float a[4];
      _mm_storeu_ps(a, acc[f]);
      s[t + f] = ((a[0] + a[1]) + (a[2] + a[3])) / static_cast<float>(n);
    }
  }

  BDFSMN_AVX512 static void BinarizeAvx512(const float* v, int frames, int n, const float* t0,
                                           const float* t1, std::uint64_t* b1,
                                           std::uint64_t* b2, float* s) {
    int t = 0;
    for (; t + 4 <= frames; t += 4) BinarizeFramesAvx512<4>(v, t, n, t0, t1, b1, b2, s);
    for (; t < frames; ++t) BinarizeFramesAvx512<1>(v, t, n, t0, t1, b1, b2, s);
  }

  template <bool kCounts>
  BDFSMN_AVX512 static void MemoryAvx512(const Layer& L, const float* x,
                                         const std::uint64_t* b1, const std::uint64_t* b2,
                                         const float* s, int frames, float* m,
                                         std::int32_t* d1o, std::int32_t* wso, float* s2o) {
    const int C = L.c_, wc = L.wc_, K = L.taps();
    int ks[kMaxTaps], taus[kMaxTaps];
    std::uint64_t x1[kMaxTaps], x2[kMaxTaps], wb[kMaxTaps];
    __m512 sp[kMaxTaps], sn[kMaxTaps];
    const __m512 zero = _mm512_setzero_ps();
    const __m512i onei = _mm512_set1_epi32(1);
    for (int t = 0; t < frames; ++t) {
      const int nv = ValidTaps(t, frames, K, L.l_, L.dil_, ks, taus);
      for (int i = 0; i < nv; ++i) {
        sp[i] = _mm512_set1_ps(s[taus[i]]);
        sn[i] = _mm512_set1_ps(-s[taus[i]]);
      }
      const __m512i nvv = _mm512_set1_epi32(nv);
      for (int j = 0; j * 64 < C; ++j) {
        for (int i = 0; i < nv; ++i) {
          wb[i] = L.mem_w_[static_cast<std::size_t>(ks[i]) * wc + j];
          x1[i] = wb[i] ^ b1[static_cast<std::size_t>(taus[i]) * wc + j];
          x2[i] = wb[i] ^ b2[static_cast<std::size_t>(taus[i]) * wc + j];
        }
        for (int g = 0; g < 4; ++g) {
          const int c0 = 64 * j + 16 * g;
          if (c0 >= C) break;
          __m512i n1 = _mm512_setzero_si512(), nw = n1;
          __m512 s2 = zero;
          for (int i = 0; i < nv; ++i) {
            const __mmask16 k1 = static_cast<__mmask16>(x1[i] >> (16 * g));
            const __mmask16 kw = static_cast<__mmask16>(wb[i] >> (16 * g));
            const __mmask16 k2 = static_cast<__mmask16>(x2[i] >> (16 * g));
            n1 = _mm512_mask_add_epi32(n1, k1, n1, onei);
            nw = _mm512_mask_add_epi32(nw, kw, nw, onei);
            s2 = _mm512_add_ps(s2, _mm512_mask_blend_ps(k2, sp[i], sn[i]));
          }
          const __m512i d1 = _mm512_sub_epi32(nvv, _mm512_slli_epi32(n1, 1));
          const __m512i ws = _mm512_sub_epi32(nvv, _mm512_slli_epi32(nw, 1));
          const __mmask16 km = TailMask(C - c0);
          const std::size_t idx = static_cast<std::size_t>(t) * C + c0;
          if (kCounts) {
            _mm512_mask_storeu_epi32(d1o + idx, km, d1);
            _mm512_mask_storeu_epi32(wso + idx, km, ws);
            _mm512_mask_storeu_ps(s2o + idx, km, s2);
          } else {
            // parameter vectors are padded to a multiple of 16 by Layer::Init
            __m512 z = _mm512_add_ps(_mm512_cvtepi32_ps(d1), s2);
            z = _mm512_sub_ps(z, _mm512_mul_ps(_mm512_loadu_ps(&L.mem_t2_[c0]),
                                               _mm512_cvtepi32_ps(ws)));
            z = _mm512_add_ps(_mm512_mul_ps(z, _mm512_loadu_ps(&L.mem_mul_[c0])),
                              _mm512_loadu_ps(&L.mem_bias_[c0]));
            const __mmask16 neg = _mm512_cmp_ps_mask(z, zero, _CMP_LT_OQ);
            const __m512 p = _mm512_mask_mul_ps(z, neg, z, _mm512_loadu_ps(&L.mem_slope_[c0]));
            _mm512_mask_storeu_ps(m + idx, km,
                                  _mm512_add_ps(_mm512_maskz_loadu_ps(km, x + idx), p));
          }
        }
      }
    }
  }

  // One frame-block of the pointwise GEMM: NF frames x 16 output channels per step. wt is
  // the transposed weight layout (Layer::pw1_wt_ / pw2_wt_, row stride Op = Round16(O)); a
  // frame's activation row is read as 32-bit words (little endian: word j = bits 32j..).
  template <bool kCounts, int NF>
  BDFSMN_AVX512 static void PointwiseBlockAvx512(const std::uint32_t* wt, int O, int Op, int K,
                                                 int kw, const std::uint32_t* const* a1,
                                                 const std::uint32_t* const* a2,
                                                 const int* ts, const float* s,
                                                 const float* mul, const float* bias,
                                                 const float* slope, const float* res,
                                                 float* out, std::int32_t* p1o,
                                                 std::int32_t* p2o) {
    const __m512 zero = _mm512_setzero_ps();
    const __m512i kv = _mm512_set1_epi32(K);
    for (int ob = 0; ob < O; ob += 16) {
      __m512i c1[NF], c2[NF];
      for (int f = 0; f < NF; ++f) c1[f] = c2[f] = _mm512_setzero_si512();
      const std::uint32_t* wcol = wt + ob;
      for (int j = 0; j < kw; ++j) {
        const __m512i w = _mm512_loadu_si512(wcol + static_cast<std::size_t>(j) * Op);
        for (int f = 0; f < NF; ++f) {
          c1[f] = _mm512_add_epi32(
              c1[f], _mm512_popcnt_epi32(_mm512_xor_si512(w, _mm512_set1_epi32(
                                                                 static_cast<int>(a1[f][j])))));
          c2[f] = _mm512_add_epi32(
              c2[f], _mm512_popcnt_epi32(_mm512_xor_si512(w, _mm512_set1_epi32(
                                                                 static_cast<int>(a2[f][j])))));
        }
      }
      const __mmask16 km = TailMask(O - ob);
      for (int f = 0; f < NF; ++f) {
        const __m512i p1 = _mm512_sub_epi32(kv, _mm512_slli_epi32(c1[f], 1));
        const __m512i p2 = _mm512_sub_epi32(kv, _mm512_slli_epi32(c2[f], 1));
        const std::size_t idx = static_cast<std::size_t>(ts[f]) * O + ob;
        if (kCounts) {
          _mm512_mask_storeu_epi32(p1o + idx, km, p1);
          _mm512_mask_storeu_epi32(p2o + idx, km, p2);
        } else {
          const __m512 st = _mm512_set1_ps(s[ts[f]]);
          __m512 z = _mm512_add_ps(_mm512_cvtepi32_ps(p1),
                                   _mm512_mul_ps(st, _mm512_cvtepi32_ps(p2)));
          z = _mm512_add_ps(_mm512_mul_ps(z, _mm512_loadu_ps(mul + ob)),
                            _mm512_loadu_ps(bias + ob));
          const __mmask16 neg = _mm512_cmp_ps_mask(z, zero, _CMP_LT_OQ);
          __m512 p = _mm512_mask_mul_ps(z, neg, z, _mm512_loadu_ps(slope + ob));
          if (res != nullptr) p = _mm512_add_ps(_mm512_maskz_loadu_ps(km, res + idx), p);
          _mm512_mask_storeu_ps(out + idx, km, p);
        }
      }
    }
  }

  template <bool kCounts>
  BDFSMN_AVX512 static void PointwiseAvx512(const std::uint32_t* wt, int O, int K, int W,
                                            const std::uint64_t* b1, const std::uint64_t* b2,
                                            const float* s, int frames, const float* mul,
                                            const float* bias, const float* slope,
                                            const float* res, float* out, std::int32_t* p1o,
                                            std::int32_t* p2o) {
    constexpr int kNF = 4;  // frames sharing each weight load
    const int Op = (O + 15) & ~15, kw = PackedWords32(K);
    const std::uint32_t* a1[kNF];
    const std::uint32_t* a2[kNF];
    int ts[kNF];
    int t = 0;
    for (; t + kNF <= frames; t += kNF) {
      for (int f = 0; f < kNF; ++f) {
        ts[f] = t + f;
        a1[f] = reinterpret_cast<const std::uint32_t*>(b1 + static_cast<std::size_t>(t + f) * W);
        a2[f] = reinterpret_cast<const std::uint32_t*>(b2 + static_cast<std::size_t>(t + f) * W);
      }
      PointwiseBlockAvx512<kCounts, kNF>(wt, O, Op, K, kw, a1, a2, ts, s, mul, bias, slope,
                                         res, out, p1o, p2o);
    }
    for (; t < frames; ++t) {
      ts[0] = t;
      a1[0] = reinterpret_cast<const std::uint32_t*>(b1 + static_cast<std::size_t>(t) * W);
      a2[0] = reinterpret_cast<const std::uint32_t*>(b2 + static_cast<std::size_t>(t) * W);
      PointwiseBlockAvx512<kCounts, 1>(wt, O, Op, K, kw, a1, a2, ts, s, mul, bias, slope, res,
                                       out, p1o, p2o);
    }
  }
#pragma GCC diagnostic pop
#endif  // BDFSMN_HAVE_AVX512

  // ---------------- dispatch ----------------
  static void Binarize(const float* v, int frames, int n, const float* t0, const float* t1,
                       std::uint64_t* b1, std::uint64_t* b2, float* s, Path path) {
#if BDFSMN_HAVE_NEON
    if (UseNeon(path)) return BinarizeNeon(v, frames, n, t0, t1, b1, b2, s);
#endif
#if BDFSMN_HAVE_AVX512
    if (UseAvx512(path)) return BinarizeAvx512(v, frames, n, t0, t1, b1, b2, s);
#endif
    (void)path;
    BinarizePortable(v, frames, n, t0, t1, b1, b2, s);
  }

  template <bool kCounts>
  static void Memory(const Layer& L, const float* x, const std::uint64_t* b1,
                     const std::uint64_t* b2, const float* s, int frames, float* m,
                     std::int32_t* d1o, std::int32_t* wso, float* s2o, Path path) {
#if BDFSMN_HAVE_NEON
    if (UseNeon(path)) return MemoryNeon<kCounts>(L, x, b1, b2, s, frames, m, d1o, wso, s2o);
#endif
#if BDFSMN_HAVE_AVX512
    if (UseAvx512(path))
      return MemoryAvx512<kCounts>(L, x, b1, b2, s, frames, m, d1o, wso, s2o);
#endif
    (void)path;
    MemoryPortable<kCounts>(L, x, b1, b2, s, frames, m, d1o, wso, s2o);
  }

  template <bool kCounts>
  static void Pointwise(const std::uint64_t* w, const std::uint32_t* wt, int O, int K, int W,
                        const std::uint64_t* b1, const std::uint64_t* b2, const float* s,
                        int frames, const float* mul, const float* bias, const float* slope,
                        const float* res, float* out, std::int32_t* p1o, std::int32_t* p2o,
                        Path path) {
#if BDFSMN_HAVE_NEON
    if (UseNeon(path))
      return PointwiseNeon<kCounts>(w, O, K, W, b1, b2, s, frames, mul, bias, slope, res, out,
                                    p1o, p2o);
#endif
#if BDFSMN_HAVE_AVX512
    if (UseAvx512(path) && wt != nullptr)
      return PointwiseAvx512<kCounts>(wt, O, K, W, b1, b2, s, frames, mul, bias, slope, res,
                                      out, p1o, p2o);
#endif
    (void)path;
    (void)wt;
    PointwisePortable<kCounts>(w, O, K, W, b1, b2, s, frames, mul, bias, slope, res, out, p1o,
                               p2o);
  }
};

// ------------------------------------------------------------------------------------
// Layer
// ------------------------------------------------------------------------------------
bool Layer::Init(const LayerSpec& spec, std::string* error) {
  std::string dummy;
  if (error == nullptr) error = &dummy;
  const int C = spec.channels, H = spec.hidden;
  if (C < 1 || C > kMaxChannels || H < 1 || H > kMaxChannels) {
    *error = "channels and hidden must be in [1, " + std::to_string(kMaxChannels) + "], got " +
             std::to_string(C) + ", " + std::to_string(H);
    return false;
  }
  if (spec.left < 0 || spec.right < 0 || spec.left + spec.right + 1 > kMaxTaps) {
    *error = "left/right must be >= 0 with left + right + 1 <= " + std::to_string(kMaxTaps);
    return false;
  }
  if (spec.dilation < 1 || spec.dilation > (1 << 16)) {
    *error = "dilation must be in [1, 65536]";
    return false;
  }
  if (spec.mem_weights == nullptr || spec.pw1_weights == nullptr ||
      spec.pw2_weights == nullptr) {
    *error = "null weight pointer";
    return false;
  }
  c_ = C;
  h_ = H;
  l_ = spec.left;
  r_ = spec.right;
  dil_ = spec.dilation;
  wc_ = PaddedWords64(C);
  wh_ = PaddedWords64(H);
  const int K = taps();
  mem_w_.assign(static_cast<std::size_t>(K) * wc_, 0);
  pw1_w_.assign(static_cast<std::size_t>(H) * wc_, 0);
  pw2_w_.assign(static_cast<std::size_t>(C) * wh_, 0);
  RepackRows(spec.mem_weights, K, C, wc_, mem_w_.data());
  RepackRows(spec.pw1_weights, H, C, wc_, pw1_w_.data());
  RepackRows(spec.pw2_weights, C, H, wh_, pw2_w_.data());
  // prefix counts of the memory weights' set bits over taps: mem_wpre_[k][c] = #{k' < k :
  // bit c of tap k' set} (the valid taps of a frame are a contiguous range of k)
  mem_wpre_.assign(static_cast<std::size_t>(K + 1) * Round16(C), 0);
  for (int k = 0; k < K; ++k) {
    for (int c = 0; c < C; ++c) {
      const std::size_t cp = static_cast<std::size_t>(Round16(C));
      mem_wpre_[(k + 1) * cp + c] =
          mem_wpre_[k * cp + c] +
          static_cast<std::int32_t>((mem_w_[static_cast<std::size_t>(k) * wc_ + c / 64] >>
                                     (c % 64)) & 1u);
    }
  }
  if (HasAvx512()) {
    TransposeWords(pw1_w_, H, C, wc_, &pw1_wt_);
    TransposeWords(pw2_w_, C, H, wh_, &pw2_wt_);
  } else {
    pw1_wt_.clear();
    pw2_wt_.clear();
  }
  // vectors padded to a multiple of 16 floats: whole-register loads in the SIMD paths
  const int C4 = Round16(C), H4 = Round16(H);
  return CopyVec(spec.mem_t0, C, C4, "mem_t0", &mem_t0_, error) &&
         CopyVec(spec.mem_t1, C, C4, "mem_t1", &mem_t1_, error) &&
         CopyVec(spec.mem_t2, C, C4, "mem_t2", &mem_t2_, error) &&
         CopyVec(spec.mem_mul, C, C4, "mem_mul", &mem_mul_, error) &&
         CopyVec(spec.mem_bias, C, C4, "mem_bias", &mem_bias_, error) &&
         CopyVec(spec.mem_slope, C, C4, "mem_slope", &mem_slope_, error) &&
         CopyVec(spec.pw1_t0, C, C4, "pw1_t0", &pw1_t0_, error) &&
         CopyVec(spec.pw1_t1, C, C4, "pw1_t1", &pw1_t1_, error) &&
         CopyVec(spec.pw1_mul, H, H4, "pw1_mul", &pw1_mul_, error) &&
         CopyVec(spec.pw1_bias, H, H4, "pw1_bias", &pw1_bias_, error) &&
         CopyVec(spec.pw1_slope, H, H4, "pw1_slope", &pw1_slope_, error) &&
         CopyVec(spec.pw2_t0, H, H4, "pw2_t0", &pw2_t0_, error) &&
         CopyVec(spec.pw2_t1, H, H4, "pw2_t1", &pw2_t1_, error) &&
         CopyVec(spec.pw2_mul, C, C4, "pw2_mul", &pw2_mul_, error) &&
         CopyVec(spec.pw2_bias, C, C4, "pw2_bias", &pw2_bias_, error) &&
         CopyVec(spec.pw2_slope, C, C4, "pw2_slope", &pw2_slope_, error);
}

void Layer::Prepare(int frames, Workspace* ws) const {
  if (frames < 1) frames = 1;
  const std::size_t T = static_cast<std::size_t>(frames);
  ws->frames = frames;
  ws->mem_b1.assign(T * wc_, 0);
  ws->mem_b2.assign(T * wc_, 0);
  ws->pw1_b1.assign(T * wc_, 0);
  ws->pw1_b2.assign(T * wc_, 0);
  ws->pw2_b1.assign(T * wh_, 0);
  ws->pw2_b2.assign(T * wh_, 0);
  ws->mem_s.assign(T, 0.0f);
  ws->pw1_s.assign(T, 0.0f);
  ws->pw2_s.assign(T, 0.0f);
  ws->m.assign(T * c_, 0.0f);
  ws->h.assign(T * h_, 0.0f);
}

bool Layer::Eval(const float* x, int frames, float* out, Workspace* ws, Path path) const {
  if (frames < 1 || ws == nullptr || ws->frames < frames || c_ < 1) return false;
  Kernels::Binarize(x, frames, c_, mem_t0_.data(), mem_t1_.data(), ws->mem_b1.data(),
                    ws->mem_b2.data(), ws->mem_s.data(), path);
  Kernels::Memory<false>(*this, x, ws->mem_b1.data(), ws->mem_b2.data(), ws->mem_s.data(),
                         frames, ws->m.data(), nullptr, nullptr, nullptr, path);
  Kernels::Binarize(ws->m.data(), frames, c_, pw1_t0_.data(), pw1_t1_.data(),
                    ws->pw1_b1.data(), ws->pw1_b2.data(), ws->pw1_s.data(), path);
  Kernels::Pointwise<false>(pw1_w_.data(), TransposedOrNull(pw1_wt_), h_, c_, wc_,
                            ws->pw1_b1.data(), ws->pw1_b2.data(),
                            ws->pw1_s.data(), frames, pw1_mul_.data(), pw1_bias_.data(),
                            pw1_slope_.data(), nullptr, ws->h.data(), nullptr, nullptr, path);
  Kernels::Binarize(ws->h.data(), frames, h_, pw2_t0_.data(), pw2_t1_.data(),
                    ws->pw2_b1.data(), ws->pw2_b2.data(), ws->pw2_s.data(), path);
  Kernels::Pointwise<false>(pw2_w_.data(), TransposedOrNull(pw2_wt_), c_, h_, wh_,
                            ws->pw2_b1.data(), ws->pw2_b2.data(),
                            ws->pw2_s.data(), frames, pw2_mul_.data(), pw2_bias_.data(),
                            pw2_slope_.data(), ws->m.data(), out, nullptr, nullptr, path);
  return true;
}

void Layer::Binarize(const float* v, int frames, int n, const float* t0, const float* t1,
                     std::uint64_t* b1, std::uint64_t* b2, float* s, Path path) {
  Kernels::Binarize(v, frames, n, t0, t1, b1, b2, s, path);
}

void Layer::MemoryCounts(const std::uint64_t* b1, const std::uint64_t* b2, const float* s,
                         int frames, std::int32_t* d1, std::int32_t* wsum, float* s2,
                         Path path) const {
  Kernels::Memory<true>(*this, nullptr, b1, b2, s, frames, nullptr, d1, wsum, s2, path);
}

void Layer::PointwiseCounts(int which, const std::uint64_t* b1, const std::uint64_t* b2,
                            int frames, std::int32_t* p1, std::int32_t* p2, Path path) const {
  std::vector<float> s(static_cast<std::size_t>(frames > 0 ? frames : 1), 0.0f);
  if (which == 1) {
    Kernels::Pointwise<true>(pw1_w_.data(), TransposedOrNull(pw1_wt_), h_, c_, wc_, b1, b2,
                             s.data(), frames, nullptr,
                             nullptr, nullptr, nullptr, nullptr, p1, p2, path);
  } else {
    Kernels::Pointwise<true>(pw2_w_.data(), TransposedOrNull(pw2_wt_), c_, h_, wh_, b1, b2,
                             s.data(), frames, nullptr,
                             nullptr, nullptr, nullptr, nullptr, p1, p2, path);
  }
}

}  // namespace bdfsmn
}  // namespace core
}  // namespace compute_engine
