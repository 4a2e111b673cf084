#include "model/llama.h"

#include "io/safetensors.h"
#include "model/rope.h"

namespace qlt::model {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto x32 = x.to(at::kFloat);
  auto variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  return (weight * (x32 * at::rsqrt(variance + eps))).to(x.scalar_type());
}

namespace {

// x [B, T, hidden] -> attention output [B, T, hidden].
at::Tensor attention(const LlamaModel& m, const LlamaLayerWeights& l, const at::Tensor& x,
                     const RopeTables& rope) {
  const auto& c = m.config;
  const int64_t B = x.size(0), T = x.size(1);
  // [B, T, heads*D] -> [B, heads, T, D]
  auto q = adapters::frozen_linear(x, l.q_proj)
               .view({B, T, c.num_attention_heads, c.head_dim})
               .transpose(1, 2);
  auto k = adapters::frozen_linear(x, l.k_proj)
               .view({B, T, c.num_key_value_heads, c.head_dim})
               .transpose(1, 2);
  auto v = adapters::frozen_linear(x, l.v_proj)
               .view({B, T, c.num_key_value_heads, c.head_dim})
               .transpose(1, 2);
  q = apply_rope(q, rope);
  k = apply_rope(k, rope);
  // GQA: each group of heads/kv_heads query heads shares one key/value head.
  auto out = at::scaled_dot_product_attention(
      q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
      /*is_causal=*/true, /*scale=*/std::nullopt,
      /*enable_gqa=*/c.num_key_value_heads != c.num_attention_heads);
  out = out.transpose(1, 2).reshape({B, T, c.q_size()});
  return adapters::frozen_linear(out, l.o_proj);
}

at::Tensor mlp(const LlamaLayerWeights& l, const at::Tensor& x) {
  return adapters::frozen_linear(
      at::silu(adapters::frozen_linear(x, l.gate_proj)) * adapters::frozen_linear(x, l.up_proj),
      l.down_proj);
}

}  // namespace

at::Tensor LlamaModel::hidden_states(const at::Tensor& input_ids,
                                     const at::Tensor& position_ids) const {
  TORCH_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong,
              "hidden_states: input_ids must be [B, T] int64, got ", input_ids.sizes(), " ",
              input_ids.scalar_type());
  auto ids = input_ids.to(device());
  auto positions = position_ids.defined()
                       ? position_ids.to(device())
                       : at::arange(ids.size(1), ids.options()).unsqueeze(0).expand_as(ids);
  auto rope = rope_tables(inv_freq, positions, compute_dtype);
  auto x = at::embedding(weights.embed_tokens, ids).to(compute_dtype);
  for (const auto& layer : weights.layers) {
    x = x + attention(*this, layer, rms_norm(x, layer.input_layernorm, config.rms_norm_eps), rope);
    x = x + mlp(layer, rms_norm(x, layer.post_attention_layernorm, config.rms_norm_eps));
  }
  return rms_norm(x, weights.norm, config.rms_norm_eps);
}

at::Tensor LlamaModel::logits(const at::Tensor& input_ids) const {
  return at::linear(hidden_states(input_ids), weights.lm_head);
}

LlamaModel load_llama(const std::filesystem::path& model_dir, at::ScalarType compute_dtype,
                      at::Device device, std::optional<quant::Nf4Options> nf4) {
  LlamaModel m;
  m.config = read_llama_config(model_dir);
  auto checkpoint = io::SafetensorsCheckpoint::open(model_dir);
  m.weights = load_llama_weights(checkpoint, m.config, {compute_dtype, device, nf4});
  m.compute_dtype = compute_dtype;
  m.inv_freq = rope_inv_freq(m.config).to(device);
  return m;
}

}  // namespace qlt::model
