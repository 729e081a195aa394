// Binary 2-D convolution (op ops::BCONV2D, core/op_contract.h): portable, AVX-512 (x86-64, run time) and NEON
// (aarch64) paths. See bconv2d.h for the semantics.
//
// Portable (the reference): per output pixel, gather the receptive field into one row of
// 32-bit words (`patch_`: tap by tap, pad bits masked, taps outside the input as zero words =
// +1), XOR-popcount it with every filter row, then x = 2 * popcount (+ the zero-padding
// correction of the outside taps) and the output transform.
// SIMD paths: the input image is first compressed into a zero-padded image of 16-bit units
// (ceil(Cin / 16) per tap, pad bits clear), patches are then row segments of it, packed
// densely (a 5x5 tap of 16 channels: 25 halfwords, 400 bits instead of 25 words), built for
// up to 64 pixels ahead of their use; AVX-512 convolves 8 pixels x 32 outputs per pass
// (transposed filter words, 16 outputs per register), NEON 4 filter rows x 2 pixels (or 1
// pixel for patches of 3-4 q-words, all filter words in registers; for patches of 1-2
// q-words, a 1x1 conv such as the linear layer, the pixel pair's q-words in registers and
// the filter rows streamed past them) with per-row byte counts reduced by pairwise adds.
// Float order (every path): y = float(clamp(x)) * m' + b'.
#include "bconv2d.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "simd.h"

#if LCE_KERNELS_HAVE_AVX512
#define LCE_AVX512_FN __attribute__((target("avx512f,avx512vpopcntdq")))
#endif

