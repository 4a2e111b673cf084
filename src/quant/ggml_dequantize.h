// Decoding of GGML tensor data (as stored in GGUF files) to fp32 on the CPU: F32, F16, BF16,
// Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K. Bit-identical to the `gguf` Python package's
// gguf.quants.dequantize (tests/fixtures/ggml/), which follows ggml's dequantize_row_*.
// Block layouts are structs with static_asserts in quant/ggml_blocks.h.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <span>
#include <string>

#include "io/ggml_types.h"

namespace qlt::quant {

// True for the types ggml_dequantize decodes.
bool ggml_can_dequantize(io::GgmlType type);

// `bytes` holds `numel` elements of `type` (numel a multiple of the block size, bytes of
// exactly the right size): returns them as a flat fp32 CPU tensor [numel]. An unsupported
// type or a size mismatch is a UserError naming `tensor_name` and the type.
at::Tensor ggml_dequantize(io::GgmlType type, std::span<const uint8_t> bytes, int64_t numel,
                           const std::string& tensor_name);

}  // namespace qlt::quant
