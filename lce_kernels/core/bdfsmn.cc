// Binary DFSMN layer kernel: portable path (always built), aarch64 NEON path and x86-64
// AVX-512 path (run-time dispatch). See bdfsmn.h for the math. Float evaluation order (every
// path, no FMA contraction; the AVX-512 path uses one explicit FMA only where it is exact:
// float(K - 2 n) of small integers):
//   binarize: d = v - t0; b = d < 0 ? -1 : 1; r = (v - b) - t1; acc[c % 4] += |r|;
//             s = ((acc0 + acc1) + (acc2 + acc3)) / n
//   memory:   S2 = 0; for valid k ascending: S2 += bit ? -s[tau] : s[tau]
//             z = ((float(D1) + S2) - t2 * float(W)) * mul + bias
//   pointwise: z = (float(P1) + s * float(P2)) * mul + bias
//   PReLU:    p = z < 0 ? z * slope : z;   residual: out = m + p
#include "bdfsmn.h"

#include <cmath>
#include <cstring>

#include "simd.h"

// AVX-512 path: GCC / Clang on x86-64 only (function target attributes + cpu_supports;
// kernel_path.h: define LCE_KERNELS_NO_AVX512 to leave it out).
#if LCE_KERNELS_HAVE_AVX512
#define BDFSMN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,fma")))
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

bool HasNeon() { return LCE_KERNELS_HAVE_NEON != 0; }