namespace compute_engine {
namespace core {
namespace bconv2d {

namespace {

inline int Round16(int n) { return (n + 15) & ~15; }

inline std::uint32_t FromWord(std::int32_t s) {
  std::uint32_t w;
  std::memcpy(&w, &s, sizeof w);
  return w;
}

inline std::int32_t AsWord(std::uint32_t w) {
  std::int32_t s;
  std::memcpy(&s, &w, sizeof s);
  return s;
}

inline std::uint64_t Load64(const std::uint32_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

bool InRange(int v, int lo, int hi, const char* name, std::string* error) {
  if (v < lo || v > hi) {
    *error = std::string(name) + " = " + std::to_string(v) + " outside [" +
             std::to_string(lo) + ", " + std::to_string(hi) + "]";
    return false;
  }
  return true;
}

}  // namespace

int OutputSize(Padding padding, int in, int filter, int stride, int dilation) {
  if (in < 1 || filter < 1 || stride < 1 || dilation < 1) return 0;
  const std::int64_t eff = static_cast<std::int64_t>(filter - 1) * dilation + 1;
  const std::int64_t out = padding == Padding::kSame ? (in + stride - 1) / stride
                                                     : (in + stride - eff) / stride;
  return out < 1 ? 0 : static_cast<int>(out);
}

bool BConv2D::Init(const Spec& s, std::string* error) {
  if (!InRange(s.input_height, 1, kMaxSpatial, "input height", error) ||
      !InRange(s.input_width, 1, kMaxSpatial, "input width", error) ||
      !InRange(s.channels_in, 1, kMaxChannels, "channels_in", error) ||
      !InRange(s.channels_out, 1, kMaxChannels, "channels_out", error) ||
      !InRange(s.filter_height, 1, kMaxSpatial, "filter height", error) ||
      !InRange(s.filter_width, 1, kMaxSpatial, "filter width", error) ||
      !InRange(s.stride_height, 1, kMaxSpatial, "stride_height", error) ||
      !InRange(s.stride_width, 1, kMaxSpatial, "stride_width", error) ||
      !InRange(s.dilation_height, 1, kMaxSpatial, "dilation_height_factor", error) ||
      !InRange(s.dilation_width, 1, kMaxSpatial, "dilation_width_factor", error) ||
      !InRange(s.pad_value, 0, 1, "pad_values", error)) {
    return false;
  }
  const std::int64_t k = static_cast<std::int64_t>(s.filter_height) * s.filter_width *
                         s.channels_in;
  if (k > kMaxDepthBits) {
    *error = "filter depth Fh * Fw * Cin = " + std::to_string(k) + " exceeds " +
             std::to_string(kMaxDepthBits);
    return false;
  }
  if (s.filter == nullptr) {
    *error = "no filter data";
    return false;
  }
  if (s.output == Output::kFloat && (s.multiplier == nullptr || s.bias == nullptr)) {
    *error = "float output needs post_activation_multiplier and post_activation_bias";
    return false;
  }
  if (s.output == Output::kBitpacked && s.thresholds == nullptr) {
    *error = "bit-packed output needs output thresholds";
    return false;
  }
  const int oh = OutputSize(s.padding, s.input_height, s.filter_height, s.stride_height,
                            s.dilation_height);
  const int ow = OutputSize(s.padding, s.input_width, s.filter_width, s.stride_width,
                            s.dilation_width);
  if (oh < 1 || ow < 1) {
    *error = "the dilated filter (" + std::to_string(s.filter_height) + " x " +
             std::to_string(s.filter_width) + ") does not fit the input (" +
             std::to_string(s.input_height) + " x " + std::to_string(s.input_width) +
             ") with VALID padding";
    return false;
  }

  h_ = s.input_height;
  w_ = s.input_width;
  cin_ = s.channels_in;
  cout_ = s.channels_out;
  fh_ = s.filter_height;
  fw_ = s.filter_width;
  sh_ = s.stride_height;
  sw_ = s.stride_width;
  dh_ = s.dilation_height;
  dw_ = s.dilation_width;
  oh_ = oh;
  ow_ = ow;
  out_ = s.output;
  k_ = k;
  auto pad_before = [](int out, int stride, int filter, int dilation, int in) {
    const std::int64_t eff = static_cast<std::int64_t>(filter - 1) * dilation + 1;
    const std::int64_t total = (static_cast<std::int64_t>(out) - 1) * stride + eff - in;
    return total > 0 ? static_cast<int>(total / 2) : 0;
  };
  pad_top_ = s.padding == Padding::kSame ? pad_before(oh, sh_, fh_, dh_, h_) : 0;
  pad_left_ = s.padding == Padding::kSame ? pad_before(ow, sw_, fw_, dw_, w_) : 0;
  zero_pad_ = s.padding == Padding::kSame && s.pad_value == 0;

  const int taps = fh_ * fw_;
  wc_ = PackedWords(cin_);
  kw_ = taps * wc_;
  kpad_ = (kw_ + 3) & ~3;
  cout16_ = Round16(cout_);
  last_mask_ = cin_ % 32 == 0 ? ~0u : (1u << (cin_ % 32)) - 1u;

  filter_.assign(static_cast<std::size_t>(cout_) * kpad_, 0u);
  for (int o = 0; o < cout_; ++o) {
    for (int t = 0; t < taps; ++t) {
      for (int j = 0; j < wc_; ++j) {
        const std::size_t src = (static_cast<std::size_t>(o) * taps + t) * wc_ + j;
        std::uint32_t word = FromWord(s.filter[src]);
        if (j == wc_ - 1) word &= last_mask_;
        filter_[static_cast<std::size_t>(o) * kpad_ + static_cast<std::size_t>(t) * wc_ + j] =
            word;
      }
    }
  }
  tap_sum_.clear();
  if (zero_pad_) {
    tap_sum_.assign(static_cast<std::size_t>(cout_) * taps, 0);
    for (int o = 0; o < cout_; ++o) {
      for (int t = 0; t < taps; ++t) {
        int pop = 0;
        for (int j = 0; j < wc_; ++j) {
          pop += __builtin_popcount(
              filter_[static_cast<std::size_t>(o) * kpad_ + static_cast<std::size_t>(t) * wc_ + j]);
        }
        tap_sum_[static_cast<std::size_t>(o) * taps + t] = cin_ - 2 * pop;
      }
    }
  }
  // AVX-512 layout: dense 16-bit patches (see bconv2d.h), unless this CPU lacks AVX-512 or
  // the scratch would be unreasonably large (then the portable path runs).
  filter_t_.clear();
  img16_.clear();
  patches_.clear();
  tap_sum_t_.clear();
  corr_blk_.clear();
  hpt_ = (cin_ + 15) / 16;
  const std::int64_t kh = static_cast<std::int64_t>(taps) * hpt_;
  kd_ = static_cast<int>((kh + 1) / 2);
  kds_ = (kd_ + 4 + 3) & ~3;  // + 8 halfwords of slack for 16-byte copies
  last_hmask_ = static_cast<std::uint16_t>(cin_ % 16 == 0 ? 0xFFFFu : (1u << (cin_ % 16)) - 1u);
  // the input zero-padded to every tap position (padded coordinates: + pad_top_ / pad_left_)
  hp_ = std::max<std::int64_t>(h_ + pad_top_, static_cast<std::int64_t>(oh_ - 1) * sh_ +
                                                  static_cast<std::int64_t>(fh_ - 1) * dh_ + 1);
  wp_ = std::max<std::int64_t>(w_ + pad_left_, static_cast<std::int64_t>(ow_ - 1) * sw_ +
                                                   static_cast<std::int64_t>(fw_ - 1) * dw_ + 1);
  const std::int64_t img_halfwords = hp_ * wp_ * hpt_ + 8;
  kq_ = (kd_ + 3) / 4;
  filter_dn_.clear();
  xs_.clear();
  if ((CpuHasAvx512() || BuildHasNeon()) &&
      static_cast<std::int64_t>(kq_) * 4 * cout16_ <= (std::int64_t{1} << 26) &&
      hp_ * wp_ <= (std::int64_t{1} << 26) && img_halfwords <= (std::int64_t{1} << 26)) {
    // dense filter rows: the taps' halfwords back to back
    std::vector<std::uint32_t> dense(static_cast<std::size_t>(cout16_) * 4 * kq_, 0u);
    for (int o = 0; o < cout_; ++o) {
      const std::uint32_t* row = filter_.data() + static_cast<std::size_t>(o) * kpad_;
      std::uint32_t* d = dense.data() + static_cast<std::size_t>(o) * 4 * kq_;
      for (int t = 0; t < taps; ++t) {
        for (int hw = 0; hw < hpt_; ++hw) {
          // halfword hw of the tap's words (the last one's pad bits are already clear)
          const std::uint32_t half =
              (row[static_cast<std::size_t>(t) * wc_ + hw / 2] >> (16 * (hw % 2))) & 0xFFFFu;
          const std::int64_t h = static_cast<std::int64_t>(t) * hpt_ + hw;  // dense halfword
          d[h / 2] |= half << (16 * (h % 2));
        }
      }
    }
    if (CpuHasAvx512()) {
      filter_t_.assign(static_cast<std::size_t>(kd_) * cout16_, 0u);
      for (int o = 0; o < cout_; ++o)
        for (int j = 0; j < kd_; ++j)
          filter_t_[static_cast<std::size_t>(j) * cout16_ + o] =
              dense[static_cast<std::size_t>(o) * 4 * kq_ + j];
    } else {
      filter_dn_ = std::move(dense);
    }
    img16_.assign(static_cast<std::size_t>(img_halfwords), 0);
    // patches of up to 64 pixels are built ahead of their convolution (no store-to-load
    // forwarding of fresh 16-bit stores into the 32-bit broadcasts), at most ~16 KB
    chunk_ = kBlock * std::max(1, std::min(64 / kBlock, 4096 / (kds_ * kBlock)));
    patches_.assign(static_cast<std::size_t>(chunk_) * kds_, 0u);
    if (!filter_dn_.empty() && s.output == Output::kBitpacked)
      xs_.assign(static_cast<std::size_t>(chunk_) * cout16_, 0);
    if (zero_pad_) {
      tap_sum_t_.assign(static_cast<std::size_t>(taps) * cout16_, 0);
      for (int o = 0; o < cout_; ++o)
        for (int t = 0; t < taps; ++t)
          tap_sum_t_[static_cast<std::size_t>(t) * cout16_ + o] =
              tap_sum_[static_cast<std::size_t>(o) * taps + t];
      corr_blk_.assign(static_cast<std::size_t>(chunk_) * cout16_, 0);
    }
  }

  // Output transform (bconv2d.h): clamp of x = K - conv, fused multiplier / bias.
  std::int64_t lo = std::numeric_limits<std::int32_t>::min();
  std::int64_t hi = std::numeric_limits<std::int32_t>::max();
  switch (s.activation) {
    case Activation::kNone: break;
    case Activation::kRelu: lo = 0; break;
    case Activation::kReluN1To1: lo = -1; hi = 1; break;
    case Activation::kRelu6: lo = 0; hi = 6; break;
  }
  lo = std::max(lo, -k);
  hi = std::min(hi, k);
  clamp_min_ = static_cast<std::int32_t>(k - hi);
  clamp_max_ = static_cast<std::int32_t>(k - lo);
  mul_.assign(static_cast<std::size_t>(cout16_), 0.0f);
  bias_.assign(static_cast<std::size_t>(cout16_), 0.0f);
  thr2_.assign(static_cast<std::size_t>(cout16_), 0);
  for (int o = 0; o < cout_; ++o) {
    if (s.output == Output::kFloat) {
      const double m = s.multiplier[o], b = s.bias[o];
      mul_[static_cast<std::size_t>(o)] = static_cast<float>(-m);
      bias_[static_cast<std::size_t>(o)] = static_cast<float>(b + static_cast<double>(k) * m);
    } else {
      const std::int64_t t2 = 2 * static_cast<std::int64_t>(s.thresholds[o]);
      thr2_[static_cast<std::size_t>(o)] = static_cast<std::int32_t>(std::max<std::int64_t>(
          std::numeric_limits<std::int32_t>::min(),
          std::min<std::int64_t>(std::numeric_limits<std::int32_t>::max(), t2)));
    }
  }
  patch_.assign(static_cast<std::size_t>(kpad_), 0u);
  acc_.assign(static_cast<std::size_t>(cout16_), 0);
  corr_.assign(static_cast<std::size_t>(cout16_), 0);
  outside_.assign(static_cast<std::size_t>(taps), 0);
  return true;
}

// ---------------------------------------------------------------------------------------
struct BConv2D::Kernels {
  // ---- XOR-popcount of patch_ against every filter row -> acc_ ----
  static void PopcountPortable(BConv2D& c) {
    const std::uint32_t* p = c.patch_.data();
    for (int o = 0; o < c.cout_; ++o) {
      const std::uint32_t* f = c.filter_.data() + static_cast<std::size_t>(o) * c.kpad_;
      std::int32_t acc = 0;
      for (int j = 0; j < c.kpad_; j += 2) {
        acc += __builtin_popcountll(Load64(p + j) ^ Load64(f + j));
      }
      c.acc_[static_cast<std::size_t>(o)] = acc;
    }
  }

