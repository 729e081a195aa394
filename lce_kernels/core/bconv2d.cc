// Binary 2-D convolution (LceBconv2d): portable, AVX-512 (x86-64, run time) and NEON
// (aarch64) paths. See bconv2d.h for the semantics.
//
// Per output pixel: gather the receptive field into one row of 32-bit words (`patch_`: tap
// by tap, pad bits masked, taps outside the input as zero words = +1), XOR-popcount it with
// every filter row (the part the paths implement), then x = 2 * popcount (+ the zero-padding
// correction of the outside taps) and the output transform. Float order (every path):
// y = float(clamp(x)) * m' + b'.
#include "bconv2d.h"

#include <algorithm>
#include <cstring>
#include <limits>

#if LCE_KERNELS_HAVE_NEON
#include <arm_neon.h>
#endif
#if LCE_KERNELS_HAVE_AVX512
#include <immintrin.h>
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
  filter_t_.clear();
  if (CpuHasAvx512()) {
    filter_t_.assign(static_cast<std::size_t>(kw_) * cout16_, 0u);
    for (int o = 0; o < cout_; ++o) {
      for (int j = 0; j < kw_; ++j) {
        filter_t_[static_cast<std::size_t>(j) * cout16_ + o] =
            filter_[static_cast<std::size_t>(o) * kpad_ + j];
      }
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

#if LCE_KERNELS_HAVE_AVX512
// GCC 12's AVX-512 intrinsics fill "don't care" operands with _mm512_undefined_*(), which
// -Wmaybe-uninitialized flags inside the compiler's own headers (GCC bug 105593); the
// warning is silenced for this block only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
  // 16 output channels per register: XOR the transposed filter words of 16 channels with
  // the broadcast patch word, VPOPCNTD, add; then the transform 16 lanes wide.
  LCE_AVX512_FN static void PopcountAvx512(BConv2D& c) {
    const std::uint32_t* p = c.patch_.data();
    const std::uint32_t* ft = c.filter_t_.data();
    for (int ob = 0; ob < c.cout16_; ob += 16) {
      __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
      int j = 0;
      for (; j + 2 <= c.kw_; j += 2) {
        const __m512i f0 = _mm512_loadu_si512(ft + static_cast<std::size_t>(j) * c.cout16_ + ob);
        const __m512i f1 =
            _mm512_loadu_si512(ft + static_cast<std::size_t>(j + 1) * c.cout16_ + ob);
        const __m512i x0 = _mm512_xor_si512(f0, _mm512_set1_epi32(AsWord(p[j])));
        const __m512i x1 = _mm512_xor_si512(f1, _mm512_set1_epi32(AsWord(p[j + 1])));
        acc0 = _mm512_add_epi32(acc0, _mm512_popcnt_epi32(x0));
        acc1 = _mm512_add_epi32(acc1, _mm512_popcnt_epi32(x1));
      }
      if (j < c.kw_) {
        const __m512i f0 = _mm512_loadu_si512(ft + static_cast<std::size_t>(j) * c.cout16_ + ob);
        acc0 = _mm512_add_epi32(
            acc0, _mm512_popcnt_epi32(_mm512_xor_si512(f0, _mm512_set1_epi32(AsWord(p[j])))));
      }
      _mm512_storeu_si512(c.acc_.data() + ob, _mm512_add_epi32(acc0, acc1));
    }
  }

  LCE_AVX512_FN static void TransformAvx512(const BConv2D& c, void* out) {
    const __m512i cmin = _mm512_set1_epi32(c.clamp_min_), cmax = _mm512_set1_epi32(c.clamp_max_);
    std::uint32_t word = 0;
    for (int ob = 0; ob < c.cout16_; ob += 16) {
      const int left = c.cout_ - ob;
      const __mmask16 valid = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                                         : static_cast<__mmask16>((1u << left) - 1u);
      const __m512i x = _mm512_add_epi32(_mm512_slli_epi32(_mm512_loadu_si512(c.acc_.data() + ob), 1),
                                         _mm512_loadu_si512(c.corr_.data() + ob));
      if (c.out_ == Output::kFloat) {
        const __m512i xc = _mm512_min_epi32(_mm512_max_epi32(x, cmin), cmax);
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(xc),
                                                     _mm512_loadu_ps(c.mul_.data() + ob)),
                                       _mm512_loadu_ps(c.bias_.data() + ob));
        _mm512_mask_storeu_ps(static_cast<float*>(out) + ob, valid, y);
      } else {
        const __mmask16 bits =
            _mm512_mask_cmpgt_epi32_mask(valid, x, _mm512_loadu_si512(c.thr2_.data() + ob));
        word |= static_cast<std::uint32_t>(bits) << (ob % 32);
        if (ob % 32 == 16 || ob + 16 >= c.cout16_) {
          static_cast<std::int32_t*>(out)[ob / 32] = AsWord(word);
          word = 0;
        }
      }
    }
  }
#pragma GCC diagnostic pop
#endif

