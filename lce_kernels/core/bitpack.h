// Bit packing of activations (the kernels of ops::QUANTIZE / ops::DEQUANTIZE, op_contract.h), no TFLite.
//
// Layout (larq-compute-engine's TBitpacked, v0.16): a tensor [..., n] packs along its last
// axis into int32 words [..., ceil(n / 32)]; channel c is bit c % 32 of word c / 32 (LSB
// first); bit 1 means -1 (negative), bit 0 means +1; pad bits (c >= n) are written 0.
//
//   pack   float  bit = x < 0           (-0.0, +0.0 and NaN give 0, i.e. +1)
//          int8   bit = x < zero_point  (the int32 zero point of the tensor, any value)
//          bool   bit = (byte == 0)     (false -> -1, any non-zero byte -> +1)
//   unpack float  bit ? -1.0f : +1.0f
//          int8   bit ? one_value : zero_value (the op computes them from scale/zero point)
//          bool   bit ? false : true
// Unpacking ignores pad bits.
//
// Paths: portable (reference), AVX-512 (x86-64, run time: mask compares, 32 or 16 channels
// per word) and NEON (aarch64: per 4 channels a compare inserted under its bit values into
// one 32-channel pattern, two pairwise adds per word; unpack one compare + select per 4) for
// float pack / unpack; the int8 and bool variants are portable only (not used by the
// project's models). Every path writes identical bits / values.
#ifndef LCE_KERNELS_CORE_BITPACK_H_
#define LCE_KERNELS_CORE_BITPACK_H_

#include <cstddef>
#include <cstdint>

#include "kernel_path.h"

namespace compute_engine {
namespace core {
namespace bitpack {

inline int PackedWords(int n) { return (n + 31) / 32; }

// rows x n floats (row stride n) -> rows x PackedWords(n) words.
void PackFloat(const float* in, std::size_t rows, int n, std::int32_t* out,
               KernelPath path = KernelPath::kAuto);
void PackInt8(const std::int8_t* in, std::size_t rows, int n, std::int32_t zero_point,
              std::int32_t* out);
// `in` holds bool bytes read as uint8 (any value: 0 is false).
void PackBool(const std::uint8_t* in, std::size_t rows, int n, std::int32_t* out);

// rows x PackedWords(n) words -> rows x n values.
void UnpackFloat(const std::int32_t* in, std::size_t rows, int n, float* out,
                 KernelPath path = KernelPath::kAuto);
void UnpackInt8(const std::int32_t* in, std::size_t rows, int n, std::int8_t zero_value,
                std::int8_t one_value, std::int8_t* out);
// Writes bytes 1 (true, bit 0) / 0 (false, bit 1).
void UnpackBool(const std::int32_t* in, std::size_t rows, int n, std::uint8_t* out);

}  // namespace bitpack
}  // namespace core
}  // namespace compute_engine

#endif  // LCE_KERNELS_CORE_BITPACK_H_
