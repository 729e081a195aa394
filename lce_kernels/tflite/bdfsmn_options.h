// The binary DFSMN op's (ops::BDFSMN) custom_options: a FlexBuffers map of five integers
// (keys ops::bdfsmn::kOptionKeys in core/op_contract.h: channels, hidden, left, right,
// dilation), as written by the exporter (Python flatbuffers' flexbuffers.Dumps, the same
// encoding LCE's converter uses for its ops).
//
// Parsed with flexbuffers.h of the pinned flatbuffers release (v25.9.23, unpacked into
// build/third_party/ by the Makefile; @flatbuffers in LCE's Bazel tree), never by hand:
//   1. the length is bounded first (kMaxOptionsBytes): TFLite hands the op's Init the
//      custom_options length straight from the flatbuffer, and a corrupted length (one
//      flipped byte once made it ~3.77 GB) must not send any reader off the buffer. The
//      model verifier (model_verify.h) is what guarantees that the options lie inside the
//      file; this bound is the op's own last line of defence;
//   2. flexbuffers::VerifyBuffer checks every offset, width and type byte of the buffer;
//   3. only then is the root read, and it must be a map whose five keys are integers
//      (INT / UINT, inline or indirect) within +-2^30 (Prepare checks the real ranges).
// Any failure returns false with a message; nothing here reads outside [buf, buf + len).
#ifndef LCE_KERNELS_TFLITE_BDFSMN_OPTIONS_H_
#define LCE_KERNELS_TFLITE_BDFSMN_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "../core/op_contract.h"
#include "../core/op_options.h"
#include "flatbuffers/flexbuffers.h"

namespace compute_engine {
namespace tflite {
namespace bdfsmn_options {

// The real map is ~60 bytes; anything near this bound is not this op's options map.
constexpr std::size_t kMaxOptionsBytes = 4096;
constexpr std::int64_t kMaxAbsValue = std::int64_t{1} << 30;

// The validator's struct (core/op_options.h): parsed straight into what Prepare checks.
using Options = ::compute_engine::core::op_validate::BdfsmnOptions;

// Reads one integer entry of a verified map. False (with *error set) if it is missing,
// not an integer, or out of +-kMaxAbsValue.
inline bool ReadInt(const flexbuffers::Map& map, const char* key, int* out,
                    std::string* error) {
  const flexbuffers::Reference v = map[key];
  if (v.IsNull()) {
    *error = std::string("missing option '") + key + "'";
    return false;
  }
  std::int64_t x = 0;
  if (v.IsInt()) {
    x = v.AsInt64();
  } else if (v.IsUInt()) {
    const std::uint64_t u = v.AsUInt64();
    x = u > static_cast<std::uint64_t>(kMaxAbsValue) ? kMaxAbsValue + 1
                                                     : static_cast<std::int64_t>(u);
  } else {
    *error = std::string("option '") + key + "' must be a (small) integer";
    return false;
  }
  if (x < -kMaxAbsValue || x > kMaxAbsValue) {
    *error = std::string("option '") + key + "' must be a (small) integer";
    return false;
  }
  *out = static_cast<int>(x);
  return true;
}

// Verifies then parses the options buffer [buf, buf + len).
inline bool Parse(const std::uint8_t* buf, std::size_t len, Options* out, std::string* error) {
  if (buf == nullptr || len == 0) {
    *error = "no custom_options (expected a FlexBuffers map)";
    return false;
  }
  if (len > kMaxOptionsBytes) {
    *error = "custom_options length " + std::to_string(len) + " exceeds " +
             std::to_string(kMaxOptionsBytes) + " bytes";
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
  namespace keys = ::compute_engine::ops::bdfsmn;
  static_assert(keys::kNumOptions == 5, "Options has five fields");
  Options o;
  if (!ReadInt(map, keys::kChannels, &o.channels, error) ||
      !ReadInt(map, keys::kHidden, &o.hidden, error) ||
      !ReadInt(map, keys::kLeft, &o.left, error) ||
      !ReadInt(map, keys::kRight, &o.right, error) ||
      !ReadInt(map, keys::kDilation, &o.dilation, error)) {
    return false;
  }
  *out = o;
  return true;
}

}  // namespace bdfsmn_options
}  // namespace tflite
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLITE_BDFSMN_OPTIONS_H_
