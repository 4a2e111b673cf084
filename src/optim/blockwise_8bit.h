// 8-bit blockwise quantization of optimizer state, bit-identical to bitsandbytes 0.50.2 on its
// CPU backend (METHODS.md §7): the dynamic maps of bitsandbytes.functional.create_dynamic_map,
// and the quantize / dequantize that bnb's 8-bit optimizer update calls on the CPU
// (csrc/cpu_ops.cpp quantize_cpu_impl, dequantizeBlockwise8bitCpu):
//   absmax[b] = max |x| over block b (256 elements; the last block may be shorter)
//   code      = the map entry nearest to x * (1 / absmax) as bnb's CPU code finds it: through a
//               65536-entry table over [-1, 1] (bins of 2/65535 ~ 3e-5), not an exact search. Where
//               entries are closer than a bin (near 0) the code can be off the exact nearest by
//               up to ~1.5e-5 (times absmax): in the fixture 271 of 1244 signed codes differ from
//               the exact nearest, so exact search would not match bnb. absmax 0 -> code 0.
//   x'        = map[code] * absmax[b]
// A plain CPU reference: loops over contiguous fp32 / uint8 CPU tensors.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>

namespace qlt::optim {

inline constexpr int64_t kStateBlockSize = 256;  // bnb's optimizer block size (fixed)
inline constexpr int kLutSize = 65536;           // bnb's quantization table (csrc/cpu_ops.cpp)

// bitsandbytes.functional.create_dynamic_map(signed, max_exponent_bits=7, total_bits=8):
// [256] fp32, sorted. Signed: 127 positive and 127 negative values over 7 decades, 0 and 1
// (first moment); unsigned: 254 positive values, 0 and 1 (second moment).
at::Tensor create_dynamic_map(bool signed_map);

// The table bnb builds from a sorted [256] map: entry i is the index of the map entry nearest to
// -1 + 2i/65535 (bnb build_quantize_lut: the first midpoint that is not below it).
struct QuantLut {
  at::Tensor map;  // [256] fp32, contiguous
  std::array<uint8_t, kLutSize> index{};
};
QuantLut build_quant_lut(const at::Tensor& map);

// Number of blocks of a tensor with n elements: ceil(n / 256).
inline int64_t state_blocks(int64_t n) { return (n + kStateBlockSize - 1) / kStateBlockSize; }

// x: fp32 contiguous CPU tensor of n elements -> codes (uint8, x's shape) and absmax ([blocks]
// fp32), written into the given tensors (the optimizer's state buffers).
void quantize_blockwise_8bit(const at::Tensor& x, const QuantLut& lut, at::Tensor& codes,
                             at::Tensor& absmax);
// codes (uint8) and absmax ([blocks] fp32) -> fp32 tensor of codes' shape.
at::Tensor dequantize_blockwise_8bit(const at::Tensor& codes, const at::Tensor& absmax,
                                     const at::Tensor& map);

}  // namespace qlt::optim