bool HasAvx512() {
#if LCE_KERNELS_HAVE_AVX512
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vpopcntdq");
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

  // One pointwise binary conv (O outputs, K input bits) and its post-processing, with the
  // next binarization fused in (when nb1 != nullptr).
  struct PwArgs {
    const std::uint32_t* wt;  // AVX-512: transposed weights [kw][Op] (Layer::pw1_wt_ / pw2_wt_)
    int O, K, W;              // outputs, input bits, 64-bit words per activation row
    const std::uint64_t *b1, *b2;
    const float* s;
    const float *mul, *bias, *slope;  // padded to a multiple of 16
    const float* res;                 // residual [T][O] or nullptr
    float* out;                       // [T][O]
    std::int32_t *p1o, *p2o;          // counts (kCounts)
    const float *nt0, *nt1;           // next binarization thresholds (padded) or nullptr
    std::uint64_t *nb1, *nb2;
    float* ns;
    const float* pk;  // NEON: mul, bias, slope (, next t0, t1) packed per 4 outputs, or nullptr
    bool max_prelu;   // NEON: PReLU as max(z, slope * z) (Layer::MaxPreluExact of slope, bias)
  };
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
      const float st = kCounts ? 0.0f : s[t];
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

#if LCE_KERNELS_HAVE_NEON
  // ---------------- NEON ----------------
  // ---- NEON dual-scale binarization and memory block (fused with the pw1 binarization) ----
  // Sign patterns: per 4 channels the two compare masks are ANDed with their channels' bit
  // values (bit (c % 16) of a 16-channel halfword) and inserted (BIT) into one pattern per
  // plane; per 16 channels two pairwise adds give both halfwords, stored as lanes.
  static inline void FlushBits(uint32x4_t pa1, uint32x4_t pa2, std::uint16_t* r1,
                               std::uint16_t* r2) {
    uint32x4_t hw = vpaddq_u32(pa1, pa2);
    hw = vpaddq_u32(hw, hw);
    vst1q_lane_u16(r1, vreinterpretq_u16_u32(hw), 0);
    vst1q_lane_u16(r2, vreinterpretq_u16_u32(hw), 2);
  }

  static inline std::uint16_t PatternBits(uint32x4_t pa) {
    return static_cast<std::uint16_t>(vaddvq_u32(pa));
  }

  // 4 values -> both sign masks, |r| added to acc (lane = channel % 4). The portable
  // formulas in 6 instructions instead of 8, bit for bit: fl(a - b) < 0 exactly when a < b
  // (IEEE subtraction is exact near zero, so a difference rounds to 0 only when a == b; no
  // flush-to-zero), so both signs are one compare (FCMGT), and |r| = |fl(vb - t1)| is one
  // FABD (rounding to nearest is symmetric: fl(|d|) = |fl(d)|).
  static inline void Bin4(float32x4_t v, float32x4_t t0, float32x4_t t1, float32x4_t* acc,
                          uint32x4_t* m1, uint32x4_t* m2) {
    *m1 = vcltq_f32(v, t0);
    const float32x4_t vb = vsubq_f32(v, vbslq_f32(*m1, vdupq_n_f32(-1.0f), vdupq_n_f32(1.0f)));
    *m2 = vcltq_f32(vb, t1);
    *acc = vaddq_f32(*acc, vabdq_f32(vb, t1));
  }

  // PReLU(z; slope) of 4 values. kMax: max(z, slope * z), 2 instructions instead of 3 and the
  // same bits as z < 0 ? z * slope : z wherever Layer::MaxPreluExact holds (every slope <= 1,
  // so that slope * z is on the right side of z, and z never -0).
  template <bool kMax>
  static inline float32x4_t PRelu4(float32x4_t z, float32x4_t slope) {
    if (kMax) return vmaxq_f32(z, vmulq_f32(z, slope));
    return vbslq_f32(vcltzq_f32(z), vmulq_f32(z, slope), z);
  }

  // The end of a binarized row: channels n4..n-1 (scalar, portable formulas) joined with the
  // pattern of the unfinished 16-channel chunk, that chunk and the pad chunks stored, and the
  // frame's scale from the 4-lane |r| sums.
  static void FinishRow(const float* v, int n, const float* t0, const float* t1, float32x4_t acc,
                        uint32x4_t pa1, uint32x4_t pa2, std::uint16_t* r1, std::uint16_t* r2,
                        float* s) {
    const int n4 = n & ~3, words = PaddedWords64(n);
    float a[4];
    vst1q_f32(a, acc);
    std::uint16_t h1 = 0, h2 = 0;
    if ((n4 & 15) != 0) {
      h1 = PatternBits(pa1);
      h2 = PatternBits(pa2);
    }
    for (int c = n4; c < n; ++c) {
      const bool neg1 = v[c] - t0[c] < 0.0f;
      const float r = (v[c] - (neg1 ? -1.0f : 1.0f)) - t1[c];
      a[c & 3] += std::fabs(r);
      h1 = static_cast<std::uint16_t>(h1 | (neg1 ? 1u << (c & 15) : 0u));
      h2 = static_cast<std::uint16_t>(h2 | (r < 0.0f ? 1u << (c & 15) : 0u));
    }
    int q = n4 >> 4;
    if ((n & 15) != 0) {
      r1[q] = h1;
      r2[q] = h2;
      ++q;
    }
    for (; q < 4 * words; ++q) r1[q] = r2[q] = 0;
    *s = ((a[0] + a[1]) + (a[2] + a[3])) / static_cast<float>(n);
  }

  static const std::uint32_t* BitValues() {
    static const std::uint32_t kBit[16] = {1u << 0,  1u << 1,  1u << 2,  1u << 3,
                                           1u << 4,  1u << 5,  1u << 6,  1u << 7,
                                           1u << 8,  1u << 9,  1u << 10, 1u << 11,
                                           1u << 12, 1u << 13, 1u << 14, 1u << 15};
    return kBit;
  }

  // Four frames per pass (t0 / t1 loaded once for all; a short last pass repeats its last
  // frame and stores nothing for the copies).
  static void BinarizeNeon(const float* v, int frames, int n, const float* t0,
                           const float* t1, std::uint64_t* b1, std::uint64_t* b2, float* s) {
    if (n % 16 == 0) return BinarizeNeonT<true>(v, frames, n, t0, t1, b1, b2, s);
    BinarizeNeonT<false>(v, frames, n, t0, t1, b1, b2, s);
  }

  // kFull: n % 16 == 0 (no checks in the loop)
  template <bool kFull>
  static void BinarizeNeonT(const float* v, int frames, int n, const float* t0,
                            const float* t1, std::uint64_t* b1, std::uint64_t* b2, float* s) {
    constexpr int NF = 2;
    const int words = PaddedWords64(n), n4 = n & ~3;
    const std::uint32_t* bits = BitValues();
    const uint32x4_t cb0 = vld1q_u32(bits), cb1 = vld1q_u32(bits + 4), cb2 = vld1q_u32(bits + 8),
                     cb3 = vld1q_u32(bits + 12);
    for (int t = 0; t < frames; t += NF) {
      const int valid = frames - t < NF ? frames - t : NF;
      const float* row[NF];
      std::uint16_t* r1[NF];
      std::uint16_t* r2[NF];
#pragma GCC unroll 4
      for (int f = 0; f < NF; ++f) {
        const int tf = t + (f < valid ? f : valid - 1);
        row[f] = v + static_cast<std::size_t>(tf) * n;
        r1[f] = reinterpret_cast<std::uint16_t*>(b1 + static_cast<std::size_t>(tf) * words);
        r2[f] = reinterpret_cast<std::uint16_t*>(b2 + static_cast<std::size_t>(tf) * words);
      }
      float32x4_t acc[NF];
      uint32x4_t pa1[NF], pa2[NF];
#pragma GCC unroll 4
      for (int f = 0; f < NF; ++f) {
        acc[f] = vdupq_n_f32(0.0f);
        pa1[f] = pa2[f] = vdupq_n_u32(0);
      }
      for (int c16 = 0; c16 < n4; c16 += 16) {
#pragma GCC unroll 4
        for (int q4 = 0; q4 < 4; ++q4) {
          const int c = c16 + 4 * q4;
          if (!kFull && c >= n4) break;
          const uint32x4_t cb = q4 == 0 ? cb0 : q4 == 1 ? cb1 : q4 == 2 ? cb2 : cb3;
          const float32x4_t tq0 = vld1q_f32(t0 + c), tq1 = vld1q_f32(t1 + c);
#pragma GCC unroll 4
          for (int f = 0; f < NF; ++f) {
            uint32x4_t m1, m2;
            Bin4(vld1q_f32(row[f] + c), tq0, tq1, &acc[f], &m1, &m2);
            pa1[f] = q4 == 0 ? vandq_u32(m1, cb) : vbslq_u32(cb, m1, pa1[f]);
            pa2[f] = q4 == 0 ? vandq_u32(m2, cb) : vbslq_u32(cb, m2, pa2[f]);
            if (q4 == 3 && f < valid) FlushBits(pa1[f], pa2[f], r1[f] + (c >> 4), r2[f] + (c >> 4));
          }
        }
      }
      for (int f = 0; f < valid; ++f)
        FinishRow(row[f], n, t0, t1, acc[f], pa1[f], pa2[f], r1[f], r2[f], s + t + f);
    }
  }

  struct SignTable {
    std::uint32_t v[5][32];
  };
  static SignTable MakeSignTable() {
    SignTable t{};
    for (unsigned i = 0; i < 5; ++i)
      for (unsigned e = 0; e < 32; ++e) t.v[i][e] = ((e >> i) & 1u) << 31;
    return t;
  }

  // Memory block, one frame at a time, fused with the pw1 binarization of m (all frames
  // with at most 5 valid taps; MemoryNeon otherwise). Per 128 channels the taps' XOR words
  // are q registers; per 16 channels and tap one TBL spreads the tap's two bytes over 16 byte
  // lanes, CMTST tests each lane's bit: plane 1 counts (byte SUB), plane 2 builds the 5-bit
  // code of each channel (BIT). S2 is a lookup (4 TBL + 8 ZIP) in a 32-entry table per frame
  // built by exactly the portable additions (entry e: S2 = 0; for the valid taps i in k
  // order: S2 += bit_i(e) ? -s : s), stored as 4 byte planes; W from Layer::mem_tw_.
  // NV: the frame's number of valid taps.
  template <int NV, bool kFull, bool kMax>
  static void MemoryFrameNeon(const Layer& L, const float* x, const std::uint64_t* b1,
                              const std::uint64_t* b2, const float* s, int t, const int* ks,
                              const int* taus, float* m, std::uint64_t* nb1, std::uint64_t* nb2,
                              float* ns) {
    static const SignTable kSign = MakeSignTable();
    static const std::uint8_t kSel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    static const std::uint8_t kSpread[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    const int C = L.c_, wc = L.wc_, C4 = C & ~3;
    const uint8x16_t sel = vld1q_u8(kSel), two = vdupq_n_u8(2);
    const std::uint32_t* bits = BitValues();
    const float *mul = L.mem_mul_.data(), *bias = L.mem_bias_.data(), *slope = L.mem_slope_.data(),
                *pt0 = L.pw1_t0_.data(), *pt1 = L.pw1_t1_.data(), *mpk = L.mem_pk_.data();
    // the S2 table, 32 floats (8 vectors: entries 4v..4v+3), by exactly the portable
    // additions: ((((0 + e0) + e1) + e2) + e3) + e4 with e_i = +-s of tap i. e0 and e1 vary
    // within a vector (lane bits 0, 1), e2..e4 per vector (v's bits 0..2): the common prefix
    // is computed once and the table grows as a tree (2 + 2 + 4 + 8 additions for 5 taps).
    float32x4_t tab[8];
    {
      float32x4_t pre = vdupq_n_f32(0.0f);
      if (NV >= 1)
        pre = vaddq_f32(pre, vreinterpretq_f32_u32(veorq_u32(
                                 vreinterpretq_u32_f32(vdupq_n_f32(s[taus[0]])),
                                 vld1q_u32(kSign.v[0]))));
      if (NV >= 2)
        pre = vaddq_f32(pre, vreinterpretq_f32_u32(veorq_u32(
                                 vreinterpretq_u32_f32(vdupq_n_f32(s[taus[1]])),
                                 vld1q_u32(kSign.v[1]))));
      tab[0] = pre;
      int have = 1;
#pragma GCC unroll 3
      for (int i = 2; i < 5; ++i, have *= 2) {
        if (i < NV) {
          const float32x4_t sp = vdupq_n_f32(s[taus[i]]), sn = vnegq_f32(sp);
#pragma GCC unroll 4
          for (int v = have - 1; v >= 0; --v) {  // descending: tab[v] is read before written
            tab[v + have] = vaddq_f32(tab[v], sn);
            tab[v] = vaddq_f32(tab[v], sp);
          }
        } else {
#pragma GCC unroll 4
          for (int v = 0; v < have; ++v) tab[v + have] = tab[v];  // codes never reach these
        }
      }
    }
    uint8x16x2_t plane[4];
#pragma GCC unroll 2
    for (int hh = 0; hh < 2; ++hh) {  // entries 16 hh .. 16 hh + 15
      const uint8x16_t a0 = vreinterpretq_u8_f32(tab[4 * hh]);
      const uint8x16_t a1 = vreinterpretq_u8_f32(tab[4 * hh + 1]);
      const uint8x16_t a2 = vreinterpretq_u8_f32(tab[4 * hh + 2]);
      const uint8x16_t a3 = vreinterpretq_u8_f32(tab[4 * hh + 3]);
      const uint8x16_t e01 = vuzp1q_u8(a0, a1), o01 = vuzp2q_u8(a0, a1);
      const uint8x16_t e23 = vuzp1q_u8(a2, a3), o23 = vuzp2q_u8(a2, a3);
      plane[0].val[hh] = vuzp1q_u8(e01, e23);
      plane[2].val[hh] = vuzp2q_u8(e01, e23);
      plane[1].val[hh] = vuzp1q_u8(o01, o23);
      plane[3].val[hh] = vuzp2q_u8(o01, o23);
    }
    const float* tw = L.MemTw(ks[0], ks[NV - 1] + 1);
    const float* xr = x + static_cast<std::size_t>(t) * C;
    float* mr = m + static_cast<std::size_t>(t) * C;
    std::uint16_t* r1 = reinterpret_cast<std::uint16_t*>(nb1 + static_cast<std::size_t>(t) * wc);
    std::uint16_t* r2 = reinterpret_cast<std::uint16_t*>(nb2 + static_cast<std::size_t>(t) * wc);
    const std::uint8_t* wrow[5];
    const std::uint8_t* a1row[5];
    const std::uint8_t* a2row[5];
#pragma GCC unroll 5
    for (int i = 0; i < NV; ++i) {
      wrow[i] = reinterpret_cast<const std::uint8_t*>(L.mem_w_.data() +
                                                      static_cast<std::size_t>(ks[i]) * wc);
      a1row[i] = reinterpret_cast<const std::uint8_t*>(b1 + static_cast<std::size_t>(taus[i]) * wc);
      a2row[i] = reinterpret_cast<const std::uint8_t*>(b2 + static_cast<std::size_t>(taus[i]) * wc);
    }
    float32x4_t acc = vdupq_n_f32(0.0f);
    uint32x4_t pa1 = vdupq_n_u32(0), pa2 = pa1;
    const uint32x4_t cb0 = vld1q_u32(bits), cb1 = vld1q_u32(bits + 4), cb2 = vld1q_u32(bits + 8),
                     cb3 = vld1q_u32(bits + 12);
    for (int j = 0; 128 * j < C4; ++j) {  // 128 channels per pass
      const int chunks = (C4 - 128 * j) >= 128 ? 8 : (C4 - 128 * j + 15) / 16;  // kFull: whole
      // pass A: per 16 channels, D1 (bytes) and the 5-bit S2 code; the taps' XOR words are
      // live only here. n1 (bits of XOR plane 1 over the taps) is counted bit-sliced on the
      // 128-channel words first (full adders: sum = a ^ b ^ c, carry = BSL(a ^ b, c, a)).
      uint8x16_t d1s[8], codes[8];
      {
        uint8x16_t x2[5], c0 = vdupq_n_u8(0), c1 = c0, c2 = c0;
        uint8x16_t x1[5];
#pragma GCC unroll 5
        for (int i = 0; i < NV; ++i) {
          const uint8x16_t wq = vld1q_u8(wrow[i] + 16 * j);
          x1[i] = veorq_u8(wq, vld1q_u8(a1row[i] + 16 * j));
          x2[i] = veorq_u8(wq, vld1q_u8(a2row[i] + 16 * j));
        }
        // count planes c0 (1s), c1 (2s), c2 (4s) of x1[0..NV)
        if (NV == 1) {
          c0 = x1[0];
        } else if (NV == 2) {
          c0 = veorq_u8(x1[0], x1[1]);
          c1 = vandq_u8(x1[0], x1[1]);
        } else {
          const uint8x16_t e01 = veorq_u8(x1[0], x1[1]);
          const uint8x16_t sa = veorq_u8(e01, x1[2]), ca = vbslq_u8(e01, x1[2], x1[0]);
          if (NV == 3) {
            c0 = sa;
            c1 = ca;
          } else {
            uint8x16_t cb;
            if (NV == 4) {
              c0 = veorq_u8(sa, x1[3]);
              cb = vandq_u8(sa, x1[3]);
            } else {
              const uint8x16_t u = veorq_u8(sa, x1[3]);
              c0 = veorq_u8(u, x1[4]);
              cb = vbslq_u8(u, x1[4], sa);
            }
            c1 = veorq_u8(ca, cb);
            c2 = vandq_u8(ca, cb);
          }
        }
        uint8x16_t idx = vld1q_u8(kSpread);
#pragma GCC unroll 8
        for (int g = 0; g < 8; ++g) {
          if (g < chunks) {
            // n1 = 1 * bit(c0) + 2 * bit(c1) + 4 * bit(c2); D1 = nv - 2 n1
            uint8x16_t n1 = vandq_u8(vtstq_u8(vqtbl1q_u8(c0, idx), sel), vdupq_n_u8(1));
            if (NV >= 2) n1 = vbslq_u8(vdupq_n_u8(2), vtstq_u8(vqtbl1q_u8(c1, idx), sel), n1);
            if (NV >= 4) n1 = vbslq_u8(vdupq_n_u8(4), vtstq_u8(vqtbl1q_u8(c2, idx), sel), n1);
            d1s[g] = vsubq_u8(vdupq_n_u8(static_cast<std::uint8_t>(NV)), vshlq_n_u8(n1, 1));
            uint8x16_t code = vandq_u8(vtstq_u8(vqtbl1q_u8(x2[0], idx), sel), vdupq_n_u8(1));
#pragma GCC unroll 5
            for (int i = 1; i < NV; ++i)
              code = vbslq_u8(vdupq_n_u8(static_cast<std::uint8_t>(1u << i)),
                              vtstq_u8(vqtbl1q_u8(x2[i], idx), sel), code);
            codes[g] = code;
            idx = vaddq_u8(idx, two);
          }
        }
      }
      // pass B: S2 from the table's byte planes, then per 4 channels m, and the fused pw1
      // binarization of m
      for (int g = 0; g < chunks; ++g) {
        const int c0 = 128 * j + 16 * g;
        const int8x16_t d1b = vreinterpretq_s8_u8(d1s[g]);
        const int16x8_t d1lo = vmovl_s8(vget_low_s8(d1b)), d1hi = vmovl_high_s8(d1b);
        const float32x4_t d1f[4] = {vcvtq_f32_s32(vmovl_s16(vget_low_s16(d1lo))),
                                    vcvtq_f32_s32(vmovl_high_s16(d1lo)),
                                    vcvtq_f32_s32(vmovl_s16(vget_low_s16(d1hi))),
                                    vcvtq_f32_s32(vmovl_high_s16(d1hi))};
        const uint8x16_t code = codes[g];
        const uint8x16_t p0 = vqtbl2q_u8(plane[0], code), p1 = vqtbl2q_u8(plane[1], code);
        const uint8x16_t p2 = vqtbl2q_u8(plane[2], code), p3 = vqtbl2q_u8(plane[3], code);
        const uint16x8_t h01l = vreinterpretq_u16_u8(vzip1q_u8(p0, p1));
        const uint16x8_t h01h = vreinterpretq_u16_u8(vzip2q_u8(p0, p1));
        const uint16x8_t h23l = vreinterpretq_u16_u8(vzip1q_u8(p2, p3));
        const uint16x8_t h23h = vreinterpretq_u16_u8(vzip2q_u8(p2, p3));
        const float32x4_t s2[4] = {vreinterpretq_f32_u16(vzip1q_u16(h01l, h23l)),
                                   vreinterpretq_f32_u16(vzip2q_u16(h01l, h23l)),
                                   vreinterpretq_f32_u16(vzip1q_u16(h01h, h23h)),
                                   vreinterpretq_f32_u16(vzip2q_u16(h01h, h23h))};
#pragma GCC unroll 4
        for (int q4 = 0; q4 < 4; ++q4) {
          const int c = c0 + 4 * q4;
          if (!kFull && c >= C4) break;
          // packed parameters (Layer::mem_pk_): mul, bias, slope, pw1 t0 | pw1 t1
          const float32x4x4_t pk = vld1q_f32_x4(mpk + 5 * c);
          float32x4_t z = vsubq_f32(vaddq_f32(d1f[q4], s2[q4]), vld1q_f32(tw + c));
          z = vaddq_f32(vmulq_f32(z, pk.val[0]), pk.val[1]);
          const float32x4_t p = PRelu4<kMax>(z, pk.val[2]);
          const float32x4_t mv = vaddq_f32(vld1q_f32(xr + c), p);
          vst1q_f32(mr + c, mv);
          uint32x4_t m1, m2;
          Bin4(mv, pk.val[3], vld1q_f32(mpk + 5 * c + 16), &acc, &m1, &m2);
          const uint32x4_t cb = q4 == 0 ? cb0 : q4 == 1 ? cb1 : q4 == 2 ? cb2 : cb3;
          pa1 = q4 == 0 ? vandq_u32(m1, cb) : vbslq_u32(cb, m1, pa1);
          pa2 = q4 == 0 ? vandq_u32(m2, cb) : vbslq_u32(cb, m2, pa2);
          if (q4 == 3) FlushBits(pa1, pa2, r1 + (c >> 4), r2 + (c >> 4));
        }
      }
    }
    // channels C4..C-1: scalar (the portable formulas), then the end of the pw1 bit row
    for (int c = C4; c < C; ++c) {
      int n1 = 0;
      float s2 = 0.0f;
      for (int i = 0; i < NV; ++i) {
        const std::uint64_t wb = L.mem_w_[static_cast<std::size_t>(ks[i]) * wc + c / 64];
        const std::size_t ai = static_cast<std::size_t>(taus[i]) * wc + c / 64;
        n1 += static_cast<int>(((wb ^ b1[ai]) >> (c % 64)) & 1u);
        const float st = s[taus[i]];
        s2 += (((wb ^ b2[ai]) >> (c % 64)) & 1u) ? -st : st;
      }
      float z = (static_cast<float>(NV - 2 * n1) + s2) - tw[c];
      z = z * mul[c] + bias[c];
      mr[c] = xr[c] + PRelu(z, slope[c]);
    }
    FinishRow(mr, C, pt0, pt1, acc, pa1, pa2, r1, r2, ns + t);
  }

  static bool MemoryTableNeon(const Layer& L, const float* x, const std::uint64_t* b1,
                              const std::uint64_t* b2, const float* s, int frames, float* m,
                              std::uint64_t* nb1, std::uint64_t* nb2, float* ns) {
    const int K = L.taps();
    if (L.mem_tw_.empty()) return false;
    int ks[kMaxTaps], taus[kMaxTaps];
    // the valid taps of frame t are taps - (left cut) - (right cut); at most 5 everywhere?
    for (int t = 0; t < frames; ++t)
      if (ValidTaps(t, frames, K, L.l_, L.dil_, ks, taus) > 5) return false;
    if (L.mem_max_) return MemoryTableFrames<true>(L, x, b1, b2, s, frames, m, nb1, nb2, ns);
    return MemoryTableFrames<false>(L, x, b1, b2, s, frames, m, nb1, nb2, ns);
  }

  template <bool kFull, bool kMax>
  static void MemoryFrameNv(int nv, const Layer& L, const float* x, const std::uint64_t* b1,
                            const std::uint64_t* b2, const float* s, int t, const int* ks,
                            const int* taus, float* m, std::uint64_t* nb1, std::uint64_t* nb2,
                            float* ns) {
    switch (nv) {
      case 1: return MemoryFrameNeon<1, kFull, kMax>(L, x, b1, b2, s, t, ks, taus, m, nb1, nb2, ns);
      case 2: return MemoryFrameNeon<2, kFull, kMax>(L, x, b1, b2, s, t, ks, taus, m, nb1, nb2, ns);
      case 3: return MemoryFrameNeon<3, kFull, kMax>(L, x, b1, b2, s, t, ks, taus, m, nb1, nb2, ns);
      case 4: return MemoryFrameNeon<4, kFull, kMax>(L, x, b1, b2, s, t, ks, taus, m, nb1, nb2, ns);
      default: return MemoryFrameNeon<5, kFull, kMax>(L, x, b1, b2, s, t, ks, taus, m, nb1, nb2, ns);
    }
  }

  template <bool kMax>
  static bool MemoryTableFrames(const Layer& L, const float* x, const std::uint64_t* b1,
                                const std::uint64_t* b2, const float* s, int frames, float* m,
                                std::uint64_t* nb1, std::uint64_t* nb2, float* ns) {
    int ks[kMaxTaps], taus[kMaxTaps];
    const int K = L.taps();
    const bool full = L.c_ % 16 == 0;
    for (int t = 0; t < frames; ++t) {
      const int nv = ValidTaps(t, frames, K, L.l_, L.dil_, ks, taus);
      if (full) {  // C % 16 == 0: no tail checks, whatever the frame's taps
        MemoryFrameNv<true, kMax>(nv, L, x, b1, b2, s, t, ks, taus, m, nb1, nb2, ns);
      } else {
        MemoryFrameNv<false, kMax>(nv, L, x, b1, b2, s, t, ks, taus, m, nb1, nb2, ns);
      }
    }
    return true;
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
      const float st = kCounts ? 0.0f : s[t];
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
  // ---- NEON pointwise GEMM (fused post-processing and next binarization) ----
  // Byte counts of 4 weight rows x 2 frames x 2 bit planes (a[2f + p]: frame f's plane p+1
  // activation q-words), reduced by pairwise adds (ADDP) shared across the rows, frames and
  // planes: per 128 weight bits and plane one EOR, one CNT and (about) one ADDP.
  //   NQ 1 (K <= 128): 4 byte levels, every byte <= 128: h = {frame 0: plane-1 counts of
  //        rows 0..3, plane-2 counts; frame 1: the same}.
  //   NQ 2 (K <= 256): 3 byte levels (<= 128), then widening pairwise adds: n[f] = u16x8
  //        {plane-1 counts of rows 0..3, plane-2 counts}.
  //   other widths: 16-bit accumulation (UADALP) over the q-words, 16-bit pairwise adds: n[f].
  struct Counts4 {
    uint8x16_t h;
    uint16x8_t n[2];
  };

  template <int NQ>
  static inline Counts4 Counts4x2(const std::uint8_t* const* w, const uint8x16_t* aq,
                                  const std::uint8_t* const* a, int nq) {
    Counts4 c;
    if (NQ == 1) {
      const uint8x16_t k0 = vld1q_u8(w[0]), k1 = vld1q_u8(w[1]), k2 = vld1q_u8(w[2]),
                       k3 = vld1q_u8(w[3]);
      uint8x16_t g[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const uint8x16_t e01 =
            vpaddq_u8(vcntq_u8(veorq_u8(k0, aq[i])), vcntq_u8(veorq_u8(k1, aq[i])));
        const uint8x16_t e23 =
            vpaddq_u8(vcntq_u8(veorq_u8(k2, aq[i])), vcntq_u8(veorq_u8(k3, aq[i])));
        g[i] = vpaddq_u8(e01, e23);
      }
      c.h = vpaddq_u8(vpaddq_u8(g[0], g[1]), vpaddq_u8(g[2], g[3]));
    } else if (NQ == 2) {
      const uint8x16_t k00 = vld1q_u8(w[0]), k01 = vld1q_u8(w[0] + 16);
      const uint8x16_t k10 = vld1q_u8(w[1]), k11 = vld1q_u8(w[1] + 16);
      const uint8x16_t k20 = vld1q_u8(w[2]), k21 = vld1q_u8(w[2] + 16);
      const uint8x16_t k30 = vld1q_u8(w[3]), k31 = vld1q_u8(w[3] + 16);
      uint8x16_t g[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const uint8x16_t x0 = aq[2 * i], x1 = aq[2 * i + 1];
        const uint8x16_t c0 = vaddq_u8(vcntq_u8(veorq_u8(k00, x0)), vcntq_u8(veorq_u8(k01, x1)));
        const uint8x16_t c1 = vaddq_u8(vcntq_u8(veorq_u8(k10, x0)), vcntq_u8(veorq_u8(k11, x1)));
        const uint8x16_t c2 = vaddq_u8(vcntq_u8(veorq_u8(k20, x0)), vcntq_u8(veorq_u8(k21, x1)));
        const uint8x16_t c3 = vaddq_u8(vcntq_u8(veorq_u8(k30, x0)), vcntq_u8(veorq_u8(k31, x1)));
        g[i] = vpaddq_u8(vpaddq_u8(c0, c1), vpaddq_u8(c2, c3));
      }
      c.n[0] = vpaddlq_u8(vpaddq_u8(g[0], g[1]));
      c.n[1] = vpaddlq_u8(vpaddq_u8(g[2], g[3]));
    } else {
      uint16x8_t acc[4][4];
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) acc[r][i] = vdupq_n_u16(0);
      for (int q = 0; q < nq; ++q) {
        uint8x16_t x[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) x[i] = vld1q_u8(a[i] + 16 * q);
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
          const uint8x16_t k = vld1q_u8(w[r] + 16 * q);
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i)
            acc[r][i] = vpadalq_u8(acc[r][i], vcntq_u8(veorq_u8(k, x[i])));
        }
      }
      uint16x8_t g[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i)
        g[i] = vpaddq_u16(vpaddq_u16(acc[0][i], acc[1][i]), vpaddq_u16(acc[2][i], acc[3][i]));
      c.n[0] = vpaddq_u16(g[0], g[1]);
      c.n[1] = vpaddq_u16(g[2], g[3]);
    }
    return c;
  }

  // P1 = K - 2 n1, P2 = K - 2 n2 of frame f (4 rows each), as int32 (exact). k16: K in every
  // 16-bit lane, or for NQ 1 in every byte.
  template <int NQ, bool kWide>
  static inline void Ps(const Counts4& c, int f, int16x8_t k16, uint32x4_t kv, int32x4_t* p1,
                        int32x4_t* p2) {
    if (NQ == 1) {  // K <= 128: (K - n) - n, the first difference in bytes (both frames)
      const uint8x16_t kmn = vsubq_u8(vreinterpretq_u8_s16(k16), c.h);
      const int16x8_t p = vreinterpretq_s16_u16(f == 0 ? vsubl_u8(vget_low_u8(kmn), vget_low_u8(c.h))
                                                       : vsubl_high_u8(kmn, c.h));
      *p1 = vmovl_s16(vget_low_s16(p));
      *p2 = vmovl_high_s16(p);
    } else if (!kWide) {  // K < 2^15: 16-bit arithmetic
      const int16x8_t p = vsubq_s16(k16, vreinterpretq_s16_u16(vshlq_n_u16(c.n[f], 1)));
      *p1 = vmovl_s16(vget_low_s16(p));
      *p2 = vmovl_high_s16(p);
    } else {
      *p1 = vreinterpretq_s32_u32(vsubq_u32(kv, vshlq_n_u32(vmovl_u16(vget_low_u16(c.n[f])), 1)));
      *p2 = vreinterpretq_s32_u32(vsubq_u32(kv, vshlq_n_u32(vmovl_high_u16(c.n[f]), 1)));
    }
  }

  // Frames t0, t1 (t1 may repeat t0: store1 false) x all O outputs: the 4-row blocks of
  // Counts4x2 (16 rows = 4 blocks per pass of the unrolled inner loop), then per frame P1,
  // P2, the dual scale, folded BN, PReLU, residual, store and (kNext) the next stage's
  // binarization of the 4 fresh outputs: |r| into the 4-lane sums (channel order), sign bits
  // into a 16-channel pattern, one halfword per plane per 16 outputs. Rows past the last
  // multiple of 4: one by one, scalar (the portable formulas).
  template <int NQ, bool kWide, bool kCounts, bool kNext, bool kRes, bool kFull, bool kKeep,
            bool kMax>
  static void PointwisePairNeon(const PwArgs& args, const std::uint64_t* w, int t0, int t1,
                                bool store1) {
    const PwArgs a = args;  // a local copy: its fields are not reloaded after every store
    const int O = a.O, W = a.W, nq = W / 2, nW = PaddedWords64(O), O4 = O & ~3;
    const int tf[2] = {t0, t1};
    // kFull: O % 16 == 0 and both frames real (no checks in the loop)
    const bool store[2] = {true, kFull || store1};
    const bool keep = kKeep && a.out != nullptr;  // pw1 may skip h (Workspace::keep_h)
    const std::uint8_t* act[4];
#pragma GCC unroll 4
    for (int f = 0; f < 2; ++f) {
      const std::size_t row = static_cast<std::size_t>(tf[f]) * W;
      act[2 * f] = reinterpret_cast<const std::uint8_t*>(a.b1 + row);
      act[2 * f + 1] = reinterpret_cast<const std::uint8_t*>(a.b2 + row);
    }
    uint8x16_t aq[8];  // NQ 1 / 2: the activation q-words, loaded once
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      if (NQ >= 1) aq[NQ * i] = vld1q_u8(act[i]);
      if (NQ == 2) aq[NQ * i + 1] = vld1q_u8(act[i] + 16);
    }
    // K in every 16-bit lane (NQ 2 / other narrow K), or in every byte (NQ 1: K <= 128)
    const int16x8_t k16 = NQ == 1 ? vreinterpretq_s16_u8(vdupq_n_u8(static_cast<std::uint8_t>(a.K)))
                                  : vdupq_n_s16(static_cast<std::int16_t>(kWide ? 0 : a.K));
    const uint32x4_t kv = vdupq_n_u32(static_cast<std::uint32_t>(a.K));
    const float32x4_t zero = vdupq_n_f32(0.0f);
    const float32x4_t stv = {kCounts ? 0.0f : a.s[t0], kCounts ? 0.0f : a.s[t1], 0.0f, 0.0f};
    static const std::uint32_t kBit[16] = {1u << 0,  1u << 1,  1u << 2,  1u << 3,
                                           1u << 4,  1u << 5,  1u << 6,  1u << 7,
                                           1u << 8,  1u << 9,  1u << 10, 1u << 11,
                                           1u << 12, 1u << 13, 1u << 14, 1u << 15};
    float32x4_t acc0 = zero, acc1 = zero;
    uint32x4_t pa1[2] = {vdupq_n_u32(0), vdupq_n_u32(0)}, pa2[2] = {pa1[0], pa1[0]};
    std::uint16_t* nr1[2] = {nullptr, nullptr};
    std::uint16_t* nr2[2] = {nullptr, nullptr};
    if (kNext) {
#pragma GCC unroll 4
      for (int f = 0; f < 2; ++f) {
        nr1[f] = reinterpret_cast<std::uint16_t*>(a.nb1 + static_cast<std::size_t>(tf[f]) * nW);
        nr2[f] = reinterpret_cast<std::uint16_t*>(a.nb2 + static_cast<std::size_t>(tf[f]) * nW);
      }
    }
    for (int o16 = 0; o16 < O4; o16 += 16) {
#pragma GCC unroll 4
      for (int q4 = 0; q4 < 4; ++q4) {
        const int o = o16 + 4 * q4;
        if (!kFull && o >= O4) break;
        const std::uint8_t* wr[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r)
          wr[r] = reinterpret_cast<const std::uint8_t*>(w + static_cast<std::size_t>(o + r) * W);
        const Counts4 c = Counts4x2<NQ>(wr, aq, act, nq);
        float32x4_t mul = zero, bias = zero, slope = zero, nt0 = zero, nt1 = zero;
        if (kNext) {  // packed parameters (Layer::pw1_pk_): one 4-register load + one
          const float32x4x4_t pk = vld1q_f32_x4(a.pk + 5 * o);
          mul = pk.val[0];
          bias = pk.val[1];
          slope = pk.val[2];
          nt0 = pk.val[3];
          nt1 = vld1q_f32(a.pk + 5 * o + 16);
        } else if (!kCounts) {  // Layer::pw2_pk_
          const float32x4x3_t pk = vld1q_f32_x3(a.pk + 3 * o);
          mul = pk.val[0];
          bias = pk.val[1];
          slope = pk.val[2];
        }
        const uint32x4_t cb = vld1q_u32(kBit + 4 * q4);
#pragma GCC unroll 4
        for (int f = 0; f < 2; ++f) {
          int32x4_t p1, p2;
          Ps<NQ, kWide>(c, f, k16, kv, &p1, &p2);
          const std::size_t idx = static_cast<std::size_t>(tf[f]) * O + o;
          if (kCounts) {
            if (store[f]) {
              vst1q_s32(a.p1o + idx, p1);
              vst1q_s32(a.p2o + idx, p2);
            }
            continue;
          }
          const float32x4_t p2s = f == 0 ? vmulq_laneq_f32(vcvtq_f32_s32(p2), stv, 0)
                                         : vmulq_laneq_f32(vcvtq_f32_s32(p2), stv, 1);
          float32x4_t z = vaddq_f32(vcvtq_f32_s32(p1), p2s);
          z = vaddq_f32(vmulq_f32(z, mul), bias);
          float32x4_t p = PRelu4<kMax>(z, slope);
          if (kRes) p = vaddq_f32(vld1q_f32(a.res + idx), p);
          if (store[f] && (kRes || keep)) vst1q_f32(a.out + idx, p);
          if (kNext) {  // the next stage's binarization of the 4 fresh outputs
            uint32x4_t m1, m2;
            Bin4(p, nt0, nt1, f == 0 ? &acc0 : &acc1, &m1, &m2);
            pa1[f] = q4 == 0 ? vandq_u32(m1, cb) : vbslq_u32(cb, m1, pa1[f]);
            pa2[f] = q4 == 0 ? vandq_u32(m2, cb) : vbslq_u32(cb, m2, pa2[f]);
            if (q4 == 3 && store[f]) {  // 16 channels done: one halfword per plane
              uint32x4_t hw = vpaddq_u32(pa1[f], pa2[f]);
              hw = vpaddq_u32(hw, hw);
              vst1q_lane_u16(nr1[f] + (o >> 4), vreinterpretq_u16_u32(hw), 0);
              vst1q_lane_u16(nr2[f] + (o >> 4), vreinterpretq_u16_u32(hw), 2);
            }
          }
        }
      }
    }
    if (kCounts && O4 == O) return;
    // rows O4..O-1 one by one, and the partial last 16-channel chunk
    std::uint16_t part1[2] = {0, 0}, part2[2] = {0, 0};
    if (kNext && (O4 & 15) != 0) {
#pragma GCC unroll 4
      for (int f = 0; f < 2; ++f) {
        uint32x4_t hw = vpaddq_u32(pa1[f], pa2[f]);
        hw = vpaddq_u32(hw, hw);
        part1[f] = vgetq_lane_u16(vreinterpretq_u16_u32(hw), 0);
        part2[f] = vgetq_lane_u16(vreinterpretq_u16_u32(hw), 2);
      }
    }
    for (int f = 0; f < 2; ++f) {
      float sa[4];
      vst1q_f32(sa, f == 0 ? acc0 : acc1);
      const float st = kCounts ? 0.0f : a.s[tf[f]];
      const std::uint64_t* a1 = a.b1 + static_cast<std::size_t>(tf[f]) * W;
      const std::uint64_t* a2 = a.b2 + static_cast<std::size_t>(tf[f]) * W;
      for (int o = O4; o < O; ++o) {
        const std::uint64_t* wr = w + static_cast<std::size_t>(o) * W;
        int c1 = 0, c2 = 0;
        for (int j = 0; j < W; ++j) {
          c1 += __builtin_popcountll(wr[j] ^ a1[j]);
          c2 += __builtin_popcountll(wr[j] ^ a2[j]);
        }
        const int p1 = a.K - 2 * c1, p2 = a.K - 2 * c2;
        const std::size_t idx = static_cast<std::size_t>(tf[f]) * O + o;
        if (kCounts) {
          if (store[f]) {
            a.p1o[idx] = p1;
            a.p2o[idx] = p2;
          }
          continue;
        }
        const float z =
            (static_cast<float>(p1) + st * static_cast<float>(p2)) * a.mul[o] + a.bias[o];
        float p = PRelu(z, a.slope[o]);
        if (kRes) p = a.res[idx] + p;
        if (store[f] && (kRes || keep)) a.out[idx] = p;
        if (kNext) {
          const bool neg1 = p - a.nt0[o] < 0.0f;
          const float r = (p - (neg1 ? -1.0f : 1.0f)) - a.nt1[o];
          sa[o & 3] += std::fabs(r);
          part1[f] = static_cast<std::uint16_t>(part1[f] | (neg1 ? 1u << (o & 15) : 0u));
          part2[f] = static_cast<std::uint16_t>(part2[f] | (r < 0.0f ? 1u << (o & 15) : 0u));
        }
      }
      if (kNext && store[f]) {
        int q = O4 >> 4;
        if ((O & 15) != 0) {  // the partial chunk
          nr1[f][q] = part1[f];
          nr2[f][q] = part2[f];
          ++q;
        }
        for (; q < 4 * nW; ++q) nr1[f][q] = nr2[f][q] = 0;  // pad chunks
        a.ns[tf[f]] = ((sa[0] + sa[1]) + (sa[2] + sa[3])) / static_cast<float>(O);
      }
    }
  }

  template <int NQ, bool kWide, bool kCounts, bool kNext, bool kRes, bool kMax>
  static void PointwiseNeonT(const PwArgs& a, const std::uint64_t* w, int frames) {
    const bool full = a.O % 16 == 0;
    for (int t = 0; t < frames; t += 2) {
      const bool two = t + 1 < frames;
      if (full && two && a.out == nullptr) {  // the op's pw1: nothing but the next bits
        PointwisePairNeon<NQ, kWide, kCounts, kNext, kRes, true, false, kMax>(a, w, t, t + 1, true);
      } else if (full && two) {
        PointwisePairNeon<NQ, kWide, kCounts, kNext, kRes, true, true, kMax>(a, w, t, t + 1, true);
      } else {
        PointwisePairNeon<NQ, kWide, kCounts, kNext, kRes, false, true, kMax>(a, w, t, two ? t + 1 : t,
                                                                          two);
      }
    }
  }

  template <bool kCounts, bool kNext, bool kRes, bool kMax>
  static void PointwiseNeonQM(const PwArgs& a, const std::uint64_t* w, int frames) {
    const int nq = a.W / 2;
    if (nq == 1) return PointwiseNeonT<1, false, kCounts, kNext, kRes, kMax>(a, w, frames);
    if (nq == 2) return PointwiseNeonT<2, false, kCounts, kNext, kRes, kMax>(a, w, frames);
    if (a.K < (1 << 15)) return PointwiseNeonT<0, false, kCounts, kNext, kRes, kMax>(a, w, frames);
    PointwiseNeonT<0, true, kCounts, kNext, kRes, kMax>(a, w, frames);
  }

  template <bool kCounts, bool kNext, bool kRes>
  static void PointwiseNeonQ(const PwArgs& a, const std::uint64_t* w, int frames) {
    if (!kCounts && a.max_prelu) return PointwiseNeonQM<kCounts, kNext, kRes, true>(a, w, frames);
    PointwiseNeonQM<kCounts, kNext, kRes, false>(a, w, frames);
  }

  // Dispatch on what the pass does: counts only, pw1 (next binarization), pw2 (residual).
  static void PointwiseNeon2(const PwArgs& a, const std::uint64_t* w, int frames) {
    if (a.p1o != nullptr) return PointwiseNeonQ<true, false, false>(a, w, frames);
    if (a.nb1 != nullptr && a.res == nullptr)
      return PointwiseNeonQ<false, true, false>(a, w, frames);
    if (a.nb1 == nullptr && a.res != nullptr)
      return PointwiseNeonQ<false, false, true>(a, w, frames);
    if (a.nb1 == nullptr) return PointwiseNeonQ<false, false, false>(a, w, frames);
    PointwiseNeonQ<false, true, true>(a, w, frames);
  }
