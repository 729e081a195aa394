// The bconv2d op's (ops::BCONV2D) custom_options as LCE 0.16's converter writes them: a
// FlexBuffers map of eight integers (keys: ops::bconv2d::kOptionKeys in core/op_contract.h).
//
// Parsed with flexbuffers.h of the pinned flatbuffers (as bdfsmn_options.h): the length is
// bounded, flexbuffers::VerifyBuffer checks the whole buffer, then every key must be an
// integer in its range (the key table is lce_ops_options.h's, the one the model verifier
// applies). Nothing reads outside [buf, buf + len); any failure returns false with a message.
// The enums are the TFLite schema's (op_contract.h): padding SAME = 0, VALID = 1; fused
// activation NONE = 0, RELU = 1, RELU_N1_TO_1 = 2, RELU6 = 3 (TANH = 4, SIGN_BIT = 5 are not
// supported; LCE silently treats them as NONE).
#ifndef LCE_KERNELS_TFLITE_BCONV2D_OPTIONS_H_
#define LCE_KERNELS_TFLITE_BCONV2D_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "../core/op_contract.h"
#include "../core/op_options.h"
#include "flatbuffers/flexbuffers.h"
#include "lce_ops_options.h"

namespace compute_engine {
namespace tflite {
namespace bconv2d_options {

namespace keys = ::compute_engine::ops::bconv2d;
using keys::kActNone;
using keys::kActRelu;
using keys::kActRelu6;
using keys::kActReluN1To1;
using keys::kPaddingSame;
using keys::kPaddingValid;

// The validator's struct (core/op_options.h): parsed straight into what Prepare checks.
using Options = ::compute_engine::core::op_validate::Bconv2dOptions;

inline bool Parse(const std::uint8_t* buf, std::size_t len, Options* out, std::string* error) {
  if (buf == nullptr || len == 0) {
    *error = "no custom_options (expected LCE's FlexBuffers map)";
    return false;
  }
  if (len > lce_ops_options::kMaxOptionsBytes) {
    *error = "custom_options length " + std::to_string(len) + " exceeds " +
             std::to_string(lce_ops_options::kMaxOptionsBytes) + " bytes";
    return false;
  }
  if (!flexbuffers::VerifyBuffer(buf, len)) {
    *error = "custom_options is not a valid FlexBuffer (flexbuffers::VerifyBuffer failed)";
    return false;
  }
  const flexbuffers::Reference root = flexbuffers::GetRoot(buf, len);
  if (!root.IsMap()) {
    *error = "custom_options root is not a map";
    return false;
  }
  const flexbuffers::Map map = root.AsMap();
  if (!lce_ops_options::CheckKeys(map, lce_ops_options::kBconv2dKeys, error)) return false;
  // Every key is now an integer within +-2^30 (CheckKeys), so AsInt32 is exact.
  Options o;
  o.stride_height = map[keys::kStrideHeight].AsInt32();
  o.stride_width = map[keys::kStrideWidth].AsInt32();
  o.dilation_height = map[keys::kDilationHeight].AsInt32();
  o.dilation_width = map[keys::kDilationWidth].AsInt32();
  o.padding = map[keys::kPadding].AsInt32();
  o.pad_value = map[keys::kPadValues].AsInt32();
  o.channels_in = map[keys::kChannelsIn].AsInt32();
  o.activation = map[keys::kFusedActivation].AsInt32();
  *out = o;
  return true;
}

}  // namespace bconv2d_options
}  // namespace tflite
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLITE_BCONV2D_OPTIONS_H_
