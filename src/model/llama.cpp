#include "model/llama.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <set>

#include "core/errors.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/llama_gguf.h"

namespace qlt::model {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto x32 = x.to(at::kFloat);
  auto variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  return (weight * (x32 * at::rsqrt(variance + eps))).to(x.scalar_type());
}

const std::array<std::string, kNumLlamaLinears>& llama_linear_names() {
  static const std::array<std::string, kNumLlamaLinears> names = {
      "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return names;
}

enum Linear : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown };

const adapters::FrozenWeight& linear_weight(const LlamaLayerWeights& l, int linear) {
  switch (linear) {
    case kQ:
      return l.q_proj;
    case kK:
      return l.k_proj;
    case kV:
      return l.v_proj;
    case kO:
      return l.o_proj;
    case kGate:
      return l.gate_proj;
    case kUp:
      return l.up_proj;
    case kDown:
      return l.down_proj;
  }
  TORCH_CHECK(false, "linear_weight: bad linear index ", linear);
}

adapters::FrozenWeight& linear_weight(LlamaLayerWeights& l, int linear) {
  return const_cast<adapters::FrozenWeight&>(
      linear_weight(static_cast<const LlamaLayerWeights&>(l), linear));
}

namespace {

// x [..., in] -> [..., out] through linear `linear` of layer `layer`, with its adapter if any.
at::Tensor layer_linear(const LlamaModel& m, int64_t layer, int linear, const at::Tensor& x,
                        const ForwardOptions& options) {
  const auto& base = linear_weight(m.weights.layers[layer], linear);
  if (!m.has_adapters()) return adapters::frozen_linear(x, base);
  const auto& adapter = m.adapters[layer][linear];
  adapters::LoraDropout dropout{m.adapter_options->config.dropout, options.training,
                                options.dropout_generator};
  return adapters::adapted_linear(x, base, adapter ? &*adapter : nullptr, *m.adapter_options,
                                  dropout);
}

// Queries, keys and values of x [B, T, hidden] with RoPE applied to q and k:
// q [B, heads, T, D], k and v [B, kv_heads, T, D].
struct RotatedQkv {
  at::Tensor q, k, v;
};

RotatedQkv rotated_qkv(const LlamaModel& m, int64_t layer, const at::Tensor& x,
                       const RopeTables& rope, const ForwardOptions& options) {
  const auto& c = m.config;
  const int64_t B = x.size(0), T = x.size(1);
  // [B, T, heads*D] -> [B, heads, T, D]
  auto q = layer_linear(m, layer, kQ, x, options)
               .view({B, T, c.num_attention_heads, c.head_dim})
               .transpose(1, 2);
  auto k = layer_linear(m, layer, kK, x, options)
               .view({B, T, c.num_key_value_heads, c.head_dim})
               .transpose(1, 2);
  auto v = layer_linear(m, layer, kV, x, options)
               .view({B, T, c.num_key_value_heads, c.head_dim})
               .transpose(1, 2);
  return {apply_rope(q, rope), apply_rope(k, rope), v};
}

// SDPA over q [B, heads, T, D] and k, v [B, kv_heads, S, D] (mask: see at::scaled_dot_product_
// attention), then o_proj: -> [B, T, hidden]. GQA: each group of heads/kv_heads query heads
// shares one key/value head.
at::Tensor attend(const LlamaModel& m, int64_t layer, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& v, const std::optional<at::Tensor>& attn_mask, bool causal,
                  const ForwardOptions& options) {
  const auto& c = m.config;
  const int64_t B = q.size(0), T = q.size(2);
  auto out = at::scaled_dot_product_attention(
      q, k, v, attn_mask, /*dropout_p=*/0.0, /*is_causal=*/causal, /*scale=*/std::nullopt,
      /*enable_gqa=*/c.num_key_value_heads != c.num_attention_heads);
  out = out.transpose(1, 2).reshape({B, T, c.q_size()});
  return layer_linear(m, layer, kO, out, options);
}

// x [B, T, hidden] -> attention output [B, T, hidden].
at::Tensor attention(const LlamaModel& m, int64_t layer, const at::Tensor& x,
                     const RopeTables& rope, const at::Tensor& attn_mask,
                     const ForwardOptions& options) {
  auto [q, k, v] = rotated_qkv(m, layer, x, rope, options);
  // Without a mask SDPA's own causal path (fastest, and what the eval path has always used).
  const bool causal = !attn_mask.defined();
  return attend(m, layer, q, k, v, causal ? std::nullopt : std::optional<at::Tensor>(attn_mask),
                causal, options);
}

at::Tensor mlp(const LlamaModel& m, int64_t layer, const at::Tensor& x,
               const ForwardOptions& options) {
  auto gate = layer_linear(m, layer, kGate, x, options);
  auto up = layer_linear(m, layer, kUp, x, options);
  return layer_linear(m, layer, kDown, at::silu(gate) * up, options);
}

// Attention of t new positions x [B, t, hidden] (rope at their positions cache.length..+t-1)
// over the cached positions and themselves; appends this layer's new keys and values.
at::Tensor cached_attention(const LlamaModel& m, int64_t layer, const at::Tensor& x,
                            const RopeTables& rope, KvCache& cache) {
  const ForwardOptions inference;
  auto [q, k, v] = rotated_qkv(m, layer, x, rope, inference);
  const int64_t past = cache.length, t = x.size(1);
  auto [keys, values] = cache.append(layer, k, v);  // [B, kv_heads, past + t, D]
  // New query i sits at position past + i and sees keys 0..past+i. One query sees every key
  // (no mask); with no past this is SDPA's causal case; otherwise SDPA's is_causal would align
  // the triangle to the top left, so the mask [t, past + t] is explicit.
  if (t == 1) return attend(m, layer, q, keys, values, std::nullopt, false, inference);
  if (past == 0) return attend(m, layer, q, keys, values, std::nullopt, true, inference);
  const auto positions = at::arange(past + t, x.options().dtype(at::kLong));
  const auto mask = positions.unsqueeze(0) <= positions.narrow(0, past, t).unsqueeze(1);
  return attend(m, layer, q, keys, values, mask, false, inference);
}

}  // namespace