#endif  // LCE_KERNELS_HAVE_NEON

#if LCE_KERNELS_HAVE_AVX512
// GCC 12's AVX-512 intrinsics fill "don't care" operands with _mm512_undefined_*(), which
// -Wmaybe-uninitialized flags inside the compiler's own headers (GCC bug 105593); the
// warning is silenced for this block only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
  // ---------------- AVX-512 (x86-64, run-time dispatch) ----------------
  // Compiled with function-level target attributes: the rest of the library needs no
  // AVX-512 flags, and these functions only run when HasAvx512() says so. Frames are
  // processed in blocks of 4 (a short last block re-reads its last frame and stores
  // nothing for the missing ones), so that the |r| sums of 4 frames share one register:
  // lanes 4f..4f+3 hold frame f's four partial sums (acc[c % 4] of the portable order).
  static inline __mmask16 TailMask(int lanes) { return simd::TailMask16(lanes); }

  // Dual-scale binarization of 16 lanes (the portable formulas): sign masks of both planes
  // and |r| (0 in lanes outside km).
  struct Bin16 {
    __mmask16 m1, m2;
    __m512 ar;
  };
  BDFSMN_AVX512 static inline Bin16 Binarize16(__m512 v, __m512 t0, __m512 t1, __mmask16 km) {
    const __m512 zero = _mm512_setzero_ps();
    Bin16 o;
    o.m1 = _mm512_mask_cmp_ps_mask(km, _mm512_sub_ps(v, t0), zero, _CMP_LT_OQ);
    const __m512 b = _mm512_mask_blend_ps(o.m1, _mm512_set1_ps(1.0f), _mm512_set1_ps(-1.0f));
    const __m512 r = _mm512_sub_ps(_mm512_sub_ps(v, b), t1);
    o.m2 = _mm512_mask_cmp_ps_mask(km, r, zero, _CMP_LT_OQ);
    o.ar = _mm512_castsi512_ps(_mm512_maskz_and_epi32(km, _mm512_castps_si512(r),
                                                      _mm512_set1_epi32(0x7fffffff)));
    return o;
  }

  // acc += |r| of 16 channels c..c+15 of 4 frames, in the portable order: a 4x4 transpose of
  // 128-bit quarters, then quarter q (channels c+4q..c+4q+3 of every frame) is added, q
  // ascending, so acc lane 4f+i sums channels = i (mod 4) of frame f in channel order.
  BDFSMN_AVX512 static inline __m512 AddAbs4(__m512 acc, __m512 a0, __m512 a1, __m512 a2,
                                             __m512 a3) {
    const __m512 t0 = _mm512_shuffle_f32x4(a0, a1, 0x44);  // a0.q0 a0.q1 a1.q0 a1.q1
    const __m512 t1 = _mm512_shuffle_f32x4(a0, a1, 0xEE);  // a0.q2 a0.q3 a1.q2 a1.q3
    const __m512 t2 = _mm512_shuffle_f32x4(a2, a3, 0x44);
    const __m512 t3 = _mm512_shuffle_f32x4(a2, a3, 0xEE);
    acc = _mm512_add_ps(acc, _mm512_shuffle_f32x4(t0, t2, 0x88));  // q0 of a0 a1 a2 a3
    acc = _mm512_add_ps(acc, _mm512_shuffle_f32x4(t0, t2, 0xDD));  // q1
    acc = _mm512_add_ps(acc, _mm512_shuffle_f32x4(t1, t3, 0x88));  // q2
    acc = _mm512_add_ps(acc, _mm512_shuffle_f32x4(t1, t3, 0xDD));  // q3
    return acc;
  }

  // s[f] = ((a0 + a1) + (a2 + a3)) / n for the frames f < valid of a 4-frame accumulator.
  BDFSMN_AVX512 static inline void Scales4(__m512 acc, int n, float* s, int valid) {
    const __m512 p = _mm512_add_ps(acc, _mm512_permute_ps(acc, 0xB1));  // a0+a1, _, a2+a3, _
    const __m512 q = _mm512_add_ps(p, _mm512_permute_ps(p, 0x4E));      // (a0+a1)+(a2+a3)
    alignas(64) float v[16];
    _mm512_store_ps(v, _mm512_div_ps(q, _mm512_set1_ps(static_cast<float>(n))));
    for (int f = 0; f < valid; ++f) s[f] = v[4 * f];
  }

  // 16-bit chunk q of a bit row (little endian: bits 16q..16q+15 of the 64-bit row).
  static inline void PutChunk(std::uint64_t* row, int q, __mmask16 m) {
    reinterpret_cast<std::uint16_t*>(row)[q] = static_cast<std::uint16_t>(m);
  }
  static inline void ZeroChunks(std::uint64_t* row, int from, int words64) {
    auto* h = reinterpret_cast<std::uint16_t*>(row);
    for (int q = from; q < 4 * words64; ++q) h[q] = 0;
  }

  // 128-bit lane g of a zmm (g a constant once the caller's loop is unrolled).
  BDFSMN_AVX512 static inline __m128i Lane128(__m512i v, int g) {
    switch (g) {
      case 0: return _mm512_castsi512_si128(v);
      case 1: return _mm512_extracti32x4_epi32(v, 1);
      case 2: return _mm512_extracti32x4_epi32(v, 2);
      default: return _mm512_extracti32x4_epi32(v, 3);
    }
  }

  static inline int Valid(int frames, int t, int nf) {
    return frames - t < nf ? frames - t : nf;
  }

  // G groups of 4 frames per pass (G accumulators: independent add chains).
  template <int G>
  BDFSMN_AVX512 static void BinarizeBlockAvx512(const float* v, int t, int frames, int n,
                                                const float* t0, const float* t1,
                                                std::uint64_t* b1, std::uint64_t* b2,
                                                float* s) {
    constexpr int NF = 4 * G;
    const int words = PaddedWords64(n), chunks = (n + 15) / 16, valid = Valid(frames, t, NF);
    const float* row[NF];
#pragma GCC unroll 16
    for (int f = 0; f < NF; ++f)
      row[f] = v + static_cast<std::size_t>(t + (f < valid ? f : valid - 1)) * n;
    __m512 acc[G];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) acc[g] = _mm512_setzero_ps();
    for (int q = 0; q < chunks; ++q) {
      const int c = 16 * q;
      const __mmask16 km = TailMask(n - c);
      const __m512 t0v = _mm512_maskz_loadu_ps(km, t0 + c);
      const __m512 t1v = _mm512_maskz_loadu_ps(km, t1 + c);
  #pragma GCC unroll 16
      for (int g = 0; g < G; ++g) {
        __m512 ar[4];
    #pragma GCC unroll 16
        for (int i = 0; i < 4; ++i) {
          const int f = 4 * g + i;
          const Bin16 b = Binarize16(_mm512_maskz_loadu_ps(km, row[f] + c), t0v, t1v, km);
          ar[i] = b.ar;
          if (f < valid) {
            PutChunk(b1 + static_cast<std::size_t>(t + f) * words, q, b.m1);
            PutChunk(b2 + static_cast<std::size_t>(t + f) * words, q, b.m2);
          }
        }
        acc[g] = AddAbs4(acc[g], ar[0], ar[1], ar[2], ar[3]);
      }
    }
    for (int f = 0; f < valid; ++f) {
      ZeroChunks(b1 + static_cast<std::size_t>(t + f) * words, chunks, words);
      ZeroChunks(b2 + static_cast<std::size_t>(t + f) * words, chunks, words);
    }
    for (int g = 0; g < G && 4 * g < valid; ++g)
      Scales4(acc[g], n, s + t + 4 * g, Valid(valid, 4 * g, 4));
  }

  BDFSMN_AVX512 static void BinarizeAvx512(const float* v, int frames, int n, const float* t0,
                                           const float* t1, std::uint64_t* b1,
                                           std::uint64_t* b2, float* s) {
    int t = 0;
    for (; t + 8 <= frames; t += 8) BinarizeBlockAvx512<2>(v, t, frames, n, t0, t1, b1, b2, s);
    for (; t < frames; t += 4) BinarizeBlockAvx512<1>(v, t, frames, n, t0, t1, b1, b2, s);
  }

  // Memory block. Per frame and 64-channel word, the taps' bit words are counted into byte
  // lanes with mask-register adds (vpaddb under a 64-bit mask): n1 (plane 1 XOR weights) and,
  // when the frame has at most 5 valid taps, the 5-bit code of its plane-2 signs; S2 is then
  // a lookup (vpermt2ps) in a 32-entry table built per frame by exactly the portable
  // additions (entry e: S2 = 0; for the valid taps i in k order: S2 += bit_i(e) ? -s : s), so
  // S2 is bit-identical. More taps: S2 summed per 16 channels, k ascending. The W term:
  // Layer::mem_tw_ (t2 * W per window of valid taps, from Init) or the prefix counts.
  // kCounts: d1 / ws / s2 out (MemoryCounts); else m = x + PReLU(...) and, fused, the pw1
  // binarization of m: bits, |r| into the rows `rabs` (4 frames), summed per 4 frames after.
  struct MemArgs {
    const Layer* L;
    const float* x;
    const std::uint64_t *b1, *b2;
    const float* s;
    int frames;
    float* m;
    std::int32_t *d1o, *wso;
    float* s2o;
    std::uint64_t *nb1, *nb2;
    float* ns;
    float* rabs;  // [4][Round16(C)] scratch (fused binarization)
  };

  static constexpr int kTableTaps = 5;

  // NFR frames tf[0..NFR) of the memory block, interleaved (independent dependency chains);
  // |r| of the fused binarization into rabs[fr] (unless kCounts); nothing stored for frames
  // with !store[fr] (padding frames of a short 4-frame pass). kFast: C % 16 == 0 and the W
  // term from Layer::mem_tw_ (no tail masks, one load). kTable: every frame has at most
  // kTableTaps valid taps.
  template <bool kCounts, bool kTable, bool kFast, int NFR>
  BDFSMN_AVX512 static void MemoryFramesAvx512(const MemArgs& args, const int* tf,
                                               const bool* store, float* const* rabs) {
    const MemArgs a = args;  // a local copy: its fields are not reloaded after every store
    const Layer& L = *a.L;
    const int C = L.c_, wc = L.wc_, Cp = Round16(C);
    static const __mmask16 kLo[kTableTaps] = {0xAAAA, 0xCCCC, 0xF0F0, 0xFF00, 0x0000};
    static const __mmask16 kHi[kTableTaps] = {0xAAAA, 0xCCCC, 0xF0F0, 0xFF00, 0xFFFF};
    const __m512 zero = _mm512_setzero_ps();
    const __m512i ones8 = _mm512_set1_epi8(1);
    __m512i bits8[kTableTaps];
    for (int i = 0; i < kTableTaps; ++i) bits8[i] = _mm512_set1_epi8(static_cast<char>(1 << i));
    const float *t2 = L.mem_t2_.data(), *mul = L.mem_mul_.data(), *bias = L.mem_bias_.data(),
                *slope = L.mem_slope_.data(), *pt0 = L.pw1_t0_.data(), *pt1 = L.pw1_t1_.data();
    int nv[NFR];
    __m512i nvv[NFR];
    const std::uint64_t* wr[NFR][kMaxTaps];
    const std::uint64_t* r1[NFR][kMaxTaps];
    const std::uint64_t* r2[NFR][kMaxTaps];
    float st[NFR][kMaxTaps];
    __m512 tlo[NFR], thi[NFR];
    const float* tw[NFR];
    const std::int32_t *wlo[NFR], *whi[NFR];
    const float* x[NFR];
    float* m[NFR];
    std::uint64_t *o1[NFR], *o2[NFR];
#pragma GCC unroll 4
    for (int fr = 0; fr < NFR; ++fr) {
      int ks[kMaxTaps], taus[kMaxTaps];
      nv[fr] = ValidTaps(tf[fr], a.frames, L.taps(), L.l_, L.dil_, ks, taus);
      nvv[fr] = _mm512_set1_epi32(nv[fr]);
      tlo[fr] = thi[fr] = zero;
      for (int i = 0; i < nv[fr]; ++i) {
        wr[fr][i] = L.mem_w_.data() + static_cast<std::size_t>(ks[i]) * wc;
        r1[fr][i] = a.b1 + static_cast<std::size_t>(taus[i]) * wc;
        r2[fr][i] = a.b2 + static_cast<std::size_t>(taus[i]) * wc;
        st[fr][i] = a.s[taus[i]];
        if (kTable) {
          const __m512 sp = _mm512_set1_ps(st[fr][i]), sn = _mm512_set1_ps(-st[fr][i]);
          tlo[fr] = _mm512_add_ps(tlo[fr], _mm512_mask_blend_ps(kLo[i], sp, sn));
          thi[fr] = _mm512_add_ps(thi[fr], _mm512_mask_blend_ps(kHi[i], sp, sn));
        }
      }
      const int klo = ks[0], khi = ks[nv[fr] - 1] + 1;
      tw[fr] = kFast ? L.MemTw(klo, khi) : nullptr;
      wlo[fr] = L.mem_wpre_.data() + static_cast<std::size_t>(klo) * Cp;
      whi[fr] = L.mem_wpre_.data() + static_cast<std::size_t>(khi) * Cp;
      x[fr] = kCounts ? nullptr : a.x + static_cast<std::size_t>(tf[fr]) * C;
      m[fr] = kCounts ? nullptr : a.m + static_cast<std::size_t>(tf[fr]) * C;
      o1[fr] = kCounts ? nullptr : a.nb1 + static_cast<std::size_t>(tf[fr]) * wc;
      o2[fr] = kCounts ? nullptr : a.nb2 + static_cast<std::size_t>(tf[fr]) * wc;
    }
    for (int j = 0; 64 * j < C; ++j) {
      __m512i n1b[NFR], cdb[NFR];
      std::uint64_t x2s[NFR][kMaxTaps];
#pragma GCC unroll 4
      for (int fr = 0; fr < NFR; ++fr) {
        n1b[fr] = cdb[fr] = _mm512_setzero_si512();
        for (int i = 0; i < nv[fr]; ++i) {
          const std::uint64_t wb = wr[fr][i][j];
          n1b[fr] =
              _mm512_mask_add_epi8(n1b[fr], _cvtu64_mask64(wb ^ r1[fr][i][j]), n1b[fr], ones8);
          x2s[fr][i] = wb ^ r2[fr][i][j];
          if (kTable)
            cdb[fr] = _mm512_mask_add_epi8(cdb[fr], _cvtu64_mask64(x2s[fr][i]), cdb[fr], bits8[i]);
        }
      }
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        const int c0 = 64 * j + 16 * g;
        if (c0 >= C) break;
        const __mmask16 km = kFast ? static_cast<__mmask16>(0xFFFF) : TailMask(C - c0);
#pragma GCC unroll 4
        for (int fr = 0; fr < NFR; ++fr) {
          const __m512i d1 = _mm512_sub_epi32(
              nvv[fr], _mm512_slli_epi32(_mm512_cvtepu8_epi32(Lane128(n1b[fr], g)), 1));
          __m512 s2;
          if (kTable) {
            s2 = _mm512_permutex2var_ps(tlo[fr], _mm512_cvtepu8_epi32(Lane128(cdb[fr], g)),
                                        thi[fr]);
          } else {
            s2 = zero;
            for (int i = 0; i < nv[fr]; ++i)
              s2 = _mm512_add_ps(
                  s2, _mm512_mask_blend_ps(static_cast<__mmask16>(x2s[fr][i] >> (16 * g)),
                                           _mm512_set1_ps(st[fr][i]), _mm512_set1_ps(-st[fr][i])));
          }
          __m512 t2w;  // t2 * float(W)
          __m512i ws = _mm512_setzero_si512();
          if (kFast) {
            t2w = _mm512_loadu_ps(tw[fr] + c0);
          } else {
            const __m512i nw = _mm512_sub_epi32(_mm512_loadu_si512(whi[fr] + c0),
                                                _mm512_loadu_si512(wlo[fr] + c0));
            ws = _mm512_sub_epi32(nvv[fr], _mm512_slli_epi32(nw, 1));
            t2w = _mm512_mul_ps(_mm512_loadu_ps(t2 + c0), _mm512_cvtepi32_ps(ws));
          }
          if (kCounts) {
            if (store[fr]) {
              const std::size_t idx = static_cast<std::size_t>(tf[fr]) * C + c0;
              _mm512_mask_storeu_epi32(a.d1o + idx, km, d1);
              _mm512_mask_storeu_epi32(a.wso + idx, km, ws);
              _mm512_mask_storeu_ps(a.s2o + idx, km, s2);
            }
            continue;
          }
          // parameter vectors are padded to a multiple of 16 by Layer::Init
          __m512 z = _mm512_sub_ps(_mm512_add_ps(_mm512_cvtepi32_ps(d1), s2), t2w);
          z = _mm512_add_ps(_mm512_mul_ps(z, _mm512_loadu_ps(mul + c0)),
                            _mm512_loadu_ps(bias + c0));
          const __mmask16 neg = _mm512_cmp_ps_mask(z, zero, _CMP_LT_OQ);
          const __m512 p = _mm512_mask_mul_ps(z, neg, z, _mm512_loadu_ps(slope + c0));
          const __m512 xv =
              kFast ? _mm512_loadu_ps(x[fr] + c0) : _mm512_maskz_loadu_ps(km, x[fr] + c0);
          const __m512 mv = _mm512_add_ps(xv, p);
          const Bin16 b =
              Binarize16(mv, _mm512_loadu_ps(pt0 + c0), _mm512_loadu_ps(pt1 + c0), km);
          _mm512_storeu_ps(rabs[fr] + c0, b.ar);
          if (store[fr]) {
            if (kFast) {
              _mm512_storeu_ps(m[fr] + c0, mv);
            } else {
              _mm512_mask_storeu_ps(m[fr] + c0, km, mv);
            }
            PutChunk(o1[fr], c0 / 16, b.m1);
            PutChunk(o2[fr], c0 / 16, b.m2);
          }
        }
      }
    }
    if (!kCounts) {
      for (int fr = 0; fr < NFR; ++fr) {
        if (!store[fr]) continue;
        ZeroChunks(o1[fr], (C + 15) / 16, wc);
        ZeroChunks(o2[fr], (C + 15) / 16, wc);
      }
    }
  }

  // The |r| rows of 4 frames (row stride ld, n channels, zero beyond n up to a multiple of
  // 16) -> their scales, in the portable order.
  BDFSMN_AVX512 static void ScalesFromRows4(const float* rabs, int ld, int n, float* s,
                                            int valid) {
    __m512 acc = _mm512_setzero_ps();
    for (int c = 0; c < n; c += 16)
      acc = AddAbs4(acc, _mm512_loadu_ps(rabs + c), _mm512_loadu_ps(rabs + ld + c),
                    _mm512_loadu_ps(rabs + 2 * ld + c), _mm512_loadu_ps(rabs + 3 * ld + c));
    Scales4(acc, n, s, valid);
  }

  template <bool kCounts>
  BDFSMN_AVX512 static void MemoryAvx512(const Layer& L, const float* x,
                                         const std::uint64_t* b1, const std::uint64_t* b2,
                                         const float* s, int frames, float* m,
                                         std::int32_t* d1o, std::int32_t* wso, float* s2o,
                                         std::uint64_t* nb1, std::uint64_t* nb2, float* ns,
                                         float* rabs) {
    const MemArgs a{&L, x, b1, b2, s, frames, m, d1o, wso, s2o, nb1, nb2, ns, rabs};
    const int ld = Round16(L.c_);
    const bool fast = !kCounts && L.c_ % 16 == 0 && !L.mem_tw_.empty();
    for (int t = 0; t < frames; t += 4) {
      const int valid = Valid(frames, t, 4);
      // two frames per call (4 in the pass; padding frames repeat the last valid one)
      for (int f = 0; f < 4; f += 2) {
        int tf[2];
        bool store[2], table = true;
        float* rows[2];
        for (int q = 0; q < 2; ++q) {
          tf[q] = t + (f + q < valid ? f + q : valid - 1);
          store[q] = f + q < valid;
          rows[q] = kCounts ? nullptr : rabs + static_cast<std::size_t>(f + q) * ld;
          int ks[kMaxTaps], taus[kMaxTaps];
          table = table && ValidTaps(tf[q], frames, L.taps(), L.l_, L.dil_, ks, taus) <= kTableTaps;
        }
        if (kCounts && !store[0]) break;
        if (table && fast) {
          MemoryFramesAvx512<kCounts, true, true, 2>(a, tf, store, rows);
        } else if (table) {
          MemoryFramesAvx512<kCounts, true, false, 2>(a, tf, store, rows);
        } else {
          MemoryFramesAvx512<kCounts, false, false, 2>(a, tf, store, rows);
        }
      }
      if (!kCounts) ScalesFromRows4(rabs, ld, L.c_, ns + t, valid);
    }
  }



  // 4G frames x 16 outputs per step: the 16-output column of transposed weight words is
  // loaded once per input word and XORed with the broadcast activation word of every frame
  // and both bit planes (8G accumulators in registers); then, per frame, P1/P2, the dual
  // scale, folded BN, PReLU, residual, store and (fused) the next layer stage's binarization
  // of the 16 fresh outputs, 16 lanes wide.
  template <bool kCounts, int G>
  BDFSMN_AVX512 static void PointwiseBlockAvx512(const PwArgs& args, int t, int frames) {
    constexpr int NF = 4 * G;
    const PwArgs a = args;  // a local copy: its fields are not reloaded after every store
    const int valid = Valid(frames, t, NF), Op = Round16(a.O), kw = PackedWords32(a.K);
    const int nW = PaddedWords64(a.O), chunks = (a.O + 15) / 16;
    const bool next = !kCounts && a.nb1 != nullptr;
    const std::uint32_t* a1[NF];
    const std::uint32_t* a2[NF];
    int tf[NF];
#pragma GCC unroll 16
    for (int f = 0; f < NF; ++f) {
      tf[f] = t + (f < valid ? f : valid - 1);
      a1[f] = reinterpret_cast<const std::uint32_t*>(a.b1 + static_cast<std::size_t>(tf[f]) * a.W);
      a2[f] = reinterpret_cast<const std::uint32_t*>(a.b2 + static_cast<std::size_t>(tf[f]) * a.W);
    }
    const __m512 zero = _mm512_setzero_ps();
    const __m512i kv = _mm512_set1_epi32(a.K);
    const __m512 kf = _mm512_set1_ps(static_cast<float>(a.K)), mtwo = _mm512_set1_ps(-2.0f);
    __m512 sacc[G];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) sacc[g] = zero;
    for (int ob = 0; ob < a.O; ob += 16) {
      __m512i c1[NF], c2[NF];
#pragma GCC unroll 16
      for (int f = 0; f < NF; ++f) c1[f] = c2[f] = _mm512_setzero_si512();
      const std::uint32_t* wcol = a.wt + ob;
      for (int j = 0; j < kw; ++j) {
        const __m512i w = _mm512_loadu_si512(wcol + static_cast<std::size_t>(j) * Op);
#pragma GCC unroll 16
        for (int f = 0; f < NF; ++f) {
          c1[f] = _mm512_add_epi32(c1[f], _mm512_popcnt_epi32(_mm512_xor_si512(
                                              w, _mm512_set1_epi32(static_cast<int>(a1[f][j])))));
          c2[f] = _mm512_add_epi32(c2[f], _mm512_popcnt_epi32(_mm512_xor_si512(
                                              w, _mm512_set1_epi32(static_cast<int>(a2[f][j])))));
        }
      }
      const __mmask16 km = TailMask(a.O - ob);
      if (kCounts) {
        for (int f = 0; f < valid; ++f) {
          const std::size_t idx = static_cast<std::size_t>(tf[f]) * a.O + ob;
          _mm512_mask_storeu_epi32(a.p1o + idx, km,
                                   _mm512_sub_epi32(kv, _mm512_slli_epi32(c1[f], 1)));
          _mm512_mask_storeu_epi32(a.p2o + idx, km,
                                   _mm512_sub_epi32(kv, _mm512_slli_epi32(c2[f], 1)));
        }
        continue;
      }
      // parameter vectors are padded to a multiple of 16 by Layer::Init
      const __m512 mul = _mm512_loadu_ps(a.mul + ob), bias = _mm512_loadu_ps(a.bias + ob),
                   slope = _mm512_loadu_ps(a.slope + ob);
      const __m512 nt0 = next ? _mm512_loadu_ps(a.nt0 + ob) : zero;
      const __m512 nt1 = next ? _mm512_loadu_ps(a.nt1 + ob) : zero;
#pragma GCC unroll 16
      for (int g = 0; g < G; ++g) {
        __m512 ar[4];
#pragma GCC unroll 16
        for (int i = 0; i < 4; ++i) {
          const int f = 4 * g + i;
          // float(K - 2 * count): the fused multiply-add is exact (integers below 2^24)
          const __m512 p1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c1[f]), mtwo, kf);
          const __m512 p2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c2[f]), mtwo, kf);
          __m512 z = _mm512_add_ps(p1, _mm512_mul_ps(_mm512_set1_ps(a.s[tf[f]]), p2));
          z = _mm512_add_ps(_mm512_mul_ps(z, mul), bias);
          const __mmask16 neg = _mm512_cmp_ps_mask(z, zero, _CMP_LT_OQ);
          __m512 p = _mm512_mask_mul_ps(z, neg, z, slope);
          const std::size_t idx = static_cast<std::size_t>(tf[f]) * a.O + ob;
          if (a.res != nullptr) p = _mm512_add_ps(_mm512_maskz_loadu_ps(km, a.res + idx), p);
          if (f < valid && a.out != nullptr) _mm512_mask_storeu_ps(a.out + idx, km, p);
          ar[i] = zero;
          if (next) {
            const Bin16 b = Binarize16(p, nt0, nt1, km);
            ar[i] = b.ar;
            if (f < valid) {
              PutChunk(a.nb1 + static_cast<std::size_t>(tf[f]) * nW, ob / 16, b.m1);
              PutChunk(a.nb2 + static_cast<std::size_t>(tf[f]) * nW, ob / 16, b.m2);
            }
          }
        }
        if (next) sacc[g] = AddAbs4(sacc[g], ar[0], ar[1], ar[2], ar[3]);
      }
    }
    if (next) {
      for (int f = 0; f < valid; ++f) {
        ZeroChunks(a.nb1 + static_cast<std::size_t>(t + f) * nW, chunks, nW);
        ZeroChunks(a.nb2 + static_cast<std::size_t>(t + f) * nW, chunks, nW);
      }
      for (int g = 0; g < G && 4 * g < valid; ++g)
        Scales4(sacc[g], a.O, a.ns + t + 4 * g, Valid(valid, 4 * g, 4));
    }
  }

  template <bool kCounts>
  BDFSMN_AVX512 static void PointwiseAvx512(const PwArgs& a, int frames) {
    int t = 0;
    for (; t + 8 <= frames; t += 8) PointwiseBlockAvx512<kCounts, 2>(a, t, frames);
    for (; t < frames; t += 4) PointwiseBlockAvx512<kCounts, 1>(a, t, frames);
  }

