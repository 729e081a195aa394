// The parsed options of the project's ops as the shared Prepare checks (op_validate.h) take
// them: plain ints, no TFLite or FlexBuffers types. The options parsers
// (tflite/bdfsmn_options.h, tflite/bconv2d_options.h) fill these structs directly, so both
// glues hand them to the validator without a copy; their ranges are checked by op_validate.
#ifndef LCE_KERNELS_CORE_OP_OPTIONS_H_
#define LCE_KERNELS_CORE_OP_OPTIONS_H_

namespace compute_engine {
namespace core {
namespace op_validate {

// ops::BDFSMN: the five ints of ops::bdfsmn's option keys.
struct BdfsmnOptions {
  int channels = 0, hidden = 0, left = 0, right = 0, dilation = 0;
};

// ops::BCONV2D: the eight ints of ops::bconv2d::kOptionKeys.
struct Bconv2dOptions {
  int stride_height = 0, stride_width = 0, dilation_height = 0, dilation_width = 0;
  int padding = 0, pad_value = 0, channels_in = 0, activation = 0;
};

}  // namespace op_validate
}  // namespace core
}  // namespace compute_engine

#endif  // LCE_KERNELS_CORE_OP_OPTIONS_H_
