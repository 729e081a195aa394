// Reader of the `.bdv` record files written by tests/kernel_ref.py::write_case (used by
// lce_kernels/tests/bdfsmn_test.cc and firmware_sim/drivers/bdfsmn_bench.cc)
// (format: lce_kernels/README.md): "BDFV1\0\0\0", u32 count, then per record u16 name
// length, name, u8 dtype ('f' f32, 'd' f64, 'i' i32, 'u' u32), u8 ndim, u32 dims[ndim], data.
#ifndef LCE_KERNELS_TESTS_BDV_READER_H_
#define LCE_KERNELS_TESTS_BDV_READER_H_

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace bdv {

struct Record {
  char dtype = 0;
  std::vector<std::uint32_t> dims;
  std::vector<unsigned char> data;
  std::size_t count() const {
    std::size_t n = 1;
    for (std::uint32_t d : dims) n *= d;
    return n;
  }
  template <class T>
  const T* as() const { return reinterpret_cast<const T*>(data.data()); }
};

using File = std::map<std::string, Record>;

inline bool Load(const std::string& path, File* out, std::string* err) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    *err = "cannot open " + path;
    return false;
  }
  std::vector<unsigned char> buf;
  unsigned char tmp[65536];
  std::size_t n;
  while ((n = std::fread(tmp, 1, sizeof tmp, f)) > 0) buf.insert(buf.end(), tmp, tmp + n);
  std::fclose(f);
  std::size_t pos = 0;
  auto take = [&](void* dst, std::size_t len) {
    if (pos + len > buf.size()) return false;
    std::memcpy(dst, buf.data() + pos, len);
    pos += len;
    return true;
  };
  char magic[8];
  std::uint32_t count = 0;
  if (!take(magic, 8) || std::memcmp(magic, "BDFV1\0\0\0", 8) != 0 || !take(&count, 4)) {
    *err = path + ": not a BDFV1 file";
    return false;
  }
  for (std::uint32_t i = 0; i < count; ++i) {
    std::uint16_t len = 0;
    if (!take(&len, 2)) break;
    std::string name(len, '\0');
    Record r;
    std::uint8_t ndim = 0;
    if (!take(&name[0], len) || !take(&r.dtype, 1) || !take(&ndim, 1)) break;
    r.dims.resize(ndim);
    if (ndim != 0 && !take(r.dims.data(), 4u * ndim)) break;
    const std::size_t esz = r.dtype == 'd' ? 8 : 4;
    r.data.resize(r.count() * esz);
    if (!r.data.empty() && !take(r.data.data(), r.data.size())) break;
    (*out)[name] = std::move(r);
    if (i + 1 == count) return true;
  }
  if (count == 0) return true;
  *err = path + ": truncated";
  return false;
}

// Typed views (nullptr if missing or of another dtype).
inline const float* F32(const File& f, const std::string& k) {
  auto it = f.find(k);
  return it != f.end() && it->second.dtype == 'f'
             ? reinterpret_cast<const float*>(it->second.data.data())
             : nullptr;
}
inline const std::uint32_t* U32(const File& f, const std::string& k) {
  auto it = f.find(k);
  return it != f.end() && it->second.dtype == 'u'
             ? reinterpret_cast<const std::uint32_t*>(it->second.data.data())
             : nullptr;
}
inline const std::int32_t* I32(const File& f, const std::string& k) {
  auto it = f.find(k);
  return it != f.end() && it->second.dtype == 'i'
             ? reinterpret_cast<const std::int32_t*>(it->second.data.data())
             : nullptr;
}

}  // namespace bdv

#endif  // LCE_KERNELS_TESTS_BDV_READER_H_