  // ---- output transform of acc_ (+ corr_) for one pixel ----
  static void TransformPortable(const BConv2D& c, void* out) {
    if (c.out_ == Output::kFloat) {
      float* y = static_cast<float*>(out);
      for (int o = 0; o < c.cout_; ++o) {
        const std::size_t i = static_cast<std::size_t>(o);
        std::int32_t x = 2 * c.acc_[i] + c.corr_[i];
        x = std::min(std::max(x, c.clamp_min_), c.clamp_max_);
        y[o] = static_cast<float>(x) * c.mul_[i] + c.bias_[i];
      }
    } else {
      std::int32_t* y = static_cast<std::int32_t*>(out);
      for (int j = 0; j < PackedWords(c.cout_); ++j) {
        std::uint32_t word = 0;
        for (int o = 32 * j; o < std::min(c.cout_, 32 * j + 32); ++o) {
          const std::size_t i = static_cast<std::size_t>(o);
          const std::int32_t x = 2 * c.acc_[i] + c.corr_[i];
          word |= static_cast<std::uint32_t>(x > c.thr2_[i]) << (o - 32 * j);
        }
        y[j] = AsWord(word);
      }
    }
  }

  // ---- dense 16-bit patches (AVX-512 path; plain C++) ----
  // One input image into the interior of img16_ (the zero-padded image, [hp_][wp_][hpt_]
  // halfwords, border zero since Init): per pixel the first hpt_ halfwords of its words, the
  // last one's pad bits cleared.
  static void CompressImage(BConv2D& c, const std::int32_t* img) {
    for (int y = 0; y < c.h_; ++y) {
      const std::int32_t* src = img + static_cast<std::size_t>(y) * c.w_ * c.wc_;
      const std::size_t prow = static_cast<std::size_t>(y + c.pad_top_);
      std::uint16_t* d = c.img16_.data() +
                         (prow * static_cast<std::size_t>(c.wp_) +
                          static_cast<std::size_t>(c.pad_left_)) * c.hpt_;
      if (c.wc_ == 1 && c.hpt_ == 1) {  // Cin <= 16: the low halfword of each word
        int x = 0;
#if LCE_KERNELS_HAVE_NEON
        const uint16x4_t mask = vdup_n_u16(c.last_hmask_);
        for (; x + 4 <= c.w_; x += 4)
          vst1_u16(d + x, vand_u16(vmovn_u32(vld1q_u32(
                                       reinterpret_cast<const std::uint32_t*>(src + x))),
                                   mask));
#endif
        for (; x < c.w_; ++x)
          d[x] = static_cast<std::uint16_t>(FromWord(src[x]) & c.last_hmask_);
        continue;
      }
      if (c.cin_ % 32 == 0) {  // whole words, no pad bits: already dense
        std::memcpy(d, src, sizeof(std::int32_t) * static_cast<std::size_t>(c.w_) * c.wc_);
        continue;
      }
      for (int x = 0; x < c.w_; ++x) {
        const std::int32_t* px = src + static_cast<std::size_t>(x) * c.wc_;
        std::uint16_t* o = d + static_cast<std::size_t>(x) * c.hpt_;
        for (int hw = 0; hw < c.hpt_; ++hw)
          o[hw] = static_cast<std::uint16_t>(FromWord(px[hw / 2]) >> (16 * (hw % 2)));
        o[c.hpt_ - 1] = static_cast<std::uint16_t>(o[c.hpt_ - 1] & c.last_hmask_);
      }
    }
  }

