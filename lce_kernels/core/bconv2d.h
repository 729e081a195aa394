// Binary 2-D convolution on bit-packed activations (the kernel of ops::BCONV2D, op_contract.h), no TFLite.
//
// Semantics of larq-compute-engine 0.16's binary conv op (groups = 1), written from its
// definition, not its code:
//
//   input   [B, H, W, ceil(Cin / 32)] int32 words, bit-packed as core/bitpack.h (bit 1 = -1)
//   filter  [Cout, Fh, Fw, ceil(Cin / 32)] int32 words, same packing
//   conv[b, y, x, o] = sum over taps (i, j) inside the input and channels c of
//                      in(b, y*Sh - Ph + i*Dh, x*Sw - Pw + j*Dw, c) * w(o, i, j, c)   (+-1 values)
//   Padding: VALID (no taps outside), or SAME (TFLite's output size ceil(H / Sh) and
//   padding: total = max((out - 1) * S + (F - 1) * D + 1 - H, 0), P = total / 2 before)
//   with pad value 1 ("one padding": taps outside the input read +1, LCE's default) or 0
//   ("zero padding": taps outside contribute nothing).
//   Let K = Fh * Fw * Cin and x = K - conv (LCE's "2 * accumulator": twice the XOR-popcount
//   count over all taps, outside taps read as +1 words; with zero padding each outside tap
//   adds Cin - 2 * popcount(filter tap) on top, i.e. LCE's reference kernel's Cin / 2
//   per tap, doubled).
//   Fused activation (clamp of conv): NONE, RELU [0, inf), RELU_N1_TO_1 [-1, 1], RELU6
//   [0, 6]; applied as a clamp of x to [K - max', K - min'] with [min', max'] the activation
//   range cut to [-K, K] (as LCE does).
//   float output     y = float(x_clamped) * m'[o] + b'[o], with m' = -multiplier[o] and
//                    b' = float(double(bias[o]) + K * double(multiplier[o]))   (LCE's fused
//                    output transform; no FMA: build with -ffp-contract=off)
//                    = conv_clamped * multiplier + bias up to float rounding.
//   bit-packed out   bit o of [B, OH, OW, ceil(Cout / 32)] = x > 2 * thresholds[o]
//                    (LCE: accumulator > threshold); pad bits 0.
//   Pad bits of the input and filter words (channels >= Cin) are ignored (LCE counts them;
//   the converter and the quantize op always write them 0, where both agree).
//
// Integer parts are exact; the float output is identical in every path (portable, NEON,
// AVX-512) and on every build with -ffp-contract=off.
#ifndef LCE_KERNELS_CORE_BCONV2D_H_
#define LCE_KERNELS_CORE_BCONV2D_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernel_path.h"

namespace compute_engine {
namespace core {
namespace bconv2d {

enum class Padding { kSame, kValid };
enum class Activation { kNone, kRelu, kReluN1To1, kRelu6 };
enum class Output { kFloat, kBitpacked };

constexpr int kMaxSpatial = 1 << 16;        // H, W, Fh, Fw, strides, dilations
constexpr int kMaxChannels = 1 << 20;       // Cin, Cout
constexpr std::int64_t kMaxDepthBits = std::int64_t{1} << 24;  // K = Fh * Fw * Cin

inline int PackedWords(int n) { return (n + 31) / 32; }

struct Spec {
  int input_height = 0, input_width = 0, channels_in = 0;
  int channels_out = 0, filter_height = 0, filter_width = 0;
  int stride_height = 1, stride_width = 1;
  int dilation_height = 1, dilation_width = 1;
  Padding padding = Padding::kValid;
  int pad_value = 1;  // 0 or 1 (used with SAME only)
  Activation activation = Activation::kNone;
  Output output = Output::kFloat;
  const std::int32_t* filter = nullptr;      // [Cout][Fh][Fw][PackedWords(Cin)]
  const float* multiplier = nullptr;         // [Cout], float output
  const float* bias = nullptr;               // [Cout], float output
  const std::int32_t* thresholds = nullptr;  // [Cout], bit-packed output
};

// Output size of one spatial axis as TFLite computes it (0 if the filter does not fit).
int OutputSize(Padding padding, int in, int filter, int stride, int dilation);

class BConv2D {
 public:
  // Validates the spec and copies / repacks the constants. False (with *error) on any
  // invalid value; never aborts.
  bool Init(const Spec& spec, std::string* error);

