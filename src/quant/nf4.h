// NF4 with double quantization, byte-compatible with bitsandbytes (METHODS.md §1-§3; exact
// semantics in kernels/nf4_layout.h and tests/fixtures/README.md).
//
// CPU tensors use the reference implementation here (plain loops over fp32); CUDA tensors
// are dispatched to kernels/ (QLT_CUDA builds). A CUDA tensor in a build without the kernels
// is an error naming the op, never a silent CPU fallback.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qlt::quant {

struct Nf4Options {
  int64_t block_size = 64;   // power of two in [32, 4096]
  bool double_quant = true;  // quantize the absmax values too (4.127 instead of 4.5 bits)
};

// A weight in bitsandbytes' 4-bit layout (the tensors of its safetensors, same names).
struct Nf4Tensor {
  at::Tensor packed;           // [(n+1)/2, 1] uint8, two codes per byte (first = high nibble)
  at::Tensor absmax;           // [n_blocks] uint8 codes with double quant, else fp32
  at::Tensor nested_absmax;    // [ceil(n_blocks/256)] fp32; double quant only (else undefined)
  float offset = 0.0f;         // mean of the absmax values; double quant only
  std::vector<int64_t> shape;  // logical shape, e.g. [out, in]
  at::ScalarType dtype = at::kFloat;  // dtype of the original weight (and of dequantize)
  int64_t block_size = 64;

  bool double_quant() const { return nested_absmax.defined(); }
  int64_t numel() const;
  int64_t num_blocks() const;
  int64_t storage_bytes() const;  // packed + absmax + nested absmax + offset
  at::Device device() const { return packed.device(); }
  Nf4Tensor to(at::Device device) const;
};

// Checks block_size; UserError naming `what` (a JSON key or tensor) otherwise.
void check_nf4_block_size(int64_t block_size, const std::string& what);

// Quantizes a bf16/fp16/fp32 tensor of any shape (flattened row-major). Another dtype is a
// UserError naming `tensor_name` (when given) and saying what to do.
Nf4Tensor quantize_nf4(const at::Tensor& weight, const Nf4Options& options = {},
                       std::string_view tensor_name = {});

// Per-block absmax restored to fp32 [n_blocks] (undoes double quantization when present).
at::Tensor nf4_absmax_fp32(const Nf4Tensor& q);

// The weight in `dtype` (default: q.dtype), logical shape. Bit-identical to bitsandbytes.
at::Tensor dequantize_nf4(const Nf4Tensor& q, std::optional<at::ScalarType> dtype = std::nullopt);

// Dequantizes into `out` (logical shape, contiguous, any of fp32/bf16/fp16, same device),
// so that a caller can reuse one buffer across layers.
void dequantize_nf4_into(const Nf4Tensor& q, at::Tensor& out);

// The tables as tensors (CPU fp32): the 16-entry codebook and the 256-entry dynamic map.
at::Tensor nf4_quant_map();
at::Tensor nf4_nested_quant_map();

}  // namespace qlt::quant
