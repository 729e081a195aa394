// One binary DFSMN layer (BiFSMNv2 student, inference form) computed with bitwise operations.
//
// This is the kernel core: plain C++17, no TFLite dependency (the TFLite op glue lives in
// lce_kernels/tflite/). It reproduces models/dfsmn.py::DFSMNLayer (binary=True,
// training=False) for one depth index d, with the parameters folded at export time.
//
// ---------------------------------------------------------------------------------------
// Math (per sample; x[t][c], t < T frames, c < C channels; H hidden; K = l + r + 1 taps)
//
//   Dual-scale binarization of a frame v[0..n) with per-channel thresholds t0, t1, t2
//   (sign(0) = +1; bit = 1 <=> -1):
//     b1 = sign(v - t0),  r = (v - b1) - t1,  b2 = sign(r),  s = (1/n) sum_c |r_c|
//     a  = b1 + s * b2 - t2                     (s: one scalar per frame)
//
//   (a) memory block (depthwise temporal conv, binary weights sigma[k][c] = sign(w[k][c]),
//       weight scale mean_k |w[k][c]| folded into mem_mul; zero padding of a in time):
//     tau_k = t + (k - l) * dil,  V(t) = { k : 0 <= tau_k < T },  n_v = |V(t)|
//     D1[t][c] = sum_{k in V} sigma[k][c] * b1[tau_k][c]   = n_v - 2 * #{k : w_bit ^ b1_bit}
//     S2[t][c] = sum_{k in V} s[tau_k] * sigma[k][c] * b2[tau_k][c]   (float, k ascending)
//     W [t][c] = sum_{k in V} sigma[k][c]                  = n_v - 2 * #{k : w_bit}
//     z = ((D1 + S2) - t2m[c] * W) * mem_mul[c] + mem_bias[c]
//     m[t][c] = x[t][c] + PReLU(z; mem_slope[c])
//   (b) pw1 (1x1 binary conv C -> H on the dual-scale binarization of m[t]):
//     P1[t][o] = C - 2 * popcount(wbits1[o] XOR b1(m[t])),  P2 likewise with b2(m[t])
//     h[t][o] = PReLU((P1 + s_m[t] * P2) * pw1_mul[o] + pw1_bias[o]; pw1_slope[o])
//   (c) pw2 (1x1 binary conv H -> C on the dual-scale binarization of h[t]):
//     Q1, Q2 = H - 2 * popcount(wbits2[c] XOR b1/b2(h[t]))
//     out[t][c] = m[t][c] + PReLU((Q1 + s_h[t] * Q2) * pw2_mul[c] + pw2_bias[c]; pw2_slope[c])
//
//   PReLU(z; p) = z if z >= 0 else p * z.
//
// Folding (done by the exporter / tests/kernel_ref.py::fold; eps = 1e-5, g = gamma /
// sqrt(var + eps)):
//   mem_mul = g_mem * mean_k |w_mem[k][c]|,   mem_bias = beta_mem - mu_mem * g_mem
//   pw1_mul[o] = g1[o] * mean_c |W1[c][o]|,
//   pw1_bias[o] = beta1[o] - mu1[o] * g1[o] - pw1_mul[o] * sum_c sigma1[c][o] * t2_pw1[c]
//   pw2 likewise; slope pw2_slope = PReLU_d (act{d}). Every BN is the one of the chosen depth
//   index d (the model's switchable BN: memory/bn{d}, pw1/bn{d}, pw2/bn{d}); the memory and
//   pw1 PReLU slopes (memory/act, pw1_act) are shared by all depths. One Layer = one depth.
//   The t2 threshold of pw1/pw2 therefore enters only through the bias (it is constant over
//   frames); the memory block keeps t2m because W[t][c] changes at the sequence edges.
//
// SIMD paths. Both run Eval as four passes (Layer::Stage), each binarization fused into the
// pass that produces its input (the sign bits of 16 channels stored as one halfword of the
// row, the |r| sums kept in 4 lanes per frame, channel order).
//   NEON (aarch64, compile time): pointwise GEMMs in blocks of 4 weight rows x 2 frames x
//   both bit planes: per 128 weight bits and plane one EOR and one CNT, the byte counts
//   reduced by pairwise adds (ADDP) shared across rows, frames and planes, post-processing 4
//   outputs per instruction; memory block per 128 channels: the taps' XOR words in q
//   registers, plane-1 counts bit-sliced, plane-2 signs as a 5-bit code per channel (TBL +
//   CMTST per tap) and S2 a table lookup (TBL) in a per-frame table built by exactly the
//   portable additions; parameters packed per 4 channels (one multi-register load).
//   AVX-512 (x86-64, chosen at run time: AVX512F + BW + VPOPCNTDQ): pointwise GEMMs run 16
//   OUTPUT channels per register: XOR a transposed 32-bit weight word of 16 outputs with the
//   broadcast activation word of 8 frames and both planes (16 accumulators), VPOPCNTD, add;
//   memory block: tap counts in byte lanes under 64-bit masks, S2 by vpermt2ps from the same
//   per-frame table.
// All three keep the portable float evaluation order (bdfsmn.cc), so outputs are
// bit-identical across paths.
//
// Bit packing (storage, LayerSpec): words of 32 bits, LSB first (channel c is bit c % 32 of
// word c / 32), bit = 1 for a negative sign, each row padded to ceil(n / 32) words. This is
// LCE's TBitpacked (int32) layout; on a little-endian machine it is byte-identical to 64-bit
// LSB-first words. Pad bits of the stored weights may hold anything: Layer::Init copies the
// weights into 64-bit rows padded to a multiple of 128 bits with all pad bits cleared, and
// the activation packer always writes zero pad bits, so pad bits never reach a popcount.
//
// Float evaluation order is fixed (see bdfsmn.cc) and identical in the portable and the
// NEON path; compile with -ffp-contract=off and both paths give bit-identical floats. The
// integer parts (bits, D1, W, P1, P2, Q1, Q2) are exact in any build.
// ---------------------------------------------------------------------------------------
#ifndef LCE_KERNELS_CORE_BDFSMN_H_
#define LCE_KERNELS_CORE_BDFSMN_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernel_path.h"