  // n halfwords; may write up to 7 more (the destination rows have that slack, and every
  // later segment of the patch overwrites them) and read up to 7 more (img16_ has slack).
  static inline void CopyHalfwords(std::uint16_t* dst, const std::uint16_t* src, int n) {
    int i = 0;
    do {
      std::memcpy(dst + i, src + i, 16);
      i += 8;
    } while (i < n);
  }

  // The patch of output pixel (oy, ox) into `dst` (kd_ words; the halfword past the patch, if
  // any, cleared): row segments of the padded image, no bounds checks.
  static inline void BuildPatch(const BConv2D& c, int oy, int ox, std::uint32_t* dst) {
    std::uint16_t* d = reinterpret_cast<std::uint16_t*>(dst);
    const int hpt = c.hpt_, seg = c.fw_ * hpt;
    const std::size_t row_hw = static_cast<std::size_t>(c.wp_) * hpt;
    const std::uint16_t* src = c.img16_.data() +
                               static_cast<std::size_t>(oy) * c.sh_ * row_hw +
                               static_cast<std::size_t>(ox) * c.sw_ * hpt;
    const std::size_t row_step = static_cast<std::size_t>(c.dh_) * row_hw;
    if (c.dw_ == 1) {
      for (int i = 0; i < c.fh_; ++i, d += seg, src += row_step) CopyHalfwords(d, src, seg);
    } else {
      const std::size_t tap_step = static_cast<std::size_t>(c.dw_) * hpt;
      for (int i = 0; i < c.fh_; ++i, src += row_step)
        for (int j = 0; j < c.fw_; ++j, d += hpt) CopyHalfwords(d, src + j * tap_step, hpt);
    }
    // clear what follows the patch up to a whole 128-bit word (NEON reads whole q-words;
    // at most 7 halfwords, inside the row's slack)
    static const std::uint16_t kZero[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(reinterpret_cast<std::uint16_t*>(dst) + static_cast<std::int64_t>(c.fh_) * seg,
                kZero, sizeof kZero);
  }

  // Zero padding: the correction of output pixel (oy, ox) into corr ([cout16_]): the sum of
  // the tap sums of its taps outside the input.
  static void Correction(const BConv2D& c, int oy, int ox, std::int32_t* corr) {
    for (int o = 0; o < c.cout16_; ++o) corr[o] = 0;
    for (int i = 0; i < c.fh_; ++i) {
      const std::int64_t iy = static_cast<std::int64_t>(oy) * c.sh_ - c.pad_top_ +
                              static_cast<std::int64_t>(i) * c.dh_;
      for (int j = 0; j < c.fw_; ++j) {
        const std::int64_t ix = static_cast<std::int64_t>(ox) * c.sw_ - c.pad_left_ +
                                static_cast<std::int64_t>(j) * c.dw_;
        if (iy >= 0 && iy < c.h_ && ix >= 0 && ix < c.w_) continue;
        const std::int32_t* ts =
            c.tap_sum_t_.data() + static_cast<std::size_t>(i * c.fw_ + j) * c.cout16_;
        for (int o = 0; o < c.cout16_; ++o) corr[o] += ts[o];
      }
    }
  }

#if LCE_KERNELS_HAVE_AVX512
// GCC 12's AVX-512 intrinsics fill "don't care" operands with _mm512_undefined_*(), which
// -Wmaybe-uninitialized flags inside the compiler's own headers (GCC bug 105593); the
// warning is silenced for this block only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
  // kBlock output pixels x 16 OB output channels per pass: the transposed filter words of
  // the OB registers are loaded once per patch word and XORed with that word of every
  // pixel's patch (broadcast), VPOPCNTD, add (kBlock * OB accumulators in registers); then
  // x = 2 * popcount (+ zero-padding correction), clamp, and the output transform, 16 lanes
  // wide. n < kBlock: the missing pixels repeat the last one and store nothing.
  template <int OB>
  LCE_AVX512_FN static void BlockAvx512(const BConv2D& c, int p0, int n, int ob,
                                        unsigned char* out, std::size_t out_bytes) {
    constexpr int NP = kBlock;
    const std::uint32_t* pt[NP];
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p)
      pt[p] = c.patches_.data() + static_cast<std::size_t>(p0 + (p < n ? p : n - 1)) * c.kds_;
    __m512i acc[OB][NP];
#pragma GCC unroll 2
    for (int q = 0; q < OB; ++q)
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) acc[q][p] = _mm512_setzero_si512();
    const std::uint32_t* ft = c.filter_t_.data() + ob;
    const std::size_t fstride = static_cast<std::size_t>(c.cout16_);
    for (int j = 0; j < c.kd_; ++j) {
      __m512i w[OB];
#pragma GCC unroll 2
      for (int q = 0; q < OB; ++q) w[q] = _mm512_loadu_si512(ft + j * fstride + 16 * q);
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) {
        const __m512i x = _mm512_set1_epi32(AsWord(pt[p][j]));
#pragma GCC unroll 2
        for (int q = 0; q < OB; ++q)
          acc[q][p] = _mm512_add_epi32(acc[q][p], _mm512_popcnt_epi32(_mm512_xor_si512(w[q], x)));
      }
    }
    const __m512i cmin = _mm512_set1_epi32(c.clamp_min_), cmax = _mm512_set1_epi32(c.clamp_max_);
    for (int p = 0; p < n; ++p) {
      std::uint32_t word = 0;
#pragma GCC unroll 2
      for (int q = 0; q < OB; ++q) {
        const int o0 = ob + 16 * q;
        const __mmask16 valid = simd::TailMask16(c.cout_ - o0);
        __m512i x = _mm512_slli_epi32(acc[q][p], 1);
        if (c.zero_pad_)
          x = _mm512_add_epi32(
              x, _mm512_loadu_si512(c.corr_blk_.data() +
                                    static_cast<std::size_t>(p0 + p) * c.cout16_ + o0));
        if (c.out_ == Output::kFloat) {
          const __m512i xc = _mm512_min_epi32(_mm512_max_epi32(x, cmin), cmax);
          const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(xc),
                                                       _mm512_loadu_ps(c.mul_.data() + o0)),
                                         _mm512_loadu_ps(c.bias_.data() + o0));
          float* yo = reinterpret_cast<float*>(out + static_cast<std::size_t>(p) * out_bytes);
          _mm512_mask_storeu_ps(yo + o0, valid, y);
        } else {
          const __mmask16 bits =
              _mm512_mask_cmpgt_epi32_mask(valid, x, _mm512_loadu_si512(c.thr2_.data() + o0));
          word |= static_cast<std::uint32_t>(bits) << (16 * q);
        }
      }
      if (c.out_ != Output::kFloat) {
        std::int32_t* y =
            reinterpret_cast<std::int32_t*>(out + static_cast<std::size_t>(p) * out_bytes);
        y[ob / 32] = AsWord(word);
      }
    }
  }

