// The LLaMA decoder forward pass (Hugging Face LlamaForCausalLM semantics):
// embed -> L x [x + attn(rmsnorm(x)); x + mlp(rmsnorm(x))] -> rmsnorm -> lm_head.
#pragma once

#include <ATen/ATen.h>

#include <filesystem>

#include "model/llama_config.h"
#include "model/llama_weights.h"

namespace qlt::model {

struct LlamaModel {
  LlamaConfig config;
  LlamaWeights weights;
  at::ScalarType compute_dtype = at::kFloat;  // activations and linear weights
  at::Tensor inv_freq;                        // [head_dim/2] fp32 RoPE frequencies

  at::Device device() const { return weights.embed_tokens.device(); }

  // input_ids [B, T] int64 -> final-normed hidden states [B, T, hidden] (compute dtype).
  // position_ids [B, T] defaults to 0..T-1 per row. Attention is causal.
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& position_ids = {}) const;

  // input_ids [B, T] -> logits [B, T, vocab] (compute dtype). Materializes B*T*vocab values;
  // for a loss prefer causal_lm_loss on hidden_states, which works in chunks.
  at::Tensor logits(const at::Tensor& input_ids) const;
};

// Loads config.json and the safetensors weights of a Hugging Face LLaMA directory; with `nf4`
// the decoder's linear weights are quantized as they are read.
LlamaModel load_llama(const std::filesystem::path& model_dir, at::ScalarType compute_dtype,
                      at::Device device, std::optional<quant::Nf4Options> nf4 = std::nullopt);

// x [..., hidden] -> x / rms(x) * weight, computed in fp32 and returned in x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace qlt::model
