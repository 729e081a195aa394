// A small, bounds-checked reader for a FlexBuffers MAP of scalar values (the format of a
// TFLite custom op's custom_options, as written by LCE's converter and by
// flatbuffers.flexbuffers in Python). The tensorflow wheel ships no flexbuffers.h, so this
// implements just what the op needs: a root map whose values are INT, UINT, BOOL, FLOAT
// (inline) or INDIRECT_INT / INDIRECT_UINT / INDIRECT_FLOAT. Any other value type, and any
// out-of-range offset, makes Parse() fail with a message (it never reads out of bounds).
//
// FlexBuffers layout used (https://flatbuffers.dev/flexbuffers/ "binary encoding"):
//   buffer end: [..., root value (root_width bytes), root packed type (1), root_width (1)]
//   packed type = (type << 2) | log2(child byte width);  MAP = 9, INT = 1, UINT = 2,
//   FLOAT = 3, INDIRECT_INT = 6, INDIRECT_UINT = 7, INDIRECT_FLOAT = 8, BOOL = 26.
//   An offset-typed value at position p points to p - value.
//   Map at m (element width w): [keys offset][keys width][size] at m - 3w .. m - 1,
//   then size values at m + i*w, then size packed-type bytes at m + size*w.
//   Keys vector at k (width kw): size at k - kw, offsets to NUL-terminated keys at k + i*kw.
#ifndef LCE_KERNELS_TFLITE_FLEXMAP_H_
#define LCE_KERNELS_TFLITE_FLEXMAP_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>

namespace compute_engine {
namespace tflite {
namespace flexmap {

struct Value {
  bool is_float = false;
  std::int64_t i = 0;
  double f = 0.0;
};

class Reader {
 public:
  Reader(const unsigned char* buf, std::size_t len) : b_(buf), n_(len) {}

  bool Parse(std::map<std::string, Value>* out, std::string* error) {
    if (b_ == nullptr || n_ < 3) return Fail(error, "options buffer too short");
    const unsigned rw = b_[n_ - 1];
    const unsigned rtype = b_[n_ - 2];
    if (!IsWidth(rw) || n_ < 2 + rw) return Fail(error, "bad root byte width");
    const std::size_t root = n_ - 2 - rw;
    if ((rtype >> 2) != kMap) return Fail(error, "options root is not a map");
    std::size_t m;
    if (!Offset(root, rw, &m)) return Fail(error, "bad map offset");
    const unsigned w = 1u << (rtype & 3u);
    if (m < 3 * w) return Fail(error, "bad map header");
    std::uint64_t size, kw, koff;
    if (!ReadU(m - w, w, &size) || !ReadU(m - 2 * w, w, &kw) || !ReadU(m - 3 * w, w, &koff))
      return Fail(error, "bad map header");
    if (!IsWidth(static_cast<unsigned>(kw))) return Fail(error, "bad key width");
    if (size > 1024) return Fail(error, "map too large");
    std::size_t keys;
    if (!Offset(m - 3 * w, w, &keys)) return Fail(error, "bad keys offset");
    std::uint64_t ksize;
    if (keys < kw || !ReadU(keys - kw, static_cast<unsigned>(kw), &ksize) || ksize != size)
      return Fail(error, "keys/values size mismatch");
    const std::size_t types = m + static_cast<std::size_t>(size) * w;
    if (types + size > n_) return Fail(error, "map types out of range");
    for (std::size_t i = 0; i < size; ++i) {
      std::size_t kpos;
      if (!Offset(keys + i * kw, static_cast<unsigned>(kw), &kpos))
        return Fail(error, "bad key offset");
      const void* nul = std::memchr(b_ + kpos, 0, n_ - kpos);
      if (nul == nullptr) return Fail(error, "unterminated key");
      std::string key(reinterpret_cast<const char*>(b_ + kpos),
                      static_cast<const unsigned char*>(nul) - (b_ + kpos));
      const unsigned packed = b_[types + i];
      Value v;
      if (!ReadValue(m + i * w, w, packed, &v)) return Fail(error, "unsupported value for " + key);
      (*out)[key] = v;
    }
    return true;
  }

 private:
  enum { kInt = 1, kUInt = 2, kFloat = 3, kIndInt = 6, kIndUInt = 7, kIndFloat = 8, kMap = 9,
         kBool = 26 };
  static bool IsWidth(unsigned w) { return w == 1 || w == 2 || w == 4 || w == 8; }
  static bool Fail(std::string* e, const std::string& m) {
    if (e) *e = m;
    return false;
  }
  bool ReadU(std::size_t p, unsigned w, std::uint64_t* v) const {
    if (!IsWidth(w) || p > n_ || n_ - p < w) return false;
    std::uint64_t x = 0;
    for (unsigned k = 0; k < w; ++k) x |= static_cast<std::uint64_t>(b_[p + k]) << (8 * k);
    *v = x;
    return true;
  }
  bool ReadI(std::size_t p, unsigned w, std::int64_t* v) const {
    std::uint64_t u;
    if (!ReadU(p, w, &u)) return false;
    if (w < 8 && (u >> (8 * w - 1)) & 1u) u |= ~std::uint64_t{0} << (8 * w);  // sign-extend
    std::memcpy(v, &u, sizeof u);
    return true;
  }
  bool ReadF(std::size_t p, unsigned w, double* v) const {
    std::uint64_t u;
    if ((w != 4 && w != 8) || !ReadU(p, w, &u)) return false;
    if (w == 4) {
      std::uint32_t u32 = static_cast<std::uint32_t>(u);
      float f;
      std::memcpy(&f, &u32, 4);
      *v = static_cast<double>(f);
    } else {
      std::memcpy(v, &u, 8);
    }
    return true;
  }
  bool Offset(std::size_t p, unsigned w, std::size_t* target) const {
    std::uint64_t off;
    if (!ReadU(p, w, &off) || off > p) return false;
    *target = p - static_cast<std::size_t>(off);
    return *target < n_;
  }
  bool ReadValue(std::size_t p, unsigned w, unsigned packed, Value* v) const {
    const unsigned type = packed >> 2, cw = 1u << (packed & 3u);
    std::size_t q;
    switch (type) {
      case kInt: return ReadI(p, w, &v->i);
      case kBool:
      case kUInt: {
        std::uint64_t u;
        if (!ReadU(p, w, &u) || u > static_cast<std::uint64_t>(INT64_MAX)) return false;
        v->i = static_cast<std::int64_t>(u);
        return true;
      }
      case kFloat: v->is_float = true; return ReadF(p, w, &v->f);
      case kIndInt: return Offset(p, w, &q) && ReadI(q, cw, &v->i);
      case kIndUInt: {
        std::uint64_t u;
        if (!Offset(p, w, &q) || !ReadU(q, cw, &u) || u > static_cast<std::uint64_t>(INT64_MAX))
          return false;
        v->i = static_cast<std::int64_t>(u);
        return true;
      }
      case kIndFloat: v->is_float = true; return Offset(p, w, &q) && ReadF(q, cw, &v->f);
      default: return false;
    }
  }
  const unsigned char* b_;
  std::size_t n_;
};

}  // namespace flexmap
}  // namespace tflite
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLITE_FLEXMAP_H_