  // Eval on the AVX-512 path: per image, the compressed input, then per block of kBlock
  // output pixels their patches and the register-blocked XOR-popcount over every output.
  LCE_AVX512_FN static void EvalAvx512(BConv2D& c, const std::int32_t* input, int batch,
                                       void* output) {
    const std::size_t in_img = static_cast<std::size_t>(c.h_) * c.w_ * c.wc_;
    const std::size_t out_px = static_cast<std::size_t>(c.output_depth());
    const std::size_t out_bytes =
        out_px * (c.out_ == Output::kFloat ? sizeof(float) : sizeof(std::int32_t));
    const int npix = c.oh_ * c.ow_;
    unsigned char* out = static_cast<unsigned char*>(output);
    for (int b = 0; b < batch; ++b) {
      CompressImage(c, input + static_cast<std::size_t>(b) * in_img);
      for (int c0 = 0; c0 < npix; c0 += c.chunk_) {
        const int nc = npix - c0 < c.chunk_ ? npix - c0 : c.chunk_;
        for (int p = 0, oy = c0 / c.ow_, ox = c0 % c.ow_; p < nc; ++p) {
          BuildPatch(c, oy, ox, c.patches_.data() + static_cast<std::size_t>(p) * c.kds_);
          if (c.zero_pad_)
            Correction(c, oy, ox, c.corr_blk_.data() + static_cast<std::size_t>(p) * c.cout16_);
          if (++ox == c.ow_) {
            ox = 0;
            ++oy;
          }
        }
        for (int p0 = 0; p0 < nc; p0 += kBlock) {
          const int n = nc - p0 < kBlock ? nc - p0 : kBlock;
          unsigned char* o = out + (static_cast<std::size_t>(b) * npix + c0 + p0) * out_bytes;
          int ob = 0;
          for (; ob + 32 <= c.cout16_; ob += 32) BlockAvx512<2>(c, p0, n, ob, o, out_bytes);
          if (ob < c.cout16_) BlockAvx512<1>(c, p0, n, ob, o, out_bytes);
        }
      }
    }
  }
#pragma GCC diagnostic pop
#endif

#if LCE_KERNELS_HAVE_NEON
  // ---- NEON: the dense 16-bit patches, 4 filter rows x 2 pixels per block ----
  // Byte counts of the 4 rows x 2 pixels over the patch's q-words (kq <= 7: byte adds,
  // every byte <= 8 kq), reduced by pairwise adds shared across rows and pixels to
  // {rows 0..3 of pixel 0, rows 0..3 of pixel 1} (u16): per 128 filter bits one EOR, one CNT,
  // one ADD, and about one pairwise add per row and pixel. KQ: q-words per patch (1..7;
  // 0: any, 16-bit accumulation).
  template <int KQ>
  static inline uint16x8_t Counts4x2(const std::uint8_t* const* w, const uint8x16_t* wq,
                                     const std::uint8_t* p0, const std::uint8_t* p1, int kq) {
    if (KQ > 0) {
      uint8x16_t c[4][2];
#pragma GCC unroll 8
      for (int q = 0; q < KQ; ++q) {
        const uint8x16_t x0 = vld1q_u8(p0 + 16 * q), x1 = vld1q_u8(p1 + 16 * q);
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
          const uint8x16_t k = wq[KQ * r + q];
          const uint8x16_t a = vcntq_u8(veorq_u8(k, x0)), b = vcntq_u8(veorq_u8(k, x1));
          c[r][0] = q == 0 ? a : vaddq_u8(c[r][0], a);
          c[r][1] = q == 0 ? b : vaddq_u8(c[r][1], b);
        }
      }
      uint16x8_t u[2];
#pragma GCC unroll 2
      for (int px = 0; px < 2; ++px)
        u[px] = vpaddlq_u8(vpaddq_u8(vpaddq_u8(c[0][px], c[1][px]), vpaddq_u8(c[2][px], c[3][px])));
      return vpaddq_u16(u[0], u[1]);
    }
    uint16x8_t c[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) c[r][0] = c[r][1] = vdupq_n_u16(0);
    for (int q = 0; q < kq; ++q) {
      const uint8x16_t x0 = vld1q_u8(p0 + 16 * q), x1 = vld1q_u8(p1 + 16 * q);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const uint8x16_t k = vld1q_u8(w[r] + 16 * q);
        c[r][0] = vpadalq_u8(c[r][0], vcntq_u8(veorq_u8(k, x0)));
        c[r][1] = vpadalq_u8(c[r][1], vcntq_u8(veorq_u8(k, x1)));
      }
    }
    uint16x8_t u[2];
