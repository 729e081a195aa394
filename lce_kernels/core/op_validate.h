// The Prepare checks of every op of the project (ops::BDFSMN, QUANTIZE, DEQUANTIZE, BCONV2D,
// DUAL_QUANTIZE),
// written once for both runtimes: the TFLite glue (tflite/bdfsmn_op.cc, tflite/lce_ops.cc)
// and the TensorFlow Lite Micro glue (tflm/bdfsmn_tflm.cc, tflm/lce_ops_tflm.cc) describe the
// node as plain structs (tensor counts; per tensor presence, element type, shape, byte size,
// data, constness, quantization) plus the op's parsed options, and get either what Prepare
// needs (the kernel built, batch, output shape) or ONE error message, the same text in both
// runtimes for the same malformed model (each glue prefixes it with the op's name).
//
// No TFLite types: the glue maps TfLiteType to DType and decides constness itself (TFLite:
// kTfLiteMmapRo or kTfLitePersistentRo; TFLM: kTfLiteMmapRo). The one difference between
// the runtimes is the output shape (OutputShape): TFLite resizes the output after a
// successful validation (kResize); TFLM cannot, so the model's output shape and byte size
// are checked (kFixed).
//
// Option values come parsed (tflite/bdfsmn_options.h, tflite/bconv2d_options.h: FlexBuffers,
// verified); their ranges are checked here. Option keys in messages are op_contract.h's.
#ifndef LCE_KERNELS_CORE_OP_VALIDATE_H_
#define LCE_KERNELS_CORE_OP_VALIDATE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "bconv2d.h"
#include "bdfsmn.h"
#include "dual_quantize.h"
#include "op_options.h"

namespace compute_engine {
namespace core {
namespace op_validate {

// Element types (the glue maps TfLiteType; everything else is kOther).
enum class DType { kOther, kFloat32, kInt32, kInt8, kUInt8, kBool, kInt16, kInt64, kFloat16 };
const char* DTypeName(DType t);  // "float32", "int32", ..., "other"

// One tensor of the node as Prepare sees it. Views only: dims and data belong to the runtime
// and must stay valid for the call.
struct Tensor {
  bool present = false;        // false: absent (index -1) or out of range
  DType type = DType::kOther;
  const int* dims = nullptr;   // [rank]; nullptr: no shape
  int rank = -1;               // -1: no shape
  std::size_t bytes = 0;
  const void* data = nullptr;  // constants: the values; others may be nullptr in Prepare
  bool is_const = false;
  float scale = 0.0f;          // per-tensor quantization (int8)
  std::int32_t zero_point = 0;
};

// The node: its input / output counts (-1: no list) and tensors.
constexpr int kMaxInputs = 10;  // the most inputs of any op (ops::bdfsmn::kNumStreamingInputs)
constexpr int kMaxOutputs = 3;  // the most outputs of any op (ops::dual_quantize::kNumOutputs)
struct Node {
  int num_inputs = -1;
  int num_outputs = -1;
  Tensor inputs[kMaxInputs];    // the first min(num_inputs, kMaxInputs)
  Tensor outputs[kMaxOutputs];  // the first min(num_outputs, kMaxOutputs)
  Tensor output;                // output 0 (= outputs[0]; the one-output ops read this)
};

enum class OutputShape {
  kResize,  // TFLite: the glue resizes the output to the plan's shape
  kFixed,   // TFLM: the model's output shape and byte size must already be the plan's
};

// ---------------------------------------------------------------------------- ops::BDFSMN
// (BdfsmnOptions: op_options.h)
struct BdfsmnPlan {
  int batch = 0, frames = 0;
  int rank = 0;
  int out_dims[4] = {0, 0, 0, 0};  // = x's shape
  bool streaming = false;          // the streaming form (state in, new_state out)
  int state_frames = 0;            // S = left * dilation (streaming)
  int state_dims[4] = {0, 0, 0, 0};  // = the state's shape (streaming)
};
// Checks options, inputs (x, the eight constant parameter tensors, and in the streaming form
// the state: ops::bdfsmn::kNumStreamingInputs inputs, right == 0) and the outputs, then
// builds *layer (bdfsmn::Layer::Init from the constants). False with *error otherwise.
bool ValidateBdfsmn(const BdfsmnOptions& options, const Node& node, OutputShape shape,
                    bdfsmn::Layer* layer, BdfsmnPlan* plan, std::string* error);

// ------------------------------------------------------------ ops::QUANTIZE / DEQUANTIZE
struct PackPlan {
  std::size_t rows = 0;
  int n = 0;                                  // unpacked channels (last axis)
  DType type = DType::kOther;                 // the unpacked side's type
  std::int32_t zero_point = 0;                // quantize, int8 input
  std::int8_t zero_value = 0, one_value = 0;  // dequantize, int8 output (as LCE)
  int rank = 0;
  int out_dims[8] = {0, 0, 0, 0, 0, 0, 0, 0};
};
bool ValidateQuantize(const Node& node, OutputShape shape, PackPlan* plan, std::string* error);
bool ValidateDequantize(const Node& node, OutputShape shape, PackPlan* plan,
                        std::string* error);

// --------------------------------------------------------------------------- ops::BCONV2D
// (Bconv2dOptions: op_options.h)
struct Bconv2dPlan {
  int batch = 0;
  int out_dims[4] = {0, 0, 0, 0};
};
// Checks options, operands and the configuration (what LCE accepts and this library runs),
// then builds *conv (bconv2d::BConv2D::Init). False with *error otherwise.
bool ValidateBconv2d(const Bconv2dOptions& options, const Node& node, OutputShape shape,
                     bconv2d::BConv2D* conv, Bconv2dPlan* plan, std::string* error);

// ---------------------------------------------------------------------- ops::DUAL_QUANTIZE
// (no options: the glue accepts absent or empty custom options, refuses any other)
struct DualQuantizePlan {
  dual_quantize::Geometry geometry;   // x's shape, the axes s averages over
  int rank = 0;
  int bits_dims[4] = {0, 0, 0, 0};    // b1's and b2's shape: x's, last dim PackedWords(C)
  int scale_dims[4] = {0, 0, 0, 0};   // s's shape (the model's)
  const float* thresholds = nullptr;  // [2, C]: t0 = thresholds, t1 = thresholds + C
};
// Checks counts, x (float32, rank 2..4, not constant), the constant thresholds [2, C], b1 /
// b2 (int32; kFixed: shape and bytes) and s (float32, the shape rule of op_contract.h, in
// both runtimes: its shape says which axes are averaged; kFixed: bytes). False with *error
// otherwise. kResize: the glue resizes b1 / b2 to bits_dims (s keeps its shape).
bool ValidateDualQuantize(const Node& node, OutputShape shape, DualQuantizePlan* plan,
                          std::string* error);

}  // namespace op_validate
}  // namespace core
}  // namespace compute_engine

#endif  // LCE_KERNELS_CORE_OP_VALIDATE_H_
