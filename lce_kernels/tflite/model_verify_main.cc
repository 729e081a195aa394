// tflite_verify: the model verifier (model_verify.h) as a command-line tool, built normally
// (build/tflite_verify) and with ASan/UBSan (build/asan/tflite_verify) so that tests can
// run the verifier over damaged files in a sanitized process.
//
//   tflite_verify FILE...                 one line per file: "OK FILE" or "REFUSED FILE: why";
//                                         exit 0 if all are valid, 1 if any is refused
//   tflite_verify --mutate N [--seed S] FILE...
//                                         verify N damaged variants of each file (1-4 random
//                                         bytes overwritten, or truncated, or a random 4-byte
//                                         little-endian value written at a random aligned
//                                         offset), print "MUTATE FILE variants=N accepted=A
//                                         refused=R"; exit 0 unless a file cannot be read
// Exit 2 on usage or I/O errors.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "model_verify.h"

namespace {

bool ReadFile(const char* path, std::vector<std::uint8_t>* out) {
  std::FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return false;
  out->clear();
  std::uint8_t chunk[1 << 16];
  std::size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) out->insert(out->end(), chunk, chunk + n);
  const bool ok = std::ferror(f) == 0;
  std::fclose(f);
  return ok;
}

// One damaged copy of `good` (the three kinds of damage a file suffers: flipped bytes, a
// cut-off tail, a plausible-looking wrong integer such as an index or a length).
std::vector<std::uint8_t> Mutate(const std::vector<std::uint8_t>& good, std::mt19937* rng) {
  std::vector<std::uint8_t> b = good;
  if (b.empty()) return b;
  std::uniform_int_distribution<std::size_t> pos(0, b.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  switch ((*rng)() % 3) {
    case 0: {
      const int k = 1 + static_cast<int>((*rng)() % 4);
      for (int i = 0; i < k; ++i) b[pos(*rng)] = static_cast<std::uint8_t>(byte(*rng));
      break;
    }
    case 1:
      b.resize(pos(*rng));
      break;
    default: {
      if (b.size() < 4) break;
      const std::size_t at = pos(*rng) & ~std::size_t{3};
      const std::uint32_t values[] = {0u, 1u, 0xffffffffu, 0x7fffffffu, 0x80000000u,
                                      static_cast<std::uint32_t>(b.size()),
                                      static_cast<std::uint32_t>((*rng)() % 4096)};
      const std::uint32_t v = values[(*rng)() % (sizeof values / sizeof values[0])];
      for (int i = 0; i < 4 && at + static_cast<std::size_t>(i) < b.size(); ++i) {
        b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
      }
    }
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  long mutate = 0;
  unsigned long seed = 0;
  std::vector<const char*> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--mutate") == 0 && i + 1 < argc) {
      mutate = std::strtol(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = std::strtoul(argv[++i], nullptr, 10);
    } else if (argv[i][0] == '-') {
      files.clear();
      break;
    } else {
      files.push_back(argv[i]);
    }
  }
  if (files.empty() || mutate < 0) {
    std::fprintf(stderr, "usage: %s [--mutate N [--seed S]] FILE...\n", argv[0]);
    return 2;
  }
  int refused_files = 0;
  char err[512];
  for (const char* path : files) {
    std::vector<std::uint8_t> data;
    if (!ReadFile(path, &data)) {
      std::fprintf(stderr, "cannot read %s\n", path);
      return 2;
    }
    if (mutate == 0) {
      if (lce_verify_model(data.data(), data.size(), err, sizeof err) == 0) {
        std::printf("OK %s\n", path);
      } else {
        std::printf("REFUSED %s: %s\n", path, err);
        ++refused_files;
      }
      continue;
    }
    std::mt19937 rng(static_cast<std::mt19937::result_type>(seed));
    long accepted = 0;
    for (long v = 0; v < mutate; ++v) {
      const std::vector<std::uint8_t> b = Mutate(data, &rng);
      accepted += lce_verify_model(b.data(), b.size(), err, sizeof err) == 0 ? 1 : 0;
    }
    std::printf("MUTATE %s variants=%ld accepted=%ld refused=%ld\n", path, mutate, accepted,
                mutate - accepted);
  }
  return refused_files == 0 ? 0 : 1;
}