  int output_height() const { return oh_; }
  int output_width() const { return ow_; }
  // int32 words (bit-packed) or floats per output pixel.
  int output_depth() const { return out_ == Output::kFloat ? cout_ : PackedWords(cout_); }
  // Output pixels the AVX-512 path convolves together (one register block).
  static constexpr int kBlock = 8;
  int depth_bits() const { return static_cast<int>(k_); }  // K

  // input: [batch][H][W][PackedWords(Cin)]; output: float [batch][OH][OW][Cout] or int32
  // [batch][OH][OW][PackedWords(Cout)]. Uses scratch owned by this object (not reentrant).
  void Eval(const std::int32_t* input, int batch, void* output, KernelPath path);

 private:
  struct Kernels;
  friend struct Kernels;
  int h_ = 0, w_ = 0, cin_ = 0, cout_ = 0, fh_ = 0, fw_ = 0, sh_ = 1, sw_ = 1, dh_ = 1,
      dw_ = 1, oh_ = 0, ow_ = 0, pad_top_ = 0, pad_left_ = 0;
  bool zero_pad_ = false;
  Output out_ = Output::kFloat;
  std::int64_t k_ = 0;
  int wc_ = 0;        // words per tap
  int kw_ = 0;        // words per filter row (taps * wc_)
  int kpad_ = 0;      // kw_ rounded up to a multiple of 4 (128 bits)
  int cout16_ = 0;    // Cout rounded up to a multiple of 16
  std::uint32_t last_mask_ = 0;  // valid bits of each tap's last word
  std::int32_t clamp_min_ = 0, clamp_max_ = 0;
  std::vector<std::uint32_t> filter_;   // [Cout][kpad_], pad bits and tail zero
  // SIMD layout (x86-64 CPUs with AVX-512, aarch64; else empty): the receptive field packed
  // densely in 16-bit units, hpt_ = ceil(Cin / 16) halfwords per tap (pad bits clear), kd_
  // 32-bit words per patch; AVX-512: filter words transposed so that 16 output channels of
  // one word are contiguous; NEON: dense filter rows.
  std::vector<std::uint32_t> filter_t_; // AVX-512: [kd_][cout16_]
  std::vector<std::uint32_t> filter_dn_; // NEON: dense rows [Round4(Cout)][4 * kq_], zero padded
  int kq_ = 0;                          // NEON: 128-bit words per patch (ceil(kd_ / 4))
  std::vector<std::int32_t> xs_;        // NEON scratch, bit-packed output: x [chunk_][cout16_]
  int hpt_ = 0, kd_ = 0, kds_ = 0;      // halfwords per tap, words per patch, patch stride
  int chunk_ = kBlock;                  // pixels whose patches are built at once
  std::int64_t hp_ = 0, wp_ = 0;        // zero-padded input image (img16_) height, width
  std::uint16_t last_hmask_ = 0;        // valid bits of each tap's last halfword
  std::vector<std::uint16_t> img16_;    // scratch: one input image, zero-padded, [hp_][wp_][hpt_]
  std::vector<std::uint32_t> patches_;  // scratch: patches of chunk_ pixels [chunk_][kds_]
  std::vector<std::int32_t> tap_sum_t_; // zero padding: [taps][cout16_] = Cin - 2 popcount
  std::vector<std::int32_t> corr_blk_;  // scratch: zero-padding corrections [chunk_][cout16_]
  std::vector<std::int32_t> tap_sum_;   // zero padding: [Cout][taps] = Cin - 2 popcount
  std::vector<float> mul_, bias_;       // fused m', b' [cout16_] (float output)
  std::vector<std::int32_t> thr2_;      // 2 * threshold, saturated [cout16_] (bit-packed)
  // scratch
  std::vector<std::uint32_t> patch_;    // [kpad_]
  std::vector<std::int32_t> acc_;       // [cout16_] popcounts
  std::vector<std::int32_t> corr_;      // [cout16_] zero-padding corrections
  std::vector<int> outside_;            // taps outside the input for one pixel
};

}  // namespace bconv2d
}  // namespace core
}  // namespace compute_engine

#endif  // LCE_KERNELS_CORE_BCONV2D_H_
