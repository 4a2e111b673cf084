// Rotary position embeddings as Hugging Face LLaMA computes them (modeling_rope_utils.py):
// inv_freq in fp32, optionally rescaled by the "llama3" rule; cos/sin over positions in fp32;
// rotate-half pairing (element i with i + head_dim/2).
#pragma once

#include <ATen/ATen.h>

#include "model/llama_config.h"

namespace qlt::model {

// [head_dim/2] fp32 inverse frequencies, llama3-scaled when the config says so.
at::Tensor rope_inv_freq(const LlamaConfig& config);

struct RopeTables {
  at::Tensor cos;  // [B, T, head_dim] in the compute dtype
  at::Tensor sin;  // [B, T, head_dim]
};

// cos/sin for position_ids [B, T] (int64): angle = position * inv_freq, duplicated over the
// two halves, computed in fp32 and cast to `dtype`.
RopeTables rope_tables(const at::Tensor& inv_freq, const at::Tensor& position_ids,
                       at::ScalarType dtype);

// x: [B, heads, T, head_dim]; returns x * cos + rotate_half(x) * sin.
at::Tensor apply_rope(const at::Tensor& x, const RopeTables& tables);

}  // namespace qlt::model