#pragma GCC diagnostic pop
#endif  // LCE_KERNELS_HAVE_AVX512

  // ---------------- streaming memory block (Layer::EvalStream) ----------------
  // ws->a rows [0, S) hold the state; writes a of the T new frames into rows [S, S + T) and
  // m [T][C]. The float order of bdfsmn.h (EvalStream) on every path: a = (v1 + v2) - t2
  // with v1 = +-1 and v2 = +-s from the signs of d = x - t0 and r = (x - v1) - t1 (Binarize's
  // own float ops, so the same signs), acc = sum of the taps' sign-flipped a in k order
  // (first term assigned), z = acc * mul + bias, m = x + PReLU(z).
  static void StreamMemoryPortable(const Layer& L, const float* x, int frames, Workspace* ws) {
    const std::size_t C = static_cast<std::size_t>(L.c_), Cp = static_cast<std::size_t>(Round16(L.c_));
    const std::size_t S = static_cast<std::size_t>(L.state_frames());
    const int K = L.taps();
    float* A = ws->a.data();
    for (std::size_t t = 0; t < static_cast<std::size_t>(frames); ++t) {
      const float* xt = x + t * C;
      const float st = ws->mem_s[t];
      float* at = A + (S + t) * C;
      for (std::size_t c = 0; c < C; ++c) {
        const float v1 = xt[c] - L.mem_t0_[c] < 0.0f ? -1.0f : 1.0f;
        const float v2 = (xt[c] - v1) - L.mem_t1_[c] < 0.0f ? -st : st;
        at[c] = (v1 + v2) - L.mem_t2_[c];
      }
    }
    for (std::size_t t = 0; t < static_cast<std::size_t>(frames); ++t) {
      float* mt = ws->m.data() + t * C;
      const float* xt = x + t * C;
      for (int k = 0; k < K; ++k) {
        const float* src = A + (S + t - static_cast<std::size_t>((L.l_ - k) * L.dil_)) * C;
        const std::uint32_t* sg = L.mem_sgn_.data() + static_cast<std::size_t>(k) * Cp;
        for (std::size_t c = 0; c < C; ++c) {
          std::uint32_t u;
          std::memcpy(&u, src + c, 4);
          u ^= sg[c];
          float v;
          std::memcpy(&v, &u, 4);
          mt[c] = k == 0 ? v : mt[c] + v;
        }
      }
      for (std::size_t c = 0; c < C; ++c) {
        const float z = mt[c] * L.mem_mul_[c] + L.mem_bias_[c];
        mt[c] = xt[c] + PRelu(z, L.mem_slope_[c]);
      }
    }
  }