#if LCE_KERNELS_HAVE_NEON
  // Four filter rows at a time against one patch load, 128 bits per step: VEOR, VCNT, byte
  // adds (at most 31 steps, 8 * 31 < 256), then widened into 32-bit lanes; the four row
  // totals come out of two pairwise adds as one vector.
  static inline void NeonChunk(const std::uint32_t* p, const std::uint32_t* f, int i0, int i1,
                               uint32x4_t* acc) {
    uint8x16_t c = vdupq_n_u8(0);
    for (int i = i0; i < i1; ++i) {
      const uint32x4_t x = veorq_u32(vld1q_u32(p + 4 * i), vld1q_u32(f + 4 * i));
      c = vaddq_u8(c, vcntq_u8(vreinterpretq_u8_u32(x)));
    }
    *acc = vpadalq_u16(*acc, vpaddlq_u8(c));
  }

  static void PopcountNeon(BConv2D& c) {
    const std::uint32_t* p = c.patch_.data();
    const int q = c.kpad_ / 4;
    const std::size_t row = static_cast<std::size_t>(c.kpad_);
    int o = 0;
    for (; o + 4 <= c.cout_; o += 4) {
      const std::uint32_t* f = c.filter_.data() + static_cast<std::size_t>(o) * row;
      uint32x4_t a0 = vdupq_n_u32(0), a1 = a0, a2 = a0, a3 = a0;
      for (int i0 = 0; i0 < q; i0 += 31) {
        const int i1 = i0 + 31 < q ? i0 + 31 : q;
        uint8x16_t c0 = vdupq_n_u8(0), c1 = c0, c2 = c0, c3 = c0;
        for (int i = i0; i < i1; ++i) {
          const uint32x4_t x = vld1q_u32(p + 4 * i);
          c0 = vaddq_u8(c0, vcntq_u8(vreinterpretq_u8_u32(veorq_u32(x, vld1q_u32(f + 4 * i)))));
          c1 = vaddq_u8(c1, vcntq_u8(vreinterpretq_u8_u32(
                                veorq_u32(x, vld1q_u32(f + row + 4 * i)))));
          c2 = vaddq_u8(c2, vcntq_u8(vreinterpretq_u8_u32(
                                veorq_u32(x, vld1q_u32(f + 2 * row + 4 * i)))));
          c3 = vaddq_u8(c3, vcntq_u8(vreinterpretq_u8_u32(
                                veorq_u32(x, vld1q_u32(f + 3 * row + 4 * i)))));
        }
        a0 = vpadalq_u16(a0, vpaddlq_u8(c0));
        a1 = vpadalq_u16(a1, vpaddlq_u8(c1));
        a2 = vpadalq_u16(a2, vpaddlq_u8(c2));
        a3 = vpadalq_u16(a3, vpaddlq_u8(c3));
      }
      const uint32x4_t s = vpaddq_u32(vpaddq_u32(a0, a1), vpaddq_u32(a2, a3));
      vst1q_s32(c.acc_.data() + o, vreinterpretq_s32_u32(s));
    }
    for (; o < c.cout_; ++o) {
      const std::uint32_t* f = c.filter_.data() + static_cast<std::size_t>(o) * row;
      uint32x4_t a = vdupq_n_u32(0);
      for (int i0 = 0; i0 < q; i0 += 31) NeonChunk(p, f, i0, i0 + 31 < q ? i0 + 31 : q, &a);
      c.acc_[static_cast<std::size_t>(o)] = static_cast<std::int32_t>(vaddvq_u32(a));
    }
  }

  static void TransformNeon(const BConv2D& c, void* out) {
    if (c.out_ != Output::kFloat) return TransformPortable(c, out);
    float* y = static_cast<float*>(out);
    const int32x4_t cmin = vdupq_n_s32(c.clamp_min_), cmax = vdupq_n_s32(c.clamp_max_);
    int o = 0;
    for (; o + 4 <= c.cout_; o += 4) {
      const int32x4_t x = vaddq_s32(vshlq_n_s32(vld1q_s32(c.acc_.data() + o), 1),
                                    vld1q_s32(c.corr_.data() + o));
      const int32x4_t xc = vminq_s32(vmaxq_s32(x, cmin), cmax);
      const float32x4_t v = vaddq_f32(vmulq_f32(vcvtq_f32_s32(xc), vld1q_f32(c.mul_.data() + o)),
                                      vld1q_f32(c.bias_.data() + o));
      vst1q_f32(y + o, v);
    }
    for (; o < c.cout_; ++o) {
      const std::size_t i = static_cast<std::size_t>(o);
      std::int32_t x = 2 * c.acc_[i] + c.corr_[i];
      x = std::min(std::max(x, c.clamp_min_), c.clamp_max_);
      y[o] = static_cast<float>(x) * c.mul_[i] + c.bias_[i];
    }
  }
#endif
};

void BConv2D::Eval(const std::int32_t* input, int batch, void* output, KernelPath path) {
  KernelPath p = ResolveKernelPath(path);
  if (p == KernelPath::kAvx512 && filter_t_.empty()) p = KernelPath::kPortable;
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
#if LCE_KERNELS_HAVE_AVX512
          case KernelPath::kAvx512:
            Kernels::PopcountAvx512(*this);
            Kernels::TransformAvx512(*this, out);
            break;
#endif
#if LCE_KERNELS_HAVE_NEON
          case KernelPath::kNeon:
            Kernels::PopcountNeon(*this);
            Kernels::TransformNeon(*this, out);
            break;
#endif
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