at::Tensor segment_attention_mask(const at::Tensor& segment_ids) {
  TORCH_CHECK(segment_ids.dim() == 2 && segment_ids.scalar_type() == at::kLong,
              "segment_attention_mask: segment_ids must be [B, T] int64, got ", segment_ids.sizes(),
              " ", segment_ids.scalar_type());
  const int64_t T = segment_ids.size(1);
  auto same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1);  // [B, T(query), T(key)]
  auto causal = at::ones({T, T}, segment_ids.options().dtype(at::kBool)).tril();
  return (same & causal).unsqueeze(1);  // [B, 1, T, T]
}

at::Tensor packed_position_ids(const at::Tensor& segment_ids) {
  TORCH_CHECK(segment_ids.dim() == 2 && segment_ids.scalar_type() == at::kLong,
              "packed_position_ids: segment_ids must be [B, T] int64, got ", segment_ids.sizes(),
              " ", segment_ids.scalar_type());
  const int64_t B = segment_ids.size(0), T = segment_ids.size(1);
  auto index = at::arange(T, segment_ids.options()).unsqueeze(0).expand({B, T});
  auto starts = at::ones_like(segment_ids, segment_ids.options().dtype(at::kBool));
  if (T > 1) {
    starts.narrow(1, 1, T - 1)
        .copy_(segment_ids.narrow(1, 1, T - 1) != segment_ids.narrow(1, 0, T - 1));
  }
  // Index of the current segment's first token: running max of the start indices.
  auto segment_start = std::get<0>(at::where(starts, index, at::zeros_like(index)).cummax(1));
  return index - segment_start;
}

at::Tensor decoder_layer(const LlamaModel& model, int64_t layer, const at::Tensor& x,
                         const RopeTables& rope, const at::Tensor& attn_mask,
                         const ForwardOptions& options) {
  const auto& l = model.weights.layers.at(layer);
  const double eps = model.config.rms_norm_eps;
  auto h =
      x + attention(model, layer, rms_norm(x, l.input_layernorm, eps), rope, attn_mask, options);
  return h + mlp(model, layer, rms_norm(h, l.post_attention_layernorm, eps), options);
}