#if LCE_KERNELS_HAVE_NEON
  // The same, 4 channels per instruction (C % 4 == 0; the caller falls back otherwise): the
  // taps of 16 channels accumulated in 4 q registers (one LD1 of 4 registers per tap for a
  // and for the sign masks), 4 channels at a time for the rest. Every pointer is a local:
  // the build has -fno-strict-aliasing, so a store would otherwise reload the vectors' data
  // pointers from the Layer in every iteration.
  // a = (v1 + v2) - t2 of 4 channels: v1 = d < 0 ? -1 : 1 (d = x - t0), r = (x - v1) - t1,
  // v2 = r < 0 ? -s : s (sign bits set by XOR: exact)
  // a = (v1 + v2) - t2 of 4 channels, bit for bit the portable formulas: the signs by one
  // compare each (fl(a - b) < 0 exactly when a < b, see Bin4), v1 = +-1 and v2 = +-s selected
  // (svn = -s).
  static inline float32x4_t StreamA4(float32x4_t xv, float32x4_t t0, float32x4_t t1,
                                     float32x4_t t2, float32x4_t sv, float32x4_t svn) {
    const uint32x4_t n1 = vcltq_f32(xv, t0);
    const float32x4_t v1 = vbslq_f32(n1, vdupq_n_f32(-1.0f), vdupq_n_f32(1.0f));
    const float32x4_t v2 = vbslq_f32(vcltq_f32(vsubq_f32(xv, v1), t1), svn, sv);
    return vsubq_f32(vaddq_f32(v1, v2), t2);
  }

  static void StreamMemoryNeon(const Layer& L, const float* x, int frames, Workspace* ws) {
    const std::size_t C = static_cast<std::size_t>(L.c_), Cp = static_cast<std::size_t>(Round16(L.c_));
    const std::size_t S = static_cast<std::size_t>(L.state_frames());
    const std::size_t C16 = C & ~static_cast<std::size_t>(15);
    const int K = L.taps();
    float* const A = ws->a.data();
    float* const m = ws->m.data();
    const float* const ms = ws->mem_s.data();
    const float *const t0p = L.mem_t0_.data(), *const t1p = L.mem_t1_.data(),
                *const t2p = L.mem_t2_.data(), *const mulp = L.mem_mul_.data(),
                *const biasp = L.mem_bias_.data(), *const slopep = L.mem_slope_.data();
    const std::uint32_t* const sgn = L.mem_sgn_.data();
    const float32x4_t zero = vdupq_n_f32(0.0f);
    const float* src[kMaxTaps];
    for (std::size_t t = 0; t < static_cast<std::size_t>(frames); ++t) {
      const float* const xt = x + t * C;
      const float32x4_t sv = vdupq_n_f32(ms[t]), svn = vnegq_f32(sv);
      float* const at = A + (S + t) * C;
      float* const mt = m + t * C;
      for (std::size_t c = 0; c < C; c += 4)
        vst1q_f32(at + c, StreamA4(vld1q_f32(xt + c), vld1q_f32(t0p + c), vld1q_f32(t1p + c),
                                   vld1q_f32(t2p + c), sv, svn));
      for (int k = 0; k < K; ++k)
        src[k] = A + (S + t - static_cast<std::size_t>((L.l_ - k) * L.dil_)) * C;
      // z = acc * mul + bias; m = x + PReLU(z)
      auto post = [&](float32x4_t acc, std::size_t c) {
        const float32x4_t z = vaddq_f32(vmulq_f32(acc, vld1q_f32(mulp + c)), vld1q_f32(biasp + c));
        const float32x4_t zs = vmulq_f32(z, vld1q_f32(slopep + c));
        vst1q_f32(mt + c, vaddq_f32(vld1q_f32(xt + c), vbslq_f32(vcltq_f32(z, zero), zs, z)));
      };
      auto flip = [](float32x4_t v, uint32x4_t g) {
        return vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(v), g));
      };
      std::size_t c = 0;
      for (; c < C16; c += 16) {
        float32x4x4_t acc = vld1q_f32_x4(src[0] + c);
        const uint32x4x4_t g0 = vld1q_u32_x4(sgn + c);
        acc.val[0] = flip(acc.val[0], g0.val[0]);
        acc.val[1] = flip(acc.val[1], g0.val[1]);
        acc.val[2] = flip(acc.val[2], g0.val[2]);
        acc.val[3] = flip(acc.val[3], g0.val[3]);
        for (int k = 1; k < K; ++k) {
          const float32x4x4_t v = vld1q_f32_x4(src[k] + c);
          const uint32x4x4_t g = vld1q_u32_x4(sgn + static_cast<std::size_t>(k) * Cp + c);
          acc.val[0] = vaddq_f32(acc.val[0], flip(v.val[0], g.val[0]));
          acc.val[1] = vaddq_f32(acc.val[1], flip(v.val[1], g.val[1]));
          acc.val[2] = vaddq_f32(acc.val[2], flip(v.val[2], g.val[2]));
          acc.val[3] = vaddq_f32(acc.val[3], flip(v.val[3], g.val[3]));
        }
        post(acc.val[0], c);
        post(acc.val[1], c + 4);
        post(acc.val[2], c + 8);
        post(acc.val[3], c + 12);
      }
      for (; c < C; c += 4) {
        float32x4_t acc = flip(vld1q_f32(src[0] + c), vld1q_u32(sgn + c));
        for (int k = 1; k < K; ++k)
          acc = vaddq_f32(acc, flip(vld1q_f32(src[k] + c),
                                    vld1q_u32(sgn + static_cast<std::size_t>(k) * Cp + c)));
        post(acc, c);
      }
    }
  }

  // EvalStream's whole first part in one pass per frame (NEON, C % 16 == 0), replacing
  // Binarize(x) + StreamMemoryNeon + Binarize(m): the memory-block scale s of x from
  // BinarizeNeon's |r| sums (the same lanes in the same channel order, the same final
  // additions: the same s, and no bit planes, which the streaming memory block does not
  // read), then per 16 channels a = (v1 + v2) - t2 (stored: the state rows), the taps in k
  // order with the current frame's a from registers, z, m = x + PReLU(z) (stored: pw2's
  // residual) and pw1's binarization of m fused in (Bin4 / the patterns / FinishRow of
  // BinarizeNeon: the same bits and s). Every float operation is the one of the separate
  // passes, in the same order: the outputs are bit-identical (lce_ops_test's stream cases
  // compare every path with the portable one).
  static void StreamFusedNeon(const Layer& L, const float* x, int frames, const float* state,
                              Workspace* ws) {
    if (L.mem_max_) return StreamFusedNeonT<true>(L, x, frames, state, ws);
    StreamFusedNeonT<false>(L, x, frames, state, ws);
  }

  template <bool kMax>
  static void StreamFusedNeonT(const Layer& L, const float* x, int frames, const float* state,
                               Workspace* ws) {
    const std::size_t C = static_cast<std::size_t>(L.c_), Cp = static_cast<std::size_t>(Round16(L.c_));
    const std::size_t S = static_cast<std::size_t>(L.state_frames());
    const std::size_t words = static_cast<std::size_t>(L.wc_);
    const int K = L.taps();
    float* const A = ws->a.data();
    float* const m = ws->m.data();
    float* const ms = ws->mem_s.data();
    float* const ps = ws->pw1_s.data();
    std::uint64_t* const pb1 = ws->pw1_b1.data();
    std::uint64_t* const pb2 = ws->pw1_b2.data();
    const float *const t0p = L.mem_t0_.data(), *const t1p = L.mem_t1_.data(),
                *const t2p = L.mem_t2_.data(), *const mulp = L.mem_mul_.data(),
                *const biasp = L.mem_bias_.data(), *const slopep = L.mem_slope_.data(),
                *const q0p = L.pw1_t0_.data(), *const q1p = L.pw1_t1_.data();
    const std::uint32_t* const sgn = L.mem_sgn_.data();
    const std::uint32_t* const bits = BitValues();
    const uint32x4_t cb0 = vld1q_u32(bits), cb1 = vld1q_u32(bits + 4), cb2 = vld1q_u32(bits + 8),
                     cb3 = vld1q_u32(bits + 12);
    auto flip = [](float32x4_t v, uint32x4_t g) {
      return vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(v), g));
    };
    // s of every frame first: BinarizeNeonT's sums (lane = channel % 4, channel order; two
    // frames per pass sharing the threshold loads) and FinishRow's final additions
    for (std::size_t t = 0; t < static_cast<std::size_t>(frames); t += 2) {
      const bool two = t + 1 < static_cast<std::size_t>(frames);
      const float* const x0 = x + t * C;
      const float* const x1 = two ? x0 + C : x0;
      float32x4_t s0 = vdupq_n_f32(0.0f), s1 = vdupq_n_f32(0.0f);
      for (std::size_t c = 0; c < C; c += 4) {  // (the bit masks are not needed here)
        const float32x4_t tq0 = vld1q_f32(t0p + c), tq1 = vld1q_f32(t1p + c);
        uint32x4_t m1, m2;
        Bin4(vld1q_f32(x0 + c), tq0, tq1, &s0, &m1, &m2);
        Bin4(vld1q_f32(x1 + c), tq0, tq1, &s1, &m1, &m2);
      }
      float sa[4];
      vst1q_f32(sa, s0);
      ms[t] = ((sa[0] + sa[1]) + (sa[2] + sa[3])) / static_cast<float>(C);
      if (two) {
        vst1q_f32(sa, s1);
        ms[t + 1] = ((sa[0] + sa[1]) + (sa[2] + sa[3])) / static_cast<float>(C);
      }
    }
    const float* src[kMaxTaps];
    for (std::size_t t = 0; t < static_cast<std::size_t>(frames); ++t) {
      const float* const xt = x + t * C;
      const float32x4_t sv = vdupq_n_f32(ms[t]), svn = vnegq_f32(sv);
      float* const at = A + (S + t) * C;
      float* const mt = m + t * C;
      for (int k = 0; k < K; ++k) {  // row r of [state; a]: the state read in place
        const std::size_t r = S + t - static_cast<std::size_t>((L.l_ - k) * L.dil_);
        src[k] = r < S ? state + r * C : A + r * C;
      }
      std::uint16_t* const r1 = reinterpret_cast<std::uint16_t*>(pb1 + t * words);
      std::uint16_t* const r2 = reinterpret_cast<std::uint16_t*>(pb2 + t * words);
      const uint32_t* const gl = sgn + static_cast<std::size_t>(K - 1) * Cp;  // current frame's tap
      float32x4_t bacc = vdupq_n_f32(0.0f);
      uint32x4_t pa1 = vdupq_n_u32(0), pa2 = vdupq_n_u32(0);
      // a of 4 channels (StreamMemoryNeon's formulas)
      auto make_a = [&](std::size_t c) {
        return StreamA4(vld1q_f32(xt + c), vld1q_f32(t0p + c), vld1q_f32(t1p + c),
                        vld1q_f32(t2p + c), sv, svn);
      };
      // z = acc * mul + bias; m = x + PReLU(z), stored; pw1's Bin4 of m into the patterns
      auto post = [&](float32x4_t acc, std::size_t c, uint32x4_t cb, bool first) {
        const float32x4_t z = vaddq_f32(vmulq_f32(acc, vld1q_f32(mulp + c)), vld1q_f32(biasp + c));
        const float32x4_t mv = vaddq_f32(vld1q_f32(xt + c), PRelu4<kMax>(z, vld1q_f32(slopep + c)));
        vst1q_f32(mt + c, mv);
        uint32x4_t m1, m2;
        Bin4(mv, vld1q_f32(q0p + c), vld1q_f32(q1p + c), &bacc, &m1, &m2);
        pa1 = first ? vandq_u32(m1, cb) : vbslq_u32(cb, m1, pa1);
        pa2 = first ? vandq_u32(m2, cb) : vbslq_u32(cb, m2, pa2);
      };
      for (std::size_t c = 0; c < C; c += 16) {
        float32x4x4_t a;
        a.val[0] = make_a(c);
        a.val[1] = make_a(c + 4);
        a.val[2] = make_a(c + 8);
        a.val[3] = make_a(c + 12);
        vst1q_f32_x4(at + c, a);
        float32x4x4_t acc;
        if (K == 1) {
          acc = a;
        } else {
          acc = vld1q_f32_x4(src[0] + c);
        }
        const uint32x4x4_t g0 = vld1q_u32_x4(sgn + c);
        acc.val[0] = flip(acc.val[0], g0.val[0]);
        acc.val[1] = flip(acc.val[1], g0.val[1]);
        acc.val[2] = flip(acc.val[2], g0.val[2]);
        acc.val[3] = flip(acc.val[3], g0.val[3]);
        for (int k = 1; k < K - 1; ++k) {
          const float32x4x4_t v = vld1q_f32_x4(src[k] + c);
          const uint32x4x4_t g = vld1q_u32_x4(sgn + static_cast<std::size_t>(k) * Cp + c);
          acc.val[0] = vaddq_f32(acc.val[0], flip(v.val[0], g.val[0]));
          acc.val[1] = vaddq_f32(acc.val[1], flip(v.val[1], g.val[1]));
          acc.val[2] = vaddq_f32(acc.val[2], flip(v.val[2], g.val[2]));
          acc.val[3] = vaddq_f32(acc.val[3], flip(v.val[3], g.val[3]));
        }
        if (K > 1) {
          const uint32x4x4_t g = vld1q_u32_x4(gl + c);
          acc.val[0] = vaddq_f32(acc.val[0], flip(a.val[0], g.val[0]));
          acc.val[1] = vaddq_f32(acc.val[1], flip(a.val[1], g.val[1]));
          acc.val[2] = vaddq_f32(acc.val[2], flip(a.val[2], g.val[2]));
          acc.val[3] = vaddq_f32(acc.val[3], flip(a.val[3], g.val[3]));
        }
        post(acc.val[0], c, cb0, true);
        post(acc.val[1], c + 4, cb1, false);
        post(acc.val[2], c + 8, cb2, false);
        post(acc.val[3], c + 12, cb3, false);
        FlushBits(pa1, pa2, r1 + (c >> 4), r2 + (c >> 4));
      }
      FinishRow(mt, static_cast<int>(C), q0p, q1p, bacc, pa1, pa2, r1, r2, ps + t);
    }
  }