namespace compute_engine {
namespace core {
namespace bdfsmn {

constexpr int kMaxTaps = 16;         // K = l + r + 1 <= kMaxTaps
constexpr int kMaxChannels = 65535;  // C, H (popcount sums are reduced through 16 bits)

inline int PackedWords32(int n) { return (n + 31) / 32; }
// Internal row length in 64-bit words: padded to a multiple of 128 bits (one NEON q reg).
inline int PaddedWords64(int n) { return 2 * ((n + 127) / 128); }

// kAuto: NEON on aarch64 (compile time); on x86-64 AVX-512 if the CPU has AVX512F and
// AVX512_VPOPCNTDQ (run time, __builtin_cpu_supports), else portable. The one enum of every
// op's kernel paths (kernel_path.h).
using Path = ::compute_engine::core::KernelPath;
// True if this build contains the NEON path (aarch64).
bool HasNeon();
// True if this build contains the AVX-512 path (x86-64) AND the CPU running it supports it.
bool HasAvx512();  // AVX512F + AVX512BW + AVX512_VPOPCNTDQ
// True if `path` runs as itself here (kAuto: always).
bool PathAvailable(Path path);
// The path kAuto resolves to on this build / CPU.
Path ResolvePath(Path path);
const char* PathName(Path path);

// Non-owning view of one layer's inference-form parameters (see the math above).
struct LayerSpec {
  int channels = 0;  // C
  int hidden = 0;    // H
  int left = 0;      // l
  int right = 0;     // r
  int dilation = 1;  // dil

  // memory block
  const std::uint32_t* mem_weights = nullptr;  // [K][PackedWords32(C)]
  const float* mem_t0 = nullptr;               // [C]
  const float* mem_t1 = nullptr;               // [C]
  const float* mem_t2 = nullptr;               // [C]
  const float* mem_mul = nullptr;              // [C]
  const float* mem_bias = nullptr;             // [C]
  const float* mem_slope = nullptr;            // [C]
  // pw1: C -> H
  const std::uint32_t* pw1_weights = nullptr;  // [H][PackedWords32(C)]
  const float* pw1_t0 = nullptr;               // [C]
  const float* pw1_t1 = nullptr;               // [C]
  const float* pw1_mul = nullptr;              // [H]
  const float* pw1_bias = nullptr;             // [H]
  const float* pw1_slope = nullptr;            // [H]
  // pw2: H -> C (BN_d / PReLU_d of the chosen depth index folded in)
  const std::uint32_t* pw2_weights = nullptr;  // [C][PackedWords32(H)]
  const float* pw2_t0 = nullptr;               // [H]
  const float* pw2_t1 = nullptr;               // [H]
  const float* pw2_mul = nullptr;              // [C]
  const float* pw2_bias = nullptr;             // [C]
  const float* pw2_slope = nullptr;            // [C]

