// THE C++ statement of the project's op contract (its Python twin: lce_kernels/ops.py).
//
// Every C++ file of the project (TFLite glue, TFLite Micro glue, model verifier, tests,
// drivers) takes op names, input order, option keys and the option enums from here; no other
// C++ file spells them. Header only, C++17, no TFLite or flatbuffers dependency, so that the
// TFLite glue (tflite/), the TFLite Micro glue (firmware_sim/) and the kernel cores can all
// include it.
//
//   op (custom code)   inputs                                          options (FlexBuffers map)
//   LceBDfsmn          x, mem_w, mem_p, pw1_w, pw1_t, pw1_p,            channels, hidden, left,
//                      pw2_w, pw2_t, pw2_p                              right, dilation
//                      (streaming form: + state -> outputs out, new_state)
//   LceQuantize        x                                                (none)
//   LceDequantize      x                                                (none)
//   LceBconv2d         input, filter, post_activation_multiplier,       stride_height,
//                      post_activation_bias, output_threshold           stride_width,
//                                                                       dilation_height_factor,
//                                                                       dilation_width_factor,
//                                                                       padding, pad_values,
//                                                                       channels_in,
//                                                                       fused_activation_function
//   LceDualQuantize    x, thresholds  -> outputs b1, b2, scale          (none)
//
// LceQuantize / LceDequantize / LceBconv2d (and LceBMaxPool2d, known to the model verifier
// only) are Larq Compute Engine 0.16's ops as its converter emits them; LceBDfsmn is the
// project's binary DFSMN layer (lce_kernels/README.md "Op interface"); LceDualQuantize is the
// project's dual-scale binarization (lce_kernels/ops.py has its math), OWN_OPS the two.
#ifndef LCE_KERNELS_CORE_OP_CONTRACT_H_
#define LCE_KERNELS_CORE_OP_CONTRACT_H_

#include <cstddef>
#include <cstdint>