#pragma GCC unroll 2
    for (int px = 0; px < 2; ++px)
      u[px] = vpaddq_u16(vpaddq_u16(c[0][px], c[1][px]), vpaddq_u16(c[2][px], c[3][px]));
    return vpaddq_u16(u[0], u[1]);
  }

  // 4 rows x 1 pixel (KQ 3, 4: the 4 rows' q-words stay in registers): {rows 0..3} (u16).
  template <int KQ>
  static inline uint16x4_t Counts4x1(const uint8x16_t* wq, const std::uint8_t* p0) {
    uint8x16_t c[4];
#pragma GCC unroll 8
    for (int q = 0; q < KQ; ++q) {
      const uint8x16_t x0 = vld1q_u8(p0 + 16 * q);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const uint8x16_t a = vcntq_u8(veorq_u8(wq[KQ * r + q], x0));
        c[r] = q == 0 ? a : vaddq_u8(c[r], a);
      }
    }
    const uint16x8_t u = vpaddlq_u8(vpaddq_u8(vpaddq_u8(c[0], c[1]), vpaddq_u8(c[2], c[3])));
    return vget_low_u16(vpaddq_u16(u, u));
  }

  // The output transform of a block of 4 rows (o .. o + 3, `rows` of them real) and up to 2
  // pixels, from their counts (Counts4x2's order: rows of pixel pp[0], rows of pixel pp[1]):
  // x = 2 * count (+ the zero-padding correction); float output clamped, converted, scaled
  // and stored; bit-packed output: x kept in xs_ for the threshold pass. The members are the
  // loop invariants (locals of the loops that use it: their stores may alias any member of
  // BConv2D as far as the compiler knows).
  struct OutNeon {
    unsigned char* out;
    std::size_t out_bytes, cout16;
    const float* mul;
    const float* bias;
    const std::int32_t* corr;
    std::int32_t* xs;
    int32x4_t cmin, cmax;
    bool fl, zp;

    OutNeon(const BConv2D& c, unsigned char* o, std::size_t ob)
        : out(o), out_bytes(ob), cout16(static_cast<std::size_t>(c.cout16_)),
          mul(c.mul_.data()), bias(c.bias_.data()), corr(c.corr_blk_.data()),
          xs(const_cast<std::int32_t*>(c.xs_.data())), cmin(vdupq_n_s32(c.clamp_min_)),
          cmax(vdupq_n_s32(c.clamp_max_)), fl(c.out_ == Output::kFloat), zp(c.zero_pad_) {}

    // the fused multiplier / bias of rows o .. o + 3 (Store's m, b)
    float32x4_t Mul(int o) const { return vld1q_f32(mul + o); }
    float32x4_t Bias(int o) const { return vld1q_f32(bias + o); }

    __attribute__((always_inline)) inline void Store(uint16x8_t n, const int* pp, bool two,
                                                     int o, int rows, float32x4_t m,
                                                     float32x4_t b) const {
#pragma GCC unroll 2
      for (int px = 0; px < 2; ++px) {
        if (px == 1 && !two) break;
        const std::size_t pix = static_cast<std::size_t>(pp[px]);
        int32x4_t x = vreinterpretq_s32_u32(px == 0 ? vshll_n_u16(vget_low_u16(n), 1)
                                                    : vshll_high_n_u16(n, 1));
        if (zp) x = vaddq_s32(x, vld1q_s32(corr + pix * cout16 + o));
        if (!fl) {
          vst1q_s32(xs + pix * cout16 + o, x);
          continue;
        }
        const int32x4_t xc = vminq_s32(vmaxq_s32(x, cmin), cmax);
        const float32x4_t y = vaddq_f32(vmulq_f32(vcvtq_f32_s32(xc), m), b);
        float* yo = reinterpret_cast<float*>(out + pix * out_bytes) + o;
        if (rows == 4) {
          vst1q_f32(yo, y);
        } else {  // lane stores (no call in the loop: its vector registers stay live)
          vst1q_lane_f32(yo, y, 0);
          if (rows > 1) vst1q_lane_f32(yo + 1, y, 1);
          if (rows > 2) vst1q_lane_f32(yo + 2, y, 2);
        }
      }
    }
  };

  // Rows o..o+3 of the chunk's nc pixels, two at a time (the last may repeat: not stored),
  // from the patches, the rows' q-words in registers (KQ > 0).
  template <int KQ>
  static void RowsNeon(BConv2D& c, int o, int nc, unsigned char* out, std::size_t out_bytes) {
    const std::size_t row = static_cast<std::size_t>(4 * c.kq_);
    const std::uint8_t* w[4];
    uint8x16_t wq[4 * (KQ > 0 ? KQ : 1)];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      w[r] = reinterpret_cast<const std::uint8_t*>(c.filter_dn_.data() + (o + r) * row);
#pragma GCC unroll 8
      for (int q = 0; q < KQ; ++q) wq[KQ * r + q] = vld1q_u8(w[r] + 16 * q);
    }
    const OutNeon st(c, out, out_bytes);
    const float32x4_t m = st.Mul(o), b = st.Bias(o);
    const int rows = c.cout_ - o < 4 ? c.cout_ - o : 4;
    constexpr bool kOne = KQ >= 3;  // one pixel per step (register pressure)
    const std::uint8_t* const patches = reinterpret_cast<const std::uint8_t*>(c.patches_.data());
    const std::size_t kds_bytes = sizeof(std::uint32_t) * static_cast<std::size_t>(c.kds_);
    for (int p = 0; p < nc; p += kOne ? 1 : 2) {
      const bool two = !kOne && p + 1 < nc;
      const int pp[2] = {p, two ? p + 1 : p};
      uint16x8_t n;
      if (kOne) {
        const uint16x4_t n1 =
            Counts4x1<(KQ >= 3 ? KQ : 3)>(wq, patches + static_cast<std::size_t>(pp[0]) * kds_bytes);
        n = vcombine_u16(n1, n1);
      } else {
        n = Counts4x2<KQ>(w, wq, patches + static_cast<std::size_t>(pp[0]) * kds_bytes,
                          patches + static_cast<std::size_t>(pp[1]) * kds_bytes, c.kq_);
      }
      st.Store(n, pp, two, o, rows, m, b);
    }
  }

  // Short patches (KQ 1-2: a 1x1 conv of up to 256 channels, the linear layer): pixel pair
  // by pixel pair, every filter row streams past the pair, 4 rows per step (RowsNeon's per-
  // row-block set-up, loading the rows into registers for the few pixels of a streaming hop,
  // cost more than the convolution). Same counts (Counts4x2), same output transform.
  template <int KQ>
  static void PairsNeon(BConv2D& c, int nc, unsigned char* out, std::size_t out_bytes) {
    static_assert(KQ == 1 || KQ == 2, "PairsNeon: patches of 1 or 2 q-words");
    const std::size_t row_bytes = static_cast<std::size_t>(16 * c.kq_);  // dense filter row
    const std::uint8_t* const filter = reinterpret_cast<const std::uint8_t*>(c.filter_dn_.data());
    const std::uint8_t* const patches = reinterpret_cast<const std::uint8_t*>(c.patches_.data());
    const std::size_t kds_bytes = sizeof(std::uint32_t) * static_cast<std::size_t>(c.kds_);
    const OutNeon st(c, out, out_bytes);
    const int cout = c.cout_;
    for (int p = 0; p < nc; p += 2) {
      const bool two = p + 1 < nc;
      const int pp[2] = {p, two ? p + 1 : p};
      const std::uint8_t* p0 = patches + static_cast<std::size_t>(pp[0]) * kds_bytes;
      const std::uint8_t* p1 = patches + static_cast<std::size_t>(pp[1]) * kds_bytes;
      for (int o = 0; o < cout; o += 4) {
        const std::uint8_t* w = filter + static_cast<std::size_t>(o) * row_bytes;
        uint8x16_t wq[4 * KQ];
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r)
#pragma GCC unroll 2
          for (int q = 0; q < KQ; ++q) wq[KQ * r + q] = vld1q_u8(w + r * row_bytes + 16 * q);
        st.Store(Counts4x2<KQ>(nullptr, wq, p0, p1, KQ), pp, two, o, cout - o < 4 ? cout - o : 4,
                 st.Mul(o), st.Bias(o));
      }
    }
  }

  template <int KQ>
  static void EvalNeonT(BConv2D& c, const std::int32_t* input, int batch, void* output) {
    const std::size_t in_img = static_cast<std::size_t>(c.h_) * c.w_ * c.wc_;
    const std::size_t out_px = static_cast<std::size_t>(c.output_depth());
    const std::size_t out_bytes =
        out_px * (c.out_ == Output::kFloat ? sizeof(float) : sizeof(std::int32_t));
    const int npix = c.oh_ * c.ow_;
    unsigned char* out = static_cast<unsigned char*>(output);
    for (int b = 0; b < batch; ++b) {
      CompressImage(c, input + static_cast<std::size_t>(b) * in_img);
      for (int c0 = 0; c0 < npix; c0 += c.chunk_) {
        const int nc = npix - c0 < c.chunk_ ? npix - c0 : c.chunk_;
        for (int p = 0, oy = c0 / c.ow_, ox = c0 % c.ow_; p < nc; ++p) {
          BuildPatch(c, oy, ox, c.patches_.data() + static_cast<std::size_t>(p) * c.kds_);
          if (c.zero_pad_)
            Correction(c, oy, ox, c.corr_blk_.data() + static_cast<std::size_t>(p) * c.cout16_);
          if (++ox == c.ow_) {
            ox = 0;
            ++oy;
          }
        }
        unsigned char* o0 = out + (static_cast<std::size_t>(b) * npix + c0) * out_bytes;
        if (KQ == 1 || KQ == 2) {
          PairsNeon<(KQ == 1 ? 1 : 2)>(c, nc, o0, out_bytes);
        } else {
          for (int o = 0; o < c.cout_; o += 4) RowsNeon<KQ>(c, o, nc, o0, out_bytes);
        }
        if (c.out_ != Output::kFloat) {  // bit-packed: x > 2 * threshold, per pixel
          for (int p = 0; p < nc; ++p) {
            const std::int32_t* x = c.xs_.data() + static_cast<std::size_t>(p) * c.cout16_;
            std::int32_t* y =
                reinterpret_cast<std::int32_t*>(o0 + static_cast<std::size_t>(p) * out_bytes);
            for (int j = 0; j < PackedWords(c.cout_); ++j) {
              std::uint32_t word = 0;
              for (int oo = 32 * j; oo < std::min(c.cout_, 32 * j + 32); ++oo)
                word |= static_cast<std::uint32_t>(x[oo] > c.thr2_[static_cast<std::size_t>(oo)])
                        << (oo - 32 * j);
              y[j] = AsWord(word);
            }
          }
        }
      }
    }
  }

  static void EvalNeon(BConv2D& c, const std::int32_t* input, int batch, void* output) {
    switch (c.kq_) {
      case 1: return EvalNeonT<1>(c, input, batch, output);
      case 2: return EvalNeonT<2>(c, input, batch, output);
      case 3: return EvalNeonT<3>(c, input, batch, output);
      case 4: return EvalNeonT<4>(c, input, batch, output);
      default: return EvalNeonT<0>(c, input, batch, output);
    }
  }