  int taps() const { return left + right + 1; }
};

// Scratch for one Eval; also exposes the intermediates (for tests / tracing).
struct Workspace {
  int frames = 0;
  // Store h (pw1's output) for inspection; nothing in Eval reads it (the SIMD paths binarize
  // it as it is produced). The TFLite op sets false.
  bool keep_h = true;
  std::vector<std::uint64_t> mem_b1, mem_b2;  // [T][PaddedWords64(C)]
  std::vector<std::uint64_t> pw1_b1, pw1_b2;  // [T][PaddedWords64(C)]
  std::vector<std::uint64_t> pw2_b1, pw2_b2;  // [T][PaddedWords64(H)]
  std::vector<float> mem_s, pw1_s, pw2_s;     // [T]
  std::vector<float> m;                       // [T][C]
  std::vector<float> h;                       // [T][H]
  std::vector<float> rabs;                    // scratch: |r| of 4 frames [4][Round16(C)]
  // EvalStream: the memory block's inputs a of the state frames and the new ones,
  // [left * dilation + T][C] (sized by Prepare when right == 0)
  std::vector<float> a;
};

// Owning, validated, repacked layer.
class Layer {
 public:
  // Validates the spec (shapes, non-null pointers, finite floats) and copies everything.
  // Returns false and sets *error on invalid input; never aborts.
  bool Init(const LayerSpec& spec, std::string* error);

  int channels() const { return c_; }
  int hidden() const { return h_; }
  int left() const { return l_; }
  int right() const { return r_; }
  int dilation() const { return dil_; }
  int taps() const { return l_ + r_ + 1; }
  int words_c() const { return wc_; }  // PaddedWords64(C)
  int words_h() const { return wh_; }  // PaddedWords64(H)

  // Sizes the workspace for `frames` frames (allocates; call outside the hot loop).
  void Prepare(int frames, Workspace* ws) const;
  // x: [T][C] float, out: [T][C] float (may not alias x). ws must be Prepare()d for >= T
  // frames; returns false (computing nothing) if it is not, or if frames < 1.
  bool Eval(const float* x, int frames, float* out, Workspace* ws,
            Path path = Path::kAuto) const;

  // ---- streaming form (right == 0 only) ----
  // One hop of a stream: the layer on `frames` new frames x [T][C], with the memory block's
  // inputs a of the S = left * dilation frames before them in `state` [S][C] (zeros at the
  // start of a stream: the zero padding of the windowed layer). Computes
  //   a[t][c]   = (v1 + s[t] * v2) - t2m[c]     v1, v2 = +-1: the memory-block binarization
  //                                             of x[t] (b1, b2, s as in Eval), float32
  //   A         = [state; a]                    [S + T][C]
  //   acc[t][c] = sum_{k = 0..K-1, ascending} sigma[k][c] * A[S + t - (l - k) * dil][c]
  //               (float32, acc = first term, then +=; sigma = +-1: a sign flip, exact)
  //   z         = acc * mem_mul[c] + mem_bias[c];  m = x + PReLU(z; mem_slope)
  // then pw1 and pw2 exactly as Eval (their passes are Eval's), out [T][C]; and
  //   new_state = A[T .. T + S)                 (the last S rows: the next hop's state)
  // This is the causal layer of models/streaming.py (the state holds a, not x, so that a
  // zero state is the zero padding of a the windowed layer uses). Every path gives the same
  // bits (the float stages above run in this fixed order on every path). state and
  // new_state may alias each other, not x or out. ws: Prepare()d for >= T frames.
  // Returns false (computing nothing) if right != 0 or the workspace is too small.
  bool EvalStream(const float* x, int frames, const float* state, float* out,
                  float* new_state, Workspace* ws, Path path = Path::kAuto) const;
  // S: rows of the streaming state (left * dilation).
  int state_frames() const { return l_ * dil_; }

  // The passes of Eval, in order (Eval = all four; exposed for per-stage measurement):
  //   kBinarize  dual-scale binarization of x (memory-block bit planes, frame scales)
  //   kMemory    memory block -> m, and the pw1 binarization of m
  //   kPw1       pw1 popcount GEMM + post-processing -> h, and the pw2 binarization of h
  //   kPw2       pw2 popcount GEMM + post-processing + residual -> out
  // The SIMD paths fuse each binarization into the pass producing its input. Same
  // preconditions as Eval; each stage reads what the previous ones left in ws.
  enum class Stage { kBinarize, kMemory, kPw1, kPw2 };
  bool EvalStage(Stage stage, const float* x, int frames, float* out, Workspace* ws,
                 Path path = Path::kAuto) const;