namespace compute_engine {
namespace ops {

// ------------------------------------------------------------------------------ op names
// Same names and values as lce_kernels/ops.py (BDFSMN, QUANTIZE, DEQUANTIZE, BCONV2D,
// BMAXPOOL2D, LCE_PREFIX, LCE_OPS, BITS_PER_WORD; PROJECT_OPS is ops.py's ALL_OPS; per op
// the input names, row names and option keys; tests/test_kernel_build.py compares the two).
inline constexpr char BDFSMN[] = "LceBDfsmn";
inline constexpr char QUANTIZE[] = "LceQuantize";
inline constexpr char DEQUANTIZE[] = "LceDequantize";
inline constexpr char BCONV2D[] = "LceBconv2d";
inline constexpr char DUAL_QUANTIZE[] = "LceDualQuantize";
// LCE's binary max pool: not implemented by the project, only checked by the model verifier.
inline constexpr char BMAXPOOL2D[] = "LceBMaxPool2d";
// Every LCE op's custom code starts with this (the verifier treats them as LCE's).
inline constexpr char LCE_PREFIX[] = "Lce";

// The ops the project's registerer provides (tflite/lce_ops_register.h), in registration
// order (ops.py: ALL_OPS), and the LCE-compatible ones among them (ops.py: LCE_OPS).
inline constexpr const char* PROJECT_OPS[] = {QUANTIZE, DEQUANTIZE, BCONV2D, BDFSMN,
                                               DUAL_QUANTIZE};
inline constexpr std::size_t kNumProjectOps = sizeof(PROJECT_OPS) / sizeof(PROJECT_OPS[0]);
inline constexpr const char* LCE_OPS[] = {QUANTIZE, DEQUANTIZE, BCONV2D};
// The project's own ops (no LCE runtime has them; ops.py: OWN_OPS).
inline constexpr const char* OWN_OPS[] = {BDFSMN, DUAL_QUANTIZE};

// ------------------------------------------------------------------------- bit packing
// LCE's bit-packed int32 layout: channel c is bit c % 32 of word c / 32 (LSB first); bit 1
// means -1; rows padded to whole words.
inline constexpr int BITS_PER_WORD = 32;
constexpr std::int64_t PackedWords(std::int64_t n) {
  return (n + BITS_PER_WORD - 1) / BITS_PER_WORD;
}

// -------------------------------------------------------------------------- LceBDfsmn
namespace bdfsmn {

// Input order (named indices). All but kX are constant tensors.
//   kX     f32 [T, C] | [B, T, C] | [B, T, 1, C]
//   kMemW  i32 [K, PackedWords(C)], K = left + right + 1   (memory taps, bit-packed signs)
//   kMemP  f32 [kMemRows, C]                               (MemRow)
//   kPw1W  i32 [H, PackedWords(C)]                         (pw1 filters, bit-packed signs)
//   kPw1T  f32 [kThreshRows, C]                            (ThreshRow)
//   kPw1P  f32 [kPwRows, H]                                (PwRow)
//   kPw2W  i32 [C, PackedWords(H)]
//   kPw2T  f32 [kThreshRows, H]
//   kPw2P  f32 [kPwRows, C]
enum Input : int {
  kX = 0,
  kMemW,
  kMemP,
  kPw1W,
  kPw1T,
  kPw1P,
  kPw2W,
  kPw2T,
  kPw2P,
  kNumInputs
};
inline constexpr int kNumOutputs = 1;
// Names of the inputs in order (tensor names written by the exporter; lce_kernels/ops.py).
inline constexpr const char* kInputNames[kNumInputs] = {
    "x", "mem_w", "mem_p", "pw1_w", "pw1_t", "pw1_p", "pw2_w", "pw2_t", "pw2_p"};

// Streaming form (one hop of a stream; right must be 0): one more input after the nine, the
// memory block's state, and one more output (core/bdfsmn.h Layer::EvalStream has the math):
//   kState     f32 x's rank: [S, C] | [B, S, C] | [B, S, 1, C], S = left * dilation, not
//              constant: the memory-block inputs a of the S frames before x (zeros at reset)
//   outputs    kOut (x's shape), kNewState (state's shape: the next hop's state)
// The op is in its streaming form exactly when it has kNumStreamingInputs inputs.
inline constexpr int kState = kNumInputs;
inline constexpr int kNumStreamingInputs = kNumInputs + 1;
enum Output : int { kOut = 0, kNewState, kNumStreamingOutputs };
inline constexpr char kStateName[] = "state";
inline constexpr const char* kOutputNames[kNumStreamingOutputs] = {"out", "new_state"};

// Rows of the float parameter tensors.
enum MemRow : int { kMemT0 = 0, kMemT1, kMemT2, kMemMul, kMemBias, kMemSlope, kMemRows };
enum ThreshRow : int { kT0 = 0, kT1, kThreshRows };
enum PwRow : int { kPwMul = 0, kPwBias, kPwSlope, kPwRows };

// Option keys (a FlexBuffers map of five integers), in this order.
inline constexpr char kChannels[] = "channels";
inline constexpr char kHidden[] = "hidden";
inline constexpr char kLeft[] = "left";
inline constexpr char kRight[] = "right";
inline constexpr char kDilation[] = "dilation";
inline constexpr const char* kOptionKeys[] = {kChannels, kHidden, kLeft, kRight, kDilation};
inline constexpr int kNumOptions = sizeof(kOptionKeys) / sizeof(kOptionKeys[0]);

}  // namespace bdfsmn

// ------------------------------------------------------------ LceQuantize / LceDequantize
namespace quantize {
inline constexpr int kInput = 0, kNumInputs = 1, kNumOutputs = 1;
}  // namespace quantize
namespace dequantize {
inline constexpr int kInput = 0, kNumInputs = 1, kNumOutputs = 1;
}  // namespace dequantize

// --------------------------------------------------------------------------- LceBconv2d
namespace bconv2d {

// Input order of LCE 0.16's LceBconv2d. Float output: multiplier and bias used, threshold
// absent (-1); bit-packed (int32) output: threshold used, multiplier and bias absent (-1).
enum Input : int {
  kInput = 0,
  kFilter,
  kPostActivationMultiplier,
  kPostActivationBias,
  kThreshold,
  kNumInputs
};
inline constexpr int kNumOutputs = 1;

// Option keys (the eight integers LCE 0.16's converter writes).
inline constexpr char kStrideHeight[] = "stride_height";
inline constexpr char kStrideWidth[] = "stride_width";
inline constexpr char kDilationHeight[] = "dilation_height_factor";
inline constexpr char kDilationWidth[] = "dilation_width_factor";
inline constexpr char kPadding[] = "padding";
inline constexpr char kPadValues[] = "pad_values";
inline constexpr char kChannelsIn[] = "channels_in";
inline constexpr char kFusedActivation[] = "fused_activation_function";
inline constexpr const char* kOptionKeys[] = {kStrideHeight, kStrideWidth, kDilationHeight,
                                              kDilationWidth, kPadding,    kPadValues,
                                              kChannelsIn,   kFusedActivation};
inline constexpr int kNumOptions = sizeof(kOptionKeys) / sizeof(kOptionKeys[0]);

// Option values: the TFLite schema's enums. padding SAME = 0, VALID = 1; fused activation
// NONE = 0, RELU = 1, RELU_N1_TO_1 = 2, RELU6 = 3 (TANH = 4, SIGN_BIT = 5 unsupported).
inline constexpr int kPaddingSame = 0, kPaddingValid = 1;
inline constexpr int kActNone = 0, kActRelu = 1, kActReluN1To1 = 2, kActRelu6 = 3;

}  // namespace bconv2d

// ---------------------------------------------------------------------- LceDualQuantize
// The dual-scale binarization of an activation (models/dual_scale.py), one op:
//   b1 = pack(x - t0 < 0); v1 = b1 ? -1 : +1; r = (x - v1) - t1 (float32, in this order);
//   b2 = pack(r < 0); s = mean |r| over the axes where s's dim is 1.
//   kX          f32 [B, ..., C] (rank 2..4)
//   kThresholds f32 [kThreshRows, C] constant (rows bdfsmn::ThreshRow: t0, t1)
//   kB1, kB2    i32 [B, ..., PackedWords(C)]
//   kScale      f32, x's rank: last dim 1, first dim B, every other dim x's or 1
namespace dual_quantize {
enum Input : int { kX = 0, kThresholds, kNumInputs };
enum Output : int { kB1 = 0, kB2, kScale, kNumOutputs };
inline constexpr const char* kInputNames[kNumInputs] = {"x", "thresholds"};
inline constexpr const char* kOutputNames[kNumOutputs] = {"b1", "b2", "scale"};
}  // namespace dual_quantize

// ---------------------------------------------------------- LceBMaxPool2d (verifier only)
namespace bmaxpool2d {
inline constexpr char kFilterHeight[] = "filter_height";
inline constexpr char kFilterWidth[] = "filter_width";
inline constexpr char kStrideHeight[] = "stride_height";
inline constexpr char kStrideWidth[] = "stride_width";
inline constexpr char kPadding[] = "padding";
}  // namespace bmaxpool2d

}  // namespace ops
}  // namespace compute_engine

#endif  // LCE_KERNELS_CORE_OP_CONTRACT_H_