at::Tensor LlamaModel::hidden_states(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                     const at::Tensor& segment_ids,
                                     const ForwardOptions& options) const {
  TORCH_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong,
              "hidden_states: input_ids must be [B, T] int64, got ", input_ids.sizes(), " ",
              input_ids.scalar_type());
  auto ids = input_ids.to(device());
  auto positions = position_ids.defined()
                       ? position_ids.to(device())
                       : at::arange(ids.size(1), ids.options()).unsqueeze(0).expand_as(ids);
  at::Tensor mask;  // undefined: plain causal attention
  if (segment_ids.defined()) {
    TORCH_CHECK(segment_ids.sizes() == input_ids.sizes(),
                "hidden_states: segment_ids must have input_ids' shape ", input_ids.sizes(),
                ", got ", segment_ids.sizes());
    mask = segment_attention_mask(segment_ids.to(device()));
  }
  auto rope = rope_tables(inv_freq, positions, compute_dtype);
  auto x = at::embedding(weights.embed_tokens, ids).to(compute_dtype);
  for (int64_t i = 0; i < static_cast<int64_t>(weights.layers.size()); ++i) {
    if (!options.layer_wrapper) {
      x = decoder_layer(*this, i, x, rope, mask, options);
      continue;
    }
    // By value: a checkpointing wrapper calls the layer again in backward, after this returns.
    auto layer = [model = this, i, rope, mask, options](const at::Tensor& h) {
      return decoder_layer(*model, i, h, rope, mask, options);
    };
    x = options.layer_wrapper(i, layer, x);
  }
  return rms_norm(x, weights.norm, config.rms_norm_eps);
}

at::Tensor LlamaModel::logits(const at::Tensor& input_ids) const {
  return at::linear(hidden_states(input_ids), weights.lm_head);
}

at::Tensor forward_cached(const LlamaModel& model, const at::Tensor& input_ids, KvCache& cache) {
  TORCH_CHECK(
      input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong && input_ids.size(1) >= 1,
      "forward_cached: input_ids must be [B, t>=1] int64, got ", input_ids.sizes(), " ",
      input_ids.scalar_type());
  TORCH_CHECK(static_cast<int64_t>(cache.keys.size()) == model.config.num_hidden_layers &&
                  cache.batch_size() == input_ids.size(0),
              "forward_cached: the cache (", cache.keys.size(), " layers, batch ",
              cache.batch_size(), ") was not made for this model and batch");
  at::NoGradGuard no_grad;
  const int64_t t = input_ids.size(1);
  auto ids = input_ids.to(model.device());
  auto positions =
      at::arange(cache.length, cache.length + t, ids.options()).unsqueeze(0).expand_as(ids);
  auto rope = rope_tables(model.inv_freq, positions, model.compute_dtype);
  const double eps = model.config.rms_norm_eps;
  auto x = at::embedding(model.weights.embed_tokens, ids).to(model.compute_dtype);
  // decoder_layer with cached attention.
  for (int64_t i = 0; i < model.config.num_hidden_layers; ++i) {
    const auto& l = model.weights.layers[i];
    auto h = x + cached_attention(model, i, rms_norm(x, l.input_layernorm, eps), rope, cache);
    x = h + mlp(model, i, rms_norm(h, l.post_attention_layernorm, eps), {});
  }
  cache.advance(t);
  return rms_norm(x, model.weights.norm, eps);
}

LlamaModel load_llama(const std::filesystem::path& model_path, at::ScalarType compute_dtype,
                      at::Device device, const quant::WeightFormat& format, bool allow_non_finite) {
  LlamaModel m;
  const LoadOptions options{compute_dtype, device, format, allow_non_finite};
  if (io::is_gguf_file(model_path)) {
    const auto file = io::GgufFile::open(model_path);
    m.config = llama_config_from_gguf(file);
    m.weights = load_llama_weights_gguf(file, m.config, options);
  } else {
    m.config = read_llama_config(model_path);
    auto checkpoint = io::SafetensorsCheckpoint::open(model_path);
    m.weights = load_llama_weights(checkpoint, m.config, options);
  }
  m.compute_dtype = compute_dtype;
  m.inv_freq = rope_inv_freq(m.config).to(device);
  return m;
}

// ---------------------------------------------------------------------------------------------
// LoRA attachment

std::string peft_module_key(int64_t layer, int linear) {
  TORCH_CHECK(linear >= 0 && linear < kNumLlamaLinears, "peft_module_key: bad linear ", linear);
  const char* block = linear <= kO ? "self_attn" : "mlp";
  return fmt::format("base_model.model.model.layers.{}.{}.{}", layer, block,
                     llama_linear_names()[linear]);
}

}  // namespace qlt::model
