// INT4 with asymmetric groups: w = d * q + m, q in 0..15, one (d, m) pair in fp16 per group of
// `group_size` consecutive inputs of a row (METHODS.md §8). With groups of 32 the storage IS
// GGUF's Q4_1 block, so a Q4_1 tensor of a GGUF file is used as stored and written back
// byte-identical (the bytes of `blocks`).
//
// Storage, one block per group, row-major over [out, in / group_size] (kernels/int4_layout.h):
//   struct { uint16 d_f16; uint16 m_f16; uint8 qs[group_size / 2]; }
//   qs[j] = q[j] | (q[j + group_size/2] << 4)   (low nibbles hold the first half of the group)
// i.e. ggml's block_q4_1 for group_size 32, and the same shape of block for 64 and 128.
//
// CPU tensors use the reference here (plain loops); CUDA tensors go to kernels/ (QLT_CUDA
// builds); a CUDA tensor in a build without the kernels is an error naming the op.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qlt::quant {

struct Int4Options {
  int64_t group_size = 32;  // 32 (= GGUF Q4_1), 64 or 128
};

// Bytes of one block: 2 + 2 + group_size / 2 (20, 36, 68).
int64_t int4_block_bytes(int64_t group_size);

struct Int4Tensor {
  at::Tensor blocks;                  // [out, in / group_size, int4_block_bytes(group_size)] uint8
  std::vector<int64_t> shape;         // logical shape [out, in]
  at::ScalarType dtype = at::kFloat;  // dtype of the original weight (and of dequantize)
  int64_t group_size = 32;

  int64_t numel() const;
  int64_t num_groups() const { return numel() / group_size; }
  int64_t storage_bytes() const;  // blocks.nbytes()
  at::Device device() const { return blocks.device(); }
  Int4Tensor to(at::Device device) const;
};

// Checks group_size (32, 64 or 128); UserError naming `what` (a JSON key or tensor) otherwise.
void check_int4_group_size(int64_t group_size, const std::string& what);

// Round-to-nearest quantization of a bf16/fp16/fp32 [out, in] tensor (in a multiple of the
// group size). Per group: min and max in fp32, d = (max - min) / 15, id = d == 0 ? 0 : 1 / d,
// q = trunc((x - min) * id + 0.5), stored d and m = min rounded to fp16 (exact rules in
// kernels/int4_layout.h). For group_size 32 byte-identical to the `gguf` Python package's Q4_1
// quantizer (tests/fixtures/ggml/). Another dtype or shape, or a bad group size, is a
// UserError naming `tensor_name` (when given). CUDA weights are quantized on the device (same
// bytes).
Int4Tensor quantize_int4(const at::Tensor& weight, const Int4Options& options = {},
                         std::string_view tensor_name = {});

// Wraps GGUF Q4_1 bytes (`bytes` = out * in/32 blocks of 20 bytes, row-major) of an [out, in]
// tensor as an Int4Tensor with group_size 32 (copied into a CPU tensor; the bytes are not
// kept). in not a multiple of 32, a byte count that does not match, or a dtype other than
// fp32/bf16/fp16 is a UserError naming `tensor_name`.
Int4Tensor int4_from_q4_1(std::span<const uint8_t> bytes, int64_t out_features, int64_t in_features,
                          at::ScalarType dtype, std::string_view tensor_name = {});

// The weight in `dtype` (default: q.dtype), logical shape: d * q + m computed in fp32 from
// the fp16 d and m, then cast (so Q4_1 dequantizes exactly as ggml and gguf.quants do).
at::Tensor dequantize_int4(const Int4Tensor& q, std::optional<at::ScalarType> dtype = std::nullopt);

// Dequantizes into `out` (logical shape, contiguous, fp32/bf16/fp16, same device), so that a
// caller can reuse one buffer across layers.
void dequantize_int4_into(const Int4Tensor& q, at::Tensor& out);

}  // namespace qlt::quant