  // ---- stages, exposed for tests (same code as used by Eval) ----
  // Dual-scale binarization + packing of `frames` rows of n floats (row stride n).
  static void Binarize(const float* v, int frames, int n, const float* t0, const float* t1,
                       std::uint64_t* b1, std::uint64_t* b2, float* s, Path path);
  // Memory block integer/float accumulators from packed bits: d1, wsum [T][C] int32,
  // s2 [T][C] float (S2 above).
  void MemoryCounts(const std::uint64_t* b1, const std::uint64_t* b2, const float* s,
                    int frames, std::int32_t* d1, std::int32_t* wsum, float* s2,
                    Path path) const;
  // Pointwise popcount accumulators: which = 1 (pw1, out [T][H]) or 2 (pw2, out [T][C]).
  void PointwiseCounts(int which, const std::uint64_t* b1, const std::uint64_t* b2,
                       int frames, std::int32_t* p1, std::int32_t* p2, Path path) const;
  // One pointwise binary conv on packed rows with its post-processing (the pw1 / pw2 pass
  // without a fused binarization; NEON or portable, AVX-512 runs portable): w [O][W] 64-bit
  // weight rows of K bits, b1 / b2 [T][W], s [T]; out[t][o] = (res[t][o] +)
  // PReLU((P1 + s[t] * P2) * mul[o] + bias[o]; slope[o]), res may be nullptr; mul, bias,
  // slope padded to a multiple of 4. For drivers measuring other binary layers
  // (firmware_sim/drivers/bdfsmn_bench.cc).
  static void Pointwise(const std::uint64_t* w, int O, int K, int W, const std::uint64_t* b1,
                        const std::uint64_t* b2, const float* s, int frames, const float* mul,
                        const float* bias, const float* slope, const float* res, float* out,
                        Path path);

 private:
  friend struct Kernels;
  int c_ = 0, h_ = 0, l_ = 0, r_ = 0, dil_ = 1, wc_ = 0, wh_ = 0;
  std::vector<std::uint64_t> mem_w_;  // [K][wc_]
  std::vector<std::uint64_t> pw1_w_;  // [H][wc_]
  std::vector<std::uint64_t> pw2_w_;  // [C][wh_]
  // Prefix counts of set memory-weight bits over taps (NEON memory block: the W term of a
  // frame is the difference of two rows): [K + 1][Round16(C)].
  std::vector<std::int32_t> mem_wpre_;
  // t2[c] * float(W) of every window [klo, khi) of valid taps (klo <= l < khi):
  // [(l + 1) * (r + 1)][Round16(C)], empty if larger than kMaxMemTw floats.
  static constexpr std::size_t kMaxMemTw = std::size_t{1} << 18;
  // EvalStream (right == 0): the float sign mask (0x80000000 for a negative weight) of tap k,
  // channel c: [K][Round16(C)]
  std::vector<std::uint32_t> mem_sgn_;
  std::vector<float> mem_tw_;
  const float* MemTw(int klo, int khi) const;
  // AVX-512 layout (x86-64 only, built by Init when the CPU has it): 32-bit weight words
  // transposed so that 16 consecutive output channels of one input word are contiguous:
  // pw1_wt_[j][o] = word j of pw1 row o, o padded to a multiple of 16 with zero rows.
  std::vector<std::uint32_t> pw1_wt_;  // [PackedWords32(C)][Round16(H)]
  std::vector<std::uint32_t> pw2_wt_;  // [PackedWords32(H)][Round16(C)]
  // NEON layout (aarch64 only, built by Init): per 4 channels the parameter rows one pass
  // reads together, in blocks of 4 floats (one multi-register load, LD1 {v0-v3}):
  std::vector<float> bin_pk_;  // [ceil(C/4)][2][4]: mem t0, t1
  std::vector<float> mem_pk_;  // [ceil(C/4)][5][4]: mem mul, bias, slope, pw1 t0, pw1 t1
  std::vector<float> pw1_pk_;  // [ceil(H/4)][5][4]: pw1 mul, bias, slope, pw2 t0, pw2 t1
  std::vector<float> pw2_pk_;  // [ceil(C/4)][3][4]: pw2 mul, bias, slope
  // PReLU(z; a) = (z < 0 ? a * z : z) equals max(z, a * z) bit for bit when every slope
  // a <= 1 (a * z then lies between 0 and z for z < 0 and below z for z >= 0, and rounding
  // keeps the order) and z is never -0: z = u + bias is -0 only when bias is, so no bias may be
  // -0. Per stage (Init): the NEON passes then spend 2 instructions per 4 values, not 3.
  static bool MaxPreluExact(const std::vector<float>& slope, const std::vector<float>& bias);
  bool mem_max_ = false, pw1_max_ = false, pw2_max_ = false;
  std::vector<float> mem_t0_, mem_t1_, mem_t2_, mem_mul_, mem_bias_, mem_slope_;
  std::vector<float> pw1_t0_, pw1_t1_, pw1_mul_, pw1_bias_, pw1_slope_;
  std::vector<float> pw2_t0_, pw2_t1_, pw2_mul_, pw2_bias_, pw2_slope_;
};

// Repack `rows` rows of 32-bit LSB-first words (ceil(n/32) per row) into 64-bit rows of
// `words64` words, clearing every bit at index >= n.
void RepackRows(const std::uint32_t* src, int rows, int n, int words64, std::uint64_t* dst);

}  // namespace bdfsmn
}  // namespace core
}  // namespace compute_engine

#endif  // LCE_KERNELS_CORE_BDFSMN_H_