#endif

  static void StreamMemory(const Layer& L, const float* x, int frames, Workspace* ws, Path path) {
#if LCE_KERNELS_HAVE_NEON
    if (UseNeon(path) && L.c_ % 4 == 0) return StreamMemoryNeon(L, x, frames, ws);
#endif
    (void)path;
    StreamMemoryPortable(L, x, frames, ws);
  }

  // ---------------- dispatch ----------------
  static void Binarize(const float* v, int frames, int n, const float* t0, const float* t1,
                       std::uint64_t* b1, std::uint64_t* b2, float* s, Path path) {
#if LCE_KERNELS_HAVE_NEON
    if (UseNeon(path)) return BinarizeNeon(v, frames, n, t0, t1, b1, b2, s);
#endif
#if LCE_KERNELS_HAVE_AVX512
    if (UseAvx512(path)) return BinarizeAvx512(v, frames, n, t0, t1, b1, b2, s);
#endif
    (void)path;
    BinarizePortable(v, frames, n, t0, t1, b1, b2, s);
  }

  // Memory block accumulators (MemoryCounts).
  static void MemoryCounts(const Layer& L, const std::uint64_t* b1, const std::uint64_t* b2,
                           const float* s, int frames, std::int32_t* d1o, std::int32_t* wso,
                           float* s2o, Path path) {
#if LCE_KERNELS_HAVE_NEON
    if (UseNeon(path))
      return MemoryNeon<true>(L, nullptr, b1, b2, s, frames, nullptr, d1o, wso, s2o);
#endif
#if LCE_KERNELS_HAVE_AVX512
    if (UseAvx512(path))
      return MemoryAvx512<true>(L, nullptr, b1, b2, s, frames, nullptr, d1o, wso, s2o, nullptr,
                                nullptr, nullptr, nullptr);
#endif
    (void)path;
    MemoryPortable<true>(L, nullptr, b1, b2, s, frames, nullptr, d1o, wso, s2o);
  }

  // Pointwise accumulators (PointwiseCounts): which = 1 (pw1) or 2 (pw2).
  static void PointwiseCounts(const Layer& L, int which, const std::uint64_t* b1,
                              const std::uint64_t* b2, int frames, std::int32_t* p1o,
                              std::int32_t* p2o, Path path) {
    const std::uint64_t* w = which == 1 ? L.pw1_w_.data() : L.pw2_w_.data();
    const int O = which == 1 ? L.h_ : L.c_, K = which == 1 ? L.c_ : L.h_;
    const int W = which == 1 ? L.wc_ : L.wh_;
    PwArgs a{};
    a.O = O;
    a.K = K;
    a.W = W;
    a.b1 = b1;
    a.b2 = b2;
    a.p1o = p1o;
    a.p2o = p2o;
#if LCE_KERNELS_HAVE_NEON
    if (UseNeon(path)) return PointwiseNeon2(a, w, frames);
#endif
#if LCE_KERNELS_HAVE_AVX512
    const std::vector<std::uint32_t>& wt = which == 1 ? L.pw1_wt_ : L.pw2_wt_;
    if (UseAvx512(path) && !wt.empty()) {
      a.wt = wt.data();
      return PointwiseAvx512<true>(a, frames);
    }
#endif
    (void)path;
    PointwisePortable<true>(w, O, K, W, b1, b2, nullptr, frames, nullptr, nullptr, nullptr,
                            nullptr, nullptr, p1o, p2o);
  }

  // ---------------- the stages of Layer::Eval (Layer::EvalStage) ----------------
  // The pointwise passes of the stages over the workspace, for every optimized path (NEON reads
  // the rows of pw*_w_ and pk; AVX-512 sets its transposed weights wt). pw1: h from the pw1
  // bits of m, with the pw2 binarization of h fused (h itself kept only when something reads
  // it, Workspace::keep_h); pw2: out = m + the pw2 pass.
  static PwArgs Pw1Args(const Layer& L, Workspace* ws) {
    PwArgs a{};
    a.O = L.h_;
    a.K = L.c_;
    a.W = L.wc_;
    a.b1 = ws->pw1_b1.data();
    a.b2 = ws->pw1_b2.data();
    a.s = ws->pw1_s.data();
    a.mul = L.pw1_mul_.data();
    a.bias = L.pw1_bias_.data();
    a.slope = L.pw1_slope_.data();
    a.out = ws->keep_h ? ws->h.data() : nullptr;
    a.nt0 = L.pw2_t0_.data();
    a.nt1 = L.pw2_t1_.data();
    a.nb1 = ws->pw2_b1.data();
    a.nb2 = ws->pw2_b2.data();
    a.ns = ws->pw2_s.data();
    a.pk = L.pw1_pk_.data();
    a.max_prelu = L.pw1_max_;
    return a;
  }
  static PwArgs Pw2Args(const Layer& L, Workspace* ws, float* out) {
    PwArgs a{};
    a.O = L.c_;
    a.K = L.h_;
    a.W = L.wh_;
    a.b1 = ws->pw2_b1.data();
    a.b2 = ws->pw2_b2.data();
    a.s = ws->pw2_s.data();
    a.mul = L.pw2_mul_.data();
    a.bias = L.pw2_bias_.data();
    a.slope = L.pw2_slope_.data();
    a.res = ws->m.data();
    a.out = out;
    a.pk = L.pw2_pk_.data();
    a.max_prelu = L.pw2_max_;
    return a;
  }

  // kMemory: m and the pw1 binarization of m; kPw1: h and the pw2 binarization of h; kPw2:
  // out. The AVX-512 path fuses each binarization into the pass that produces its input.
  static void Stage(const Layer& L, Layer::Stage stage, const float* x, int frames, float* out,
                    Workspace* ws, Path path) {
#if LCE_KERNELS_HAVE_AVX512
    if (UseAvx512(path) && !L.pw1_wt_.empty()) return StageAvx512(L, stage, x, frames, out, ws);
#endif
    const std::size_t T = static_cast<std::size_t>(frames);
    (void)T;
    switch (stage) {
      case Layer::Stage::kBinarize:
        Binarize(x, frames, L.c_, L.mem_t0_.data(), L.mem_t1_.data(), ws->mem_b1.data(),
                 ws->mem_b2.data(), ws->mem_s.data(), path);
        return;
      case Layer::Stage::kMemory:
#if LCE_KERNELS_HAVE_NEON
        if (UseNeon(path)) {
          if (MemoryTableNeon(L, x, ws->mem_b1.data(), ws->mem_b2.data(), ws->mem_s.data(),
                              frames, ws->m.data(), ws->pw1_b1.data(), ws->pw1_b2.data(),
                              ws->pw1_s.data()))
            return;
          MemoryNeon<false>(L, x, ws->mem_b1.data(), ws->mem_b2.data(), ws->mem_s.data(),
                            frames, ws->m.data(), nullptr, nullptr, nullptr);
        } else
#endif
        {
          MemoryPortable<false>(L, x, ws->mem_b1.data(), ws->mem_b2.data(), ws->mem_s.data(),
                                frames, ws->m.data(), nullptr, nullptr, nullptr);
        }
        Binarize(ws->m.data(), frames, L.c_, L.pw1_t0_.data(), L.pw1_t1_.data(),
                 ws->pw1_b1.data(), ws->pw1_b2.data(), ws->pw1_s.data(), path);
        return;
      case Layer::Stage::kPw1:
#if LCE_KERNELS_HAVE_NEON
        if (UseNeon(path)) return PointwiseNeon2(Pw1Args(L, ws), L.pw1_w_.data(), frames);
#endif
        PointwiseF(L.pw1_w_.data(), L.h_, L.c_, L.wc_, ws->pw1_b1.data(), ws->pw1_b2.data(),
                   ws->pw1_s.data(), frames, L.pw1_mul_.data(), L.pw1_bias_.data(),
                   L.pw1_slope_.data(), nullptr, ws->h.data(), path);
        Binarize(ws->h.data(), frames, L.h_, L.pw2_t0_.data(), L.pw2_t1_.data(),
                 ws->pw2_b1.data(), ws->pw2_b2.data(), ws->pw2_s.data(), path);
        return;
      case Layer::Stage::kPw2:
#if LCE_KERNELS_HAVE_NEON
        if (UseNeon(path)) return PointwiseNeon2(Pw2Args(L, ws, out), L.pw2_w_.data(), frames);
#endif
        PointwiseF(L.pw2_w_.data(), L.c_, L.h_, L.wh_, ws->pw2_b1.data(), ws->pw2_b2.data(),
                   ws->pw2_s.data(), frames, L.pw2_mul_.data(), L.pw2_bias_.data(),
                   L.pw2_slope_.data(), ws->m.data(), out, path);
        return;
    }
  }

  static void PointwiseF(const std::uint64_t* w, int O, int K, int W, const std::uint64_t* b1,
                         const std::uint64_t* b2, const float* s, int frames, const float* mul,
                         const float* bias, const float* slope, const float* res, float* out,
                         Path path) {
#if LCE_KERNELS_HAVE_NEON
    if (UseNeon(path))
      return PointwiseNeon<false>(w, O, K, W, b1, b2, s, frames, mul, bias, slope, res, out,
                                  nullptr, nullptr);
#endif
    (void)path;
    PointwisePortable<false>(w, O, K, W, b1, b2, s, frames, mul, bias, slope, res, out, nullptr,
                             nullptr);
  }

