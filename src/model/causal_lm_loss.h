// Next-token cross-entropy for a causal LM, computed in chunks of positions so that the
// [B, T, vocab] logits are never materialized at once.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace qlt::model {

inline constexpr int64_t kIgnoreIndex = -100;  // label value excluded from the loss (HF's)

struct LossSum {
  at::Tensor sum;     // [] fp32: sum of -log p(target) over counted positions (autograd-able)
  int64_t count = 0;  // number of counted positions
  double mean() const { return count ? sum.item<double>() / static_cast<double>(count) : 0.0; }
};

// hidden [B, T, H], lm_head [V, H], labels [B, T] int64 (kIgnoreIndex to skip).
// Position t predicts labels[:, t+1] (the shift of LlamaForCausalLM); logits are upcast to
// fp32 before the softmax. chunk_size: positions per chunk of the flattened [B*(T-1)] rows.
LossSum causal_lm_loss(const at::Tensor& hidden, const at::Tensor& lm_head,
                       const at::Tensor& labels, int64_t chunk_size = 4096);

}  // namespace qlt::model
