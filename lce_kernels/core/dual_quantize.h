// The dual-scale binarization of an activation (ops::DUAL_QUANTIZE, core/op_contract.h), no
// TFLite. Per position p (every axis but the last) and channel c (the last axis, C channels):
//
//   d    = x - t0[c]                      (float32)
//   bit1 = d < 0                          (NaN, +0 and -0 give 0, as bitpack.h's PackFloat)
//   v1   = bit1 ? -1 : +1
//   r    = (x - v1) - t1[c]               (float32, two subtractions in this order; every
//                                          build uses -ffp-contract=off)
//   bit2 = r < 0
//   b1, b2: bit-packed int32 words along the channel axis (bitpack.h's layout: channel c is
//           bit c % 32 of word c / 32, bit 1 = -1, pad bits 0), [x dims..., PackedWords(C)]
//   s    = mean |r| over the reduced axes: s has x's rank, its last dim is 1, its first is
//          x's (batch never reduced), every other dim is x's (kept) or 1 (reduced).
//
// Paths (kernel_path.h): portable (the reference), AVX-512 (x86-64, run time: 16 channels per
// masked compare, the two halves of a word from two compares) and NEON (aarch64: 4 channels
// per compare, bit values selected and summed per word). Every path writes identical bits;
// s is summed in float in a path-dependent order (equal up to float rounding).
#ifndef LCE_KERNELS_CORE_DUAL_QUANTIZE_H_
#define LCE_KERNELS_CORE_DUAL_QUANTIZE_H_

#include <cstddef>
#include <cstdint>

#include "kernel_path.h"

namespace compute_engine {
namespace core {
namespace dual_quantize {

inline constexpr int kMaxRank = 4;

// x's shape and which of its axes s averages over.
struct Geometry {
  int rank = 0;                           // 2..kMaxRank
  int dims[kMaxRank] = {0, 0, 0, 0};      // x's dims, every one >= 1; dims[rank - 1] = C
  bool reduced[kMaxRank] = {false, false, false, false};  // s's dim is 1 there (the last
                                                          // axis is always reduced, axis 0
                                                          // never)
  int channels() const { return dims[rank - 1]; }
};

// Rows of C floats (product of every dim but the last).
std::size_t Positions(const Geometry& g);
// Elements of s, and how many values of |r| each one averages.
std::size_t ScaleElements(const Geometry& g);
std::size_t ScaleCount(const Geometry& g);
// s's shape for the geometry (x's rank: kept dims, 1 where reduced).
void ScaleDims(const Geometry& g, int* dims);

// x: Positions(g) x C floats; t0, t1: C floats each; b1, b2: Positions(g) x PackedWords(C)
// words; s: ScaleElements(g) floats (row-major in s's shape). The geometry must be valid
// (op_validate.h: ValidateDualQuantize checks it).
void DualQuantize(const float* x, const Geometry& g, const float* t0, const float* t1,
                  std::int32_t* b1, std::int32_t* b2, float* s,
                  KernelPath path = KernelPath::kAuto);

}  // namespace dual_quantize
}  // namespace core
}  // namespace compute_engine

#endif  // LCE_KERNELS_CORE_DUAL_QUANTIZE_H_