#if LCE_KERNELS_HAVE_AVX512
  static void StageAvx512(const Layer& L, Layer::Stage stage, const float* x, int frames,
                          float* out, Workspace* ws) {
    switch (stage) {
      case Layer::Stage::kBinarize:
        BinarizeAvx512(x, frames, L.c_, L.mem_t0_.data(), L.mem_t1_.data(), ws->mem_b1.data(),
                       ws->mem_b2.data(), ws->mem_s.data());
        return;
      case Layer::Stage::kMemory:
        MemoryAvx512<false>(L, x, ws->mem_b1.data(), ws->mem_b2.data(), ws->mem_s.data(),
                            frames, ws->m.data(), nullptr, nullptr, nullptr, ws->pw1_b1.data(),
                            ws->pw1_b2.data(), ws->pw1_s.data(), ws->rabs.data());
        return;
      case Layer::Stage::kPw1: {
        PwArgs a = Pw1Args(L, ws);
        a.wt = L.pw1_wt_.data();
        return PointwiseAvx512<false>(a, frames);
      }
      case Layer::Stage::kPw2: {
        PwArgs a = Pw2Args(L, ws, out);
        a.wt = L.pw2_wt_.data();
        return PointwiseAvx512<false>(a, frames);
      }
    }
  }
#endif
};

