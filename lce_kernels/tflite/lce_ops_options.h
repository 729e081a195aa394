// What Larq Compute Engine 0.16's kernels need of their custom_options, for the model
// verifier (model_verify.cc) and the bconv2d glue (op names and keys: core/op_contract.h). LCE's Init functions call flexbuffers::GetRoot(buffer,
// length).AsMap() without verifying the buffer (an empty or damaged one is read out of
// bounds) and divide by the strides / sizes they read (larq_compute_engine/tflite/kernels/
// bconv2d.cc, bmaxpool.cc at tag v0.16.0; measured: a bconv2d op without options crashes
// LCE's interpreter). So:
//   * ops::BCONV2D, ops::BMAXPOOL2D: options required, a verified FlexBuffers map holding
//     every key the kernel reads as an integer, strides / dilations / sizes / channels >= 1
//     and pad_values 0 or 1;
//   * any other LCE op (ops::QUANTIZE, ops::DEQUANTIZE: no options read): options, when
//     present, must be a verified FlexBuffer.
// ops::BDFSMN (ours) is checked by bdfsmn_options.h instead.
#ifndef LCE_KERNELS_TFLITE_LCE_OPS_OPTIONS_H_
#define LCE_KERNELS_TFLITE_LCE_OPS_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "../core/op_contract.h"
#include "flatbuffers/flexbuffers.h"

namespace compute_engine {
namespace tflite {
namespace lce_ops_options {

constexpr std::size_t kMaxOptionsBytes = 1 << 16;

struct Key {
  const char* name;
  std::int64_t min;  // smallest accepted value
  std::int64_t max;  // largest accepted value
};

constexpr std::int64_t kBig = std::int64_t{1} << 30;

namespace bconv = ::compute_engine::ops::bconv2d;
namespace bmax = ::compute_engine::ops::bmaxpool2d;

constexpr Key kBconv2dKeys[] = {
    {bconv::kStrideHeight, 1, kBig},   {bconv::kStrideWidth, 1, kBig},
    {bconv::kDilationHeight, 1, kBig}, {bconv::kDilationWidth, 1, kBig},
    {bconv::kPadding, -kBig, kBig},    {bconv::kPadValues, 0, 1},
    {bconv::kChannelsIn, 1, kBig},     {bconv::kFusedActivation, -kBig, kBig},
};
static_assert(sizeof(kBconv2dKeys) / sizeof(kBconv2dKeys[0]) == bconv::kNumOptions,
              "every bconv2d option key is checked");

constexpr Key kBMaxPoolKeys[] = {
    {bmax::kFilterHeight, 1, kBig}, {bmax::kFilterWidth, 1, kBig},
    {bmax::kStrideHeight, 1, kBig}, {bmax::kStrideWidth, 1, kBig},
    {bmax::kPadding, -kBig, kBig},
};

template <std::size_t N>
bool CheckKeys(const flexbuffers::Map& map, const Key (&keys)[N], std::string* why) {
  for (const Key& k : keys) {
    const flexbuffers::Reference v = map[k.name];
    if (!v.IsInt() && !v.IsUInt()) {
      *why = std::string("option '") + k.name + "' missing or not an integer";
      return false;
    }
    const std::int64_t x = v.IsInt() ? v.AsInt64()
                                     : (v.AsUInt64() > static_cast<std::uint64_t>(kBig)
                                            ? kBig + 1
                                            : static_cast<std::int64_t>(v.AsUInt64()));
    if (x < k.min || x > k.max) {
      *why = std::string("option '") + k.name + "' = " + std::to_string(x) + " outside [" +
             std::to_string(k.min) + ", " + std::to_string(k.max) + "]";
      return false;
    }
  }
  return true;
}

// Empty string if the options of LCE op `name` are acceptable, else the reason.
inline std::string Problem(const std::string& name, const std::uint8_t* buf, std::size_t len) {
  const bool needs_map =
      name == ::compute_engine::ops::BCONV2D || name == ::compute_engine::ops::BMAXPOOL2D;
  if (buf == nullptr || len == 0) {
    return needs_map ? "no custom_options (" + name + " reads a FlexBuffers map)" : "";
  }
  if (len > kMaxOptionsBytes || !flexbuffers::VerifyBuffer(buf, len)) {
    return "custom_options is not a valid FlexBuffer";
  }
  if (!needs_map) return "";
  const flexbuffers::Reference root = flexbuffers::GetRoot(buf, len);
  if (!root.IsMap()) return "custom_options root is not a map";
  std::string why;
  const flexbuffers::Map map = root.AsMap();
  const bool ok = name == ::compute_engine::ops::BCONV2D ? CheckKeys(map, kBconv2dKeys, &why)
                                       : CheckKeys(map, kBMaxPoolKeys, &why);
  return ok ? "" : why;
}

}  // namespace lce_ops_options
}  // namespace tflite
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLITE_LCE_OPS_OPTIONS_H_