#endif
};

void BConv2D::Eval(const std::int32_t* input, int batch, void* output, KernelPath path) {
  const simd::ScopedFlushDenormals ftz;  // simd.h: the float transform flushes on every path
  KernelPath p = ResolveKernelPath(path);
  if (p == KernelPath::kAvx512 && filter_t_.empty()) p = KernelPath::kPortable;
#if LCE_KERNELS_HAVE_AVX512
  if (p == KernelPath::kAvx512) return Kernels::EvalAvx512(*this, input, batch, output);
#endif
#if LCE_KERNELS_HAVE_NEON
  if (p == KernelPath::kNeon && !filter_dn_.empty())
    return Kernels::EvalNeon(*this, input, batch, output);
#endif
  const int taps = fh_ * fw_;
  const std::size_t in_row = static_cast<std::size_t>(w_) * wc_;
  const std::size_t in_img = static_cast<std::size_t>(h_) * in_row;
  const std::size_t out_px = static_cast<std::size_t>(output_depth());
  const std::size_t elem = out_ == Output::kFloat ? sizeof(float) : sizeof(std::int32_t);
  unsigned char* out_bytes = static_cast<unsigned char*>(output);
  std::size_t pixel = 0;
  for (int b = 0; b < batch; ++b) {
    const std::int32_t* img = input + static_cast<std::size_t>(b) * in_img;
    for (int oy = 0; oy < oh_; ++oy) {
      for (int ox = 0; ox < ow_; ++ox, ++pixel) {
        // Gather the receptive field.
        int n_out = 0;
        for (int i = 0; i < fh_; ++i) {
          const std::int64_t iy = static_cast<std::int64_t>(oy) * sh_ - pad_top_ +
                                  static_cast<std::int64_t>(i) * dh_;
          for (int j = 0; j < fw_; ++j) {
            const std::int64_t ix = static_cast<std::int64_t>(ox) * sw_ - pad_left_ +
                                    static_cast<std::int64_t>(j) * dw_;
            const int t = i * fw_ + j;
            std::uint32_t* dst = patch_.data() + static_cast<std::size_t>(t) * wc_;
            if (iy >= 0 && iy < h_ && ix >= 0 && ix < w_) {
              const std::int32_t* src = img + static_cast<std::size_t>(iy) * in_row +
                                        static_cast<std::size_t>(ix) * wc_;
              for (int q = 0; q < wc_; ++q) dst[q] = FromWord(src[q]);
              dst[wc_ - 1] &= last_mask_;
            } else {
              for (int q = 0; q < wc_; ++q) dst[q] = 0u;
              outside_[static_cast<std::size_t>(n_out++)] = t;
            }
          }
        }
        if (zero_pad_ && n_out > 0) {
          for (int o = 0; o < cout_; ++o) {
            std::int32_t s = 0;
            for (int q = 0; q < n_out; ++q) {
              s += tap_sum_[static_cast<std::size_t>(o) * taps +
                            static_cast<std::size_t>(outside_[static_cast<std::size_t>(q)])];
            }
            corr_[static_cast<std::size_t>(o)] = s;
          }
        }
        void* out = out_bytes + pixel * out_px * elem;
        switch (p) {
          default:
            Kernels::PopcountPortable(*this);
            Kernels::TransformPortable(*this, out);
            break;
        }
        if (zero_pad_ && n_out > 0) std::fill(corr_.begin(), corr_.end(), 0);
      }
    }
  }
}

}  // namespace bconv2d
}  // namespace core
}  // namespace compute_engine