// ------------------------------------------------------------------------------------
// Layer
// ------------------------------------------------------------------------------------
bool Layer::MaxPreluExact(const std::vector<float>& slope, const std::vector<float>& bias) {
  for (const float a : slope)
    if (!(a <= 1.0f)) return false;  // also NaN
  for (const float b : bias)
    if (b == 0.0f && std::signbit(b)) return false;
  return true;
}

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
  // streaming memory block (EvalStream): the sign of tap k, channel c as a float sign mask
  mem_sgn_.clear();
  if (spec.right == 0) {
    mem_sgn_.assign(static_cast<std::size_t>(K) * Round16(C), 0u);
    for (int k = 0; k < K; ++k) {
      for (int c = 0; c < C; ++c) {
        mem_sgn_[static_cast<std::size_t>(k) * Round16(C) + c] =
            ((mem_w_[static_cast<std::size_t>(k) * wc_ + c / 64] >> (c % 64)) & 1u) ? 0x80000000u
                                                                                  : 0u;
      }
    }
  }
  // t2 * float(W) per window [klo, khi) of valid taps (the W term of the memory block;
  // filled below, after the vectors), unless that table would be large
  mem_tw_.clear();
  if (HasAvx512()) {
    TransposeWords(pw1_w_, H, C, wc_, &pw1_wt_);
    TransposeWords(pw2_w_, C, H, wh_, &pw2_wt_);
  } else {
    pw1_wt_.clear();
    pw2_wt_.clear();
  }
  // vectors padded to a multiple of 16 floats: whole-register loads in the SIMD paths
  const int C4 = Round16(C), H4 = Round16(H);
  const bool ok = CopyVec(spec.mem_t0, C, C4, "mem_t0", &mem_t0_, error) &&
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
  if (!ok) return false;
  mem_max_ = MaxPreluExact(mem_slope_, mem_bias_);
  pw1_max_ = MaxPreluExact(pw1_slope_, pw1_bias_);
  pw2_max_ = MaxPreluExact(pw2_slope_, pw2_bias_);
  bin_pk_.clear();
  mem_pk_.clear();
  pw1_pk_.clear();
  pw2_pk_.clear();
  if (HasNeon()) {
    auto pack = [](std::initializer_list<const std::vector<float>*> rows, int n,
                   std::vector<float>* out) {
      const int k = static_cast<int>(rows.size()), blocks = (n + 3) / 4;
      out->assign(static_cast<std::size_t>(blocks) * k * 4, 0.0f);
      for (int b = 0; b < blocks; ++b) {
        int r = 0;
        for (const std::vector<float>* row : rows) {
          for (int l = 0; l < 4; ++l)
            (*out)[(static_cast<std::size_t>(b) * k + r) * 4 + l] = (*row)[4 * b + l];
          ++r;
        }
      }
    };
    pack({&mem_t0_, &mem_t1_}, C, &bin_pk_);
    pack({&mem_mul_, &mem_bias_, &mem_slope_, &pw1_t0_, &pw1_t1_}, C, &mem_pk_);
    pack({&pw1_mul_, &pw1_bias_, &pw1_slope_, &pw2_t0_, &pw2_t1_}, H, &pw1_pk_);
    pack({&pw2_mul_, &pw2_bias_, &pw2_slope_}, C, &pw2_pk_);
  }
  const std::size_t windows = static_cast<std::size_t>(l_ + 1) * static_cast<std::size_t>(r_ + 1);
  if (windows * static_cast<std::size_t>(C4) <= kMaxMemTw) {
    mem_tw_.assign(windows * static_cast<std::size_t>(C4), 0.0f);
    for (int klo = 0; klo <= l_; ++klo) {
      for (int khi = l_ + 1; khi <= K; ++khi) {
        float* row = &mem_tw_[(static_cast<std::size_t>(klo) * (r_ + 1) + (khi - l_ - 1)) * C4];
        for (int c = 0; c < C; ++c) {
          const int nw = mem_wpre_[static_cast<std::size_t>(khi) * C4 + c] -
                         mem_wpre_[static_cast<std::size_t>(klo) * C4 + c];
          row[c] = mem_t2_[c] * static_cast<float>((khi - klo) - 2 * nw);
        }
      }
    }
  }
  return true;
}

const float* Layer::MemTw(int klo, int khi) const {
  return &mem_tw_[(static_cast<std::size_t>(klo) * (r_ + 1) + (khi - l_ - 1)) *
                  static_cast<std::size_t>(Round16(c_))];
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
  ws->rabs.assign(4 * static_cast<std::size_t>(Round16(c_ > h_ ? c_ : h_)), 0.0f);
  if (r_ == 0) ws->a.assign((static_cast<std::size_t>(state_frames()) + T) * c_, 0.0f);
}

bool Layer::Eval(const float* x, int frames, float* out, Workspace* ws, Path path) const {
  if (frames < 1 || ws == nullptr || ws->frames < frames || c_ < 1) return false;
  const simd::ScopedFlushDenormals ftz;  // simd.h: the same bits on every path
  for (Stage st : {Stage::kBinarize, Stage::kMemory, Stage::kPw1, Stage::kPw2})
    Kernels::Stage(*this, st, x, frames, out, ws, path);
  return true;
}

bool Layer::EvalStream(const float* x, int frames, const float* state, float* out,
                       float* new_state, Workspace* ws, Path path) const {
  const std::size_t S = static_cast<std::size_t>(state_frames());
  const std::size_t C = static_cast<std::size_t>(c_), T = static_cast<std::size_t>(frames);
  if (r_ != 0 || frames < 1 || ws == nullptr || ws->frames < frames || c_ < 1 ||
      ws->a.size() < (S + T) * C) {
    return false;
  }
  const simd::ScopedFlushDenormals ftz;
  // a of the new frames (rows [S, S + T) of ws->a) from the memory-block binarization of x,
  // the memory block on [state; a] -> m, pw1's binarization of m
  bool fused = false;
#if LCE_KERNELS_HAVE_NEON
  if (Kernels::UseNeon(path) && c_ % 16 == 0) {
    Kernels::StreamFusedNeon(*this, x, frames, state, ws);  // the three in one, state in place
    fused = true;
  }
#endif
  if (!fused) {
    std::memcpy(ws->a.data(), state, S * C * sizeof(float));
    Kernels::Stage(*this, Stage::kBinarize, x, frames, out, ws, path);
    Kernels::StreamMemory(*this, x, frames, ws, path);
    Kernels::Binarize(ws->m.data(), frames, c_, pw1_t0_.data(), pw1_t1_.data(),
                      ws->pw1_b1.data(), ws->pw1_b2.data(), ws->pw1_s.data(), path);
  }
  Kernels::Stage(*this, Stage::kPw1, x, frames, out, ws, path);
  Kernels::Stage(*this, Stage::kPw2, x, frames, out, ws, path);
  // new_state = rows [T, T + S) of [state; a]: the old state's rows T.. that stay (moved
  // first: new_state may alias state), then the new rows of a
  const std::size_t keep = T < S ? S - T : 0;
  if (keep != 0) std::memmove(new_state, state + T * C, keep * C * sizeof(float));
  std::memcpy(new_state + keep * C, ws->a.data() + (T + keep) * C,
              (S - keep) * C * sizeof(float));
  return true;
}

bool Layer::EvalStage(Stage stage, const float* x, int frames, float* out, Workspace* ws,
                      Path path) const {
  if (frames < 1 || ws == nullptr || ws->frames < frames || c_ < 1) return false;
  const simd::ScopedFlushDenormals ftz;
  Kernels::Stage(*this, stage, x, frames, out, ws, path);
  return true;
}

void Layer::Binarize(const float* v, int frames, int n, const float* t0, const float* t1,
                     std::uint64_t* b1, std::uint64_t* b2, float* s, Path path) {
  const simd::ScopedFlushDenormals ftz;
  Kernels::Binarize(v, frames, n, t0, t1, b1, b2, s, path);
}

void Layer::MemoryCounts(const std::uint64_t* b1, const std::uint64_t* b2, const float* s,
                         int frames, std::int32_t* d1, std::int32_t* wsum, float* s2,
                         Path path) const {
  const simd::ScopedFlushDenormals ftz;
  Kernels::MemoryCounts(*this, b1, b2, s, frames, d1, wsum, s2, path);
}

void Layer::PointwiseCounts(int which, const std::uint64_t* b1, const std::uint64_t* b2,
                            int frames, std::int32_t* p1, std::int32_t* p2, Path path) const {
  Kernels::PointwiseCounts(*this, which == 1 ? 1 : 2, b1, b2, frames, p1, p2, path);
}

void Layer::Pointwise(const std::uint64_t* w, int O, int K, int W, const std::uint64_t* b1,
                      const std::uint64_t* b2, const float* s, int frames, const float* mul,
                      const float* bias, const float* slope, const float* res, float* out,
                      Path path) {
  // res == nullptr (no residual: the drivers' layers) compiled as its own case, as when the
  // caller's null residual is a constant.
  const simd::ScopedFlushDenormals ftz;
  if (res == nullptr) {
    Kernels::PointwiseF(w, O, K, W, b1, b2, s, frames, mul, bias, slope, nullptr, out, path);
  } else {
    Kernels::PointwiseF(w, O, K, W, b1, b2, s, frames, mul, bias, slope, res, out, path);
  }
}

}  // namespace bdfsmn
}  // namespace core
}  // namespace compute_engine
