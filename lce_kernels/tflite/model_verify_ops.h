// What the model verifier knows about individual builtin ops (used by model_verify.cc):
// the options table each expects, which options must be present, where an optional (-1)
// input is allowed and how many operands each takes. Measured against the TF 2.16 kernels
// the project runs (each rule names the crash or error it prevents); ops that are not listed
// get only the generic checks.
#ifndef LCE_KERNELS_TFLITE_MODEL_VERIFY_OPS_H_
#define LCE_KERNELS_TFLITE_MODEL_VERIFY_OPS_H_

#include <cstdint>

#include "tensorflow/lite/schema/schema_generated.h"

namespace compute_engine {
namespace tflite {
namespace verify_ops {

namespace tfl = ::tflite;

// Builtin options table type TFLite's parser expects for common opcodes (NONE is accepted,
// the parser then uses zero defaults, except for the ops of OptionsRequired whose zero
// strides / sizes kernels divide by). BuiltinOptions_NONE as the expected type marks
// ops without options. Opcodes not listed are not checked (the verifier has already
// verified whatever table the union names).
struct OptionsRule {
  tfl::BuiltinOperator op;
  tfl::BuiltinOptions options;
};

constexpr OptionsRule kOptionsRules[] = {
    {tfl::BuiltinOperator_CONV_2D, tfl::BuiltinOptions_Conv2DOptions},
    {tfl::BuiltinOperator_DEPTHWISE_CONV_2D, tfl::BuiltinOptions_DepthwiseConv2DOptions},
    {tfl::BuiltinOperator_TRANSPOSE_CONV, tfl::BuiltinOptions_TransposeConvOptions},
    {tfl::BuiltinOperator_FULLY_CONNECTED, tfl::BuiltinOptions_FullyConnectedOptions},
    {tfl::BuiltinOperator_BATCH_MATMUL, tfl::BuiltinOptions_BatchMatMulOptions},
    {tfl::BuiltinOperator_AVERAGE_POOL_2D, tfl::BuiltinOptions_Pool2DOptions},
    {tfl::BuiltinOperator_MAX_POOL_2D, tfl::BuiltinOptions_Pool2DOptions},
    {tfl::BuiltinOperator_L2_POOL_2D, tfl::BuiltinOptions_Pool2DOptions},
    {tfl::BuiltinOperator_RESHAPE, tfl::BuiltinOptions_ReshapeOptions},
    {tfl::BuiltinOperator_SQUEEZE, tfl::BuiltinOptions_SqueezeOptions},
    {tfl::BuiltinOperator_EXPAND_DIMS, tfl::BuiltinOptions_ExpandDimsOptions},
    {tfl::BuiltinOperator_TRANSPOSE, tfl::BuiltinOptions_TransposeOptions},
    {tfl::BuiltinOperator_STRIDED_SLICE, tfl::BuiltinOptions_StridedSliceOptions},
    {tfl::BuiltinOperator_SLICE, tfl::BuiltinOptions_SliceOptions},
    {tfl::BuiltinOperator_CONCATENATION, tfl::BuiltinOptions_ConcatenationOptions},
    {tfl::BuiltinOperator_SPLIT, tfl::BuiltinOptions_SplitOptions},
    {tfl::BuiltinOperator_SPLIT_V, tfl::BuiltinOptions_SplitVOptions},
    {tfl::BuiltinOperator_SPACE_TO_DEPTH, tfl::BuiltinOptions_SpaceToDepthOptions},
    {tfl::BuiltinOperator_DEPTH_TO_SPACE, tfl::BuiltinOptions_DepthToSpaceOptions},
    {tfl::BuiltinOperator_PACK, tfl::BuiltinOptions_PackOptions},
    {tfl::BuiltinOperator_UNPACK, tfl::BuiltinOptions_UnpackOptions},
    {tfl::BuiltinOperator_GATHER, tfl::BuiltinOptions_GatherOptions},
    {tfl::BuiltinOperator_TILE, tfl::BuiltinOptions_TileOptions},
    {tfl::BuiltinOperator_PAD, tfl::BuiltinOptions_PadOptions},
    {tfl::BuiltinOperator_PADV2, tfl::BuiltinOptions_PadV2Options},
    {tfl::BuiltinOperator_MIRROR_PAD, tfl::BuiltinOptions_MirrorPadOptions},
    {tfl::BuiltinOperator_ADD, tfl::BuiltinOptions_AddOptions},
    {tfl::BuiltinOperator_SUB, tfl::BuiltinOptions_SubOptions},
    {tfl::BuiltinOperator_MUL, tfl::BuiltinOptions_MulOptions},
    {tfl::BuiltinOperator_DIV, tfl::BuiltinOptions_DivOptions},
    {tfl::BuiltinOperator_SQUARED_DIFFERENCE, tfl::BuiltinOptions_SquaredDifferenceOptions},
    {tfl::BuiltinOperator_MAXIMUM, tfl::BuiltinOptions_MaximumMinimumOptions},
    {tfl::BuiltinOperator_MINIMUM, tfl::BuiltinOptions_MaximumMinimumOptions},
    {tfl::BuiltinOperator_MEAN, tfl::BuiltinOptions_ReducerOptions},
    {tfl::BuiltinOperator_SUM, tfl::BuiltinOptions_ReducerOptions},
    {tfl::BuiltinOperator_REDUCE_MAX, tfl::BuiltinOptions_ReducerOptions},
    {tfl::BuiltinOperator_REDUCE_MIN, tfl::BuiltinOptions_ReducerOptions},
    {tfl::BuiltinOperator_REDUCE_PROD, tfl::BuiltinOptions_ReducerOptions},
    {tfl::BuiltinOperator_ARG_MAX, tfl::BuiltinOptions_ArgMaxOptions},
    {tfl::BuiltinOperator_ARG_MIN, tfl::BuiltinOptions_ArgMinOptions},
    {tfl::BuiltinOperator_SOFTMAX, tfl::BuiltinOptions_SoftmaxOptions},
    {tfl::BuiltinOperator_LOG_SOFTMAX, tfl::BuiltinOptions_LogSoftmaxOptions},
    {tfl::BuiltinOperator_L2_NORMALIZATION, tfl::BuiltinOptions_L2NormOptions},
    {tfl::BuiltinOperator_LEAKY_RELU, tfl::BuiltinOptions_LeakyReluOptions},
    {tfl::BuiltinOperator_HARD_SWISH, tfl::BuiltinOptions_HardSwishOptions},
    {tfl::BuiltinOperator_GELU, tfl::BuiltinOptions_GeluOptions},
    {tfl::BuiltinOperator_ABS, tfl::BuiltinOptions_AbsOptions},
    {tfl::BuiltinOperator_SIGN, tfl::BuiltinOptions_SignOptions},
    {tfl::BuiltinOperator_EXP, tfl::BuiltinOptions_ExpOptions},
    {tfl::BuiltinOperator_NEG, tfl::BuiltinOptions_NegOptions},
    {tfl::BuiltinOperator_SQUARE, tfl::BuiltinOptions_SquareOptions},
    {tfl::BuiltinOperator_COS, tfl::BuiltinOptions_CosOptions},
    {tfl::BuiltinOperator_POW, tfl::BuiltinOptions_PowOptions},
    {tfl::BuiltinOperator_CAST, tfl::BuiltinOptions_CastOptions},
    {tfl::BuiltinOperator_SHAPE, tfl::BuiltinOptions_ShapeOptions},
    {tfl::BuiltinOperator_FILL, tfl::BuiltinOptions_FillOptions},
    {tfl::BuiltinOperator_QUANTIZE, tfl::BuiltinOptions_QuantizeOptions},
    {tfl::BuiltinOperator_DEQUANTIZE, tfl::BuiltinOptions_DequantizeOptions},
    {tfl::BuiltinOperator_RESIZE_BILINEAR, tfl::BuiltinOptions_ResizeBilinearOptions},
    {tfl::BuiltinOperator_RESIZE_NEAREST_NEIGHBOR,
     tfl::BuiltinOptions_ResizeNearestNeighborOptions},
    {tfl::BuiltinOperator_CUMSUM, tfl::BuiltinOptions_CumsumOptions},
    {tfl::BuiltinOperator_WHILE, tfl::BuiltinOptions_WhileOptions},
    {tfl::BuiltinOperator_IF, tfl::BuiltinOptions_IfOptions},
    {tfl::BuiltinOperator_CALL_ONCE, tfl::BuiltinOptions_CallOnceOptions},
    // No options table in the schema.
    {tfl::BuiltinOperator_RELU, tfl::BuiltinOptions_NONE},
    {tfl::BuiltinOperator_RELU6, tfl::BuiltinOptions_NONE},
    {tfl::BuiltinOperator_RELU_N1_TO_1, tfl::BuiltinOptions_NONE},
    {tfl::BuiltinOperator_LOGISTIC, tfl::BuiltinOptions_NONE},
    {tfl::BuiltinOperator_TANH, tfl::BuiltinOptions_NONE},
    {tfl::BuiltinOperator_PRELU, tfl::BuiltinOptions_NONE},
    {tfl::BuiltinOperator_FLOOR, tfl::BuiltinOptions_NONE},
    {tfl::BuiltinOperator_SQRT, tfl::BuiltinOptions_NONE},
    {tfl::BuiltinOperator_RSQRT, tfl::BuiltinOptions_NONE},
};

// Whether input position k of a builtin op may be -1 (TFLite's kTfLiteOptionalTensor).
// Kernels that do not expect an optional input read it through GetInput(), get nullptr and
// crash (measured: RESHAPE and PADV2 with input 0 = -1 segfault in TF 2.16), so -1 is
// accepted only where the schema documents an optional input: the bias of the convolutions
// and FULLY_CONNECTED (TF 2.16 then runs without bias or reports "Tensor at index 2 was
// optional but was expected") and the optional inputs of the recurrent ops.
inline bool OptionalInputAllowed(tfl::BuiltinOperator op, std::uint32_t k) {
  switch (op) {
    case tfl::BuiltinOperator_FULLY_CONNECTED:
    case tfl::BuiltinOperator_CONV_2D:
    case tfl::BuiltinOperator_DEPTHWISE_CONV_2D:
      return k == 2;
    case tfl::BuiltinOperator_TRANSPOSE_CONV:
      return k == 3;
    case tfl::BuiltinOperator_LSTM:
    case tfl::BuiltinOperator_UNIDIRECTIONAL_SEQUENCE_LSTM:
    case tfl::BuiltinOperator_BIDIRECTIONAL_SEQUENCE_LSTM:
    case tfl::BuiltinOperator_SVDF:
    case tfl::BuiltinOperator_RNN:
    case tfl::BuiltinOperator_UNIDIRECTIONAL_SEQUENCE_RNN:
    case tfl::BuiltinOperator_BIDIRECTIONAL_SEQUENCE_RNN:
      return k >= 1;
    default:
      return false;
  }
}

// Ops whose options must be present: TFLite's parser would fill in zero strides / filter /
// block sizes, which the kernels divide by.
inline bool OptionsRequired(tfl::BuiltinOperator op) {
  switch (op) {
    case tfl::BuiltinOperator_CONV_2D:
    case tfl::BuiltinOperator_DEPTHWISE_CONV_2D:
    case tfl::BuiltinOperator_TRANSPOSE_CONV:
    case tfl::BuiltinOperator_AVERAGE_POOL_2D:
    case tfl::BuiltinOperator_MAX_POOL_2D:
    case tfl::BuiltinOperator_L2_POOL_2D:
    case tfl::BuiltinOperator_SPACE_TO_DEPTH:
    case tfl::BuiltinOperator_DEPTH_TO_SPACE:
    case tfl::BuiltinOperator_SPLIT:
      return true;
    default:
      return false;
  }
}

inline const OptionsRule* FindRule(tfl::BuiltinOperator op) {
  for (const auto& r : kOptionsRules) {
    if (r.op == op) return &r;
  }
  return nullptr;
}


// Operand counts of the builtin ops (as the TF 2.16 kernels expect them; -1 = no upper
// bound). Most kernels check their counts themselves, some read operands first (measured:
// DEPTHWISE_CONV_2D with 2 inputs and SIGN with no output segfault), so the verifier checks
// them for every listed op. Unlisted ops need at least one output unless they have none by
// design (ASSIGN_VARIABLE, CALL_ONCE, HASHTABLE_IMPORT).
struct ArityRule {
  tfl::BuiltinOperator op;
  int min_in, max_in, min_out, max_out;
};

constexpr ArityRule kArityRules[] = {
    {tfl::BuiltinOperator_CONV_2D, 2, 3, 1, 1},
    {tfl::BuiltinOperator_DEPTHWISE_CONV_2D, 3, 3, 1, 1},
    {tfl::BuiltinOperator_TRANSPOSE_CONV, 3, 4, 1, 1},
    {tfl::BuiltinOperator_FULLY_CONNECTED, 2, 3, 1, 2},
    {tfl::BuiltinOperator_BATCH_MATMUL, 2, 2, 1, 1},
    {tfl::BuiltinOperator_AVERAGE_POOL_2D, 1, 1, 1, 1},
    {tfl::BuiltinOperator_MAX_POOL_2D, 1, 1, 1, 1},
    {tfl::BuiltinOperator_RESHAPE, 1, 2, 1, 1},
    {tfl::BuiltinOperator_SQUEEZE, 1, 1, 1, 1},
    {tfl::BuiltinOperator_EXPAND_DIMS, 2, 2, 1, 1},
    {tfl::BuiltinOperator_TRANSPOSE, 2, 2, 1, 1},
    {tfl::BuiltinOperator_STRIDED_SLICE, 4, 4, 1, 1},
    {tfl::BuiltinOperator_CONCATENATION, 1, -1, 1, 1},
    {tfl::BuiltinOperator_GATHER, 2, 2, 1, 1},
    {tfl::BuiltinOperator_PAD, 2, 2, 1, 1},
    {tfl::BuiltinOperator_PADV2, 2, 3, 1, 1},
    {tfl::BuiltinOperator_ADD, 2, 2, 1, 1},
    {tfl::BuiltinOperator_SUB, 2, 2, 1, 1},
    {tfl::BuiltinOperator_MUL, 2, 2, 1, 1},
    {tfl::BuiltinOperator_DIV, 2, 2, 1, 1},
    {tfl::BuiltinOperator_SQUARED_DIFFERENCE, 2, 2, 1, 1},
    {tfl::BuiltinOperator_MAXIMUM, 2, 2, 1, 1},
    {tfl::BuiltinOperator_MINIMUM, 2, 2, 1, 1},
    {tfl::BuiltinOperator_MEAN, 2, 2, 1, 1},
    {tfl::BuiltinOperator_SUM, 2, 2, 1, 1},
    {tfl::BuiltinOperator_REDUCE_MAX, 2, 2, 1, 1},
    {tfl::BuiltinOperator_SOFTMAX, 1, 1, 1, 1},
    {tfl::BuiltinOperator_PRELU, 2, 2, 1, 1},
    {tfl::BuiltinOperator_ABS, 1, 1, 1, 1},
    {tfl::BuiltinOperator_SIGN, 1, 1, 1, 1},
    {tfl::BuiltinOperator_RELU, 1, 1, 1, 1},
    {tfl::BuiltinOperator_RELU6, 1, 1, 1, 1},
    {tfl::BuiltinOperator_LOGISTIC, 1, 1, 1, 1},
    {tfl::BuiltinOperator_TANH, 1, 1, 1, 1},
    {tfl::BuiltinOperator_QUANTIZE, 1, 1, 1, 1},
    {tfl::BuiltinOperator_DEQUANTIZE, 1, 1, 1, 1},
    {tfl::BuiltinOperator_CAST, 1, 1, 1, 1},
};

// The rule for `op`, or nullptr (then only "at least one output" is required).
inline const ArityRule* FindArity(tfl::BuiltinOperator op) {
  for (const auto& r : kArityRules) {
    if (r.op == op) return &r;
  }
  return nullptr;
}

// Quantized ADD / SUB (int8, uint8, int16 without power-of-two scales): TF 2.16's Prepare
// passes s_in / (2 max(s_in1, s_in2)) and 2 max(s_in1, s_in2) / (2^shift s_out), shift 20
// (15 for int16), to QuantizeMultiplierSmallerThanOneExp, which ABORTS unless each lies in
// (0, 1) (measured: a flipped scale exponent, or an int8 tensor without quantization, kills
// the process with SIGABRT). Scales as TFLite sees them: the first scale, 0 if none.
inline bool QuantizedAddScalesOk(double s1, double s2, double s_out, int shift) {
  if (!(s1 > 0.0) || !(s2 > 0.0) || !(s_out > 0.0)) return false;
  const double twice_max = 2.0 * (s1 > s2 ? s1 : s2);
  const double out = twice_max / (static_cast<double>(1 << shift) * s_out);
  return s1 / twice_max > 0.0 && s2 / twice_max > 0.0 && out > 0.0 && out < 1.0;
}

// RESOURCE / VARIANT tensors are handles, not data: only these ops take or make them (and
// the control-flow ops pass them through). Any other kernel reads the handle as numbers
// (measured: an activation retyped RESOURCE makes invoke segfault).
inline bool TakesHandles(tfl::BuiltinOperator op) {
  switch (op) {
    case tfl::BuiltinOperator_VAR_HANDLE:
    case tfl::BuiltinOperator_READ_VARIABLE:
    case tfl::BuiltinOperator_ASSIGN_VARIABLE:
    case tfl::BuiltinOperator_HASHTABLE:
    case tfl::BuiltinOperator_HASHTABLE_FIND:
    case tfl::BuiltinOperator_HASHTABLE_IMPORT:
    case tfl::BuiltinOperator_HASHTABLE_SIZE:
    case tfl::BuiltinOperator_CALL_ONCE:
    case tfl::BuiltinOperator_WHILE:
    case tfl::BuiltinOperator_IF:
      return true;
    default:
      return false;
  }
}

inline bool MayHaveNoOutput(tfl::BuiltinOperator op) {
  return op == tfl::BuiltinOperator_ASSIGN_VARIABLE || op == tfl::BuiltinOperator_CALL_ONCE ||
         op == tfl::BuiltinOperator_HASHTABLE_IMPORT;
}

}  // namespace verify_ops
}  // namespace tflite
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLITE_MODEL_VERIFY_OPS_H_
