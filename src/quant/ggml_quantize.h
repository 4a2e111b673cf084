// Encoding fp32 / bf16 / fp16 weights as GGML tensor data (what GGUF files store): F32, F16,
// BF16, Q8_0, Q4_0 and Q4_1, on the CPU. Byte-identical to the `gguf` Python package's
// gguf.quants.quantize (gguf-py 0.19.0; tests/fixtures/ggml_quantize/ and, for Q4_1,
// tests/fixtures/ggml/), which mirrors ggml's quantize_row_*_ref (ggml/src/ggml-quants.c) and
// ggml_compute_fp32_to_bf16. The inverse is quant/ggml_dequantize.h; block layouts are the
// structs of quant/ggml_blocks.h.
//
// Rules per block of 32 (every operation in fp32, rounded separately; qlt builds with
// -ffp-contract=off):
//   Q8_0  amax = max |x| (NaN propagates); d = amax / 127; id = d == 0 ? 0 : 1 / d;
//         q = roundf(x * id) (half away from zero); d stored as fp16 (round to nearest even).
//   Q4_0  max = the first value of the largest magnitude, with its sign (a NaN counts as the
//         largest, as numpy's argmax); d = max / -8; id = d == 0 ? 0 : 1 / d;
//         q = min(15, trunc(x * id + 8.5)); element j in the low nibble of qs[j], j + 16 in the
//         high nibble; d stored as fp16.
//   Q4_1  quant/int4.h (INT4 group 32 IS Q4_1; quantize_int4 is the reference).
//   F16   round to nearest even (ggml::fp32_to_fp16, numpy's cast); BF16 as
//         ggml_compute_fp32_to_bf16: NaN -> top 16 bits with the quiet bit, else round to
//         nearest even.
// A code that is NaN or +-inf before the integer cast (a NaN input, or 1 / d = inf when d is an
// fp32 subnormal) becomes 0, which is what numpy's float -> int cast gives on x86 (ggml's C
// cast is undefined there); the C++ code does so on every platform.
#pragma once

#include <ATen/ATen.h>

#include <bit>
#include <cstdint>
#include <string_view>
#include <vector>

#include "io/ggml_types.h"
#include "quant/ggml_blocks.h"

namespace qlt::quant {

// One row of n values (n a multiple of 32) -> n / 32 blocks. The references the tensor
// functions below run per row.
void quantize_row_q8_0(const float* x, ggml::block_q8_0* y, int64_t n);
void quantize_row_q4_0(const float* x, ggml::block_q4_0* y, int64_t n);

// fp32 -> bf16 bits as ggml_compute_fp32_to_bf16 (and gguf's BF16 quantizer).
constexpr uint16_t fp32_to_bf16_bits(float f) {
  uint32_t n = std::bit_cast<uint32_t>(f);
  if ((n & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((n >> 16) | 64u);  // quiet
  return static_cast<uint16_t>((static_cast<uint64_t>(n) + (0x7FFFu + ((n >> 16) & 1u))) >> 16);
}

// True for the types ggml_quantize writes: F32, F16, BF16, Q8_0, Q4_0, Q4_1.
bool ggml_can_quantize(io::GgmlType type);

// `weight` [rows, cols] (fp32, bf16 or fp16; any device, any strides: it is copied to a
// contiguous fp32 CPU tensor first, exactly) -> the tensor's GGML bytes, rows in order, each
// row cols / block elements blocks (cols * element size for F32 / F16 / BF16). A 1-D weight
// is one row. Another dtype, more than 2 dims, cols not a multiple of the type's block, or a
// type not in ggml_can_quantize is a UserError naming `tensor_name` (when given). Rows are
// quantized in parallel (at::parallel_for); the bytes do not depend on the thread count.
std::vector<uint8_t> ggml_quantize(io::GgmlType type, const at::Tensor& weight,
                                   std::string_view tensor_name = {});

// Whether ggml_quantize(type, weight) would hold `weight` exactly: dequantizing its bytes
// gives back every value bit for bit (+0 and -0 distinct; NaN never exact). Walks the rows
// block by block and stops at the first difference, so a type that does not fit costs about
// one block; a type that fits costs one quantize + dequantize pass. Same input rules as
// ggml_quantize.
bool ggml_holds_exactly(io::GgmlType type, const at::Tensor& weight,
                        std::string_view tensor_name = {});

}  // namespace qlt::quant
