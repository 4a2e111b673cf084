// The tensors of a LLaMA checkpoint, checked by name and shape against its config.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "adapters/frozen_weight.h"
#include "io/safetensors.h"
#include "model/llama_config.h"

namespace qlt::model {

struct LlamaLayerWeights {
  at::Tensor input_layernorm;  // [hidden]
  // Frozen linear weights, in any format of quant/weight_format.h:
  adapters::FrozenWeight q_proj, k_proj, v_proj;  // [q_size, hidden], [kv_size, hidden] x2
  adapters::FrozenWeight o_proj;                  // [hidden, q_size]
  at::Tensor post_attention_layernorm;            // [hidden]
  adapters::FrozenWeight gate_proj, up_proj;      // [intermediate, hidden]
  adapters::FrozenWeight down_proj;               // [hidden, intermediate]
};

struct LlamaWeights {
  at::Tensor embed_tokens;  // [vocab, hidden]
  std::vector<LlamaLayerWeights> layers;
  at::Tensor norm;     // [hidden]
  at::Tensor lm_head;  // [vocab, hidden]; the same tensor as embed_tokens when tied
};

// One expected checkpoint tensor: its Hugging Face name and shape.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

// The decoder's linear weights, the ones a quantized format may hold:
// "model.layers.{i}.self_attn.q_proj.weight" and the other six projections (not embeddings, norms
// or lm_head).
bool is_decoder_linear(const std::string& name);

// Every tensor a checkpoint of this config must hold, in file order.
std::vector<ExpectedTensor> expected_llama_tensors(const LlamaConfig& config);

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;  // linear weights and embeddings
  at::Device device = at::kCPU;
  // How decoder linear weights are stored. A quantized format quantizes each weight on
  // `device` as soon as it is read, so peak memory stays near one weight in full precision
  // plus the quantized model. Embeddings, lm_head and norms stay in high precision (as
  // bitsandbytes does). Weights already stored in a quantized format (bnb NF4, GGUF Q4_1)
  // are used as stored when they match the format (quant::matches).
  quant::WeightFormat format = quant::DenseFormat{};
  // NaN or Inf in a floating-point tensor (weights, norms, NF4 scales) is a UserError naming
  // the tensor unless this is set (config model.allow_non_finite): a damaged file would
  // otherwise train or evaluate to "loss nan" with no hint of where it came from.
  bool allow_non_finite = false;
};

// Refuses NaN / Inf in `t` (a floating tensor as read, before any conversion): UserError naming
// `file`, the tensor `name` and `what` (e.g. " (its NF4 absmax)"), the count and the first index,
// and how to load it anyway (model.allow_non_finite). Callers skip it when that is set.
void check_finite_weight(const std::string& file, const std::string& name, const at::Tensor& t,
                         const char* what = "");

// Checks names and shapes without reading data. Missing, unexpected and wrongly shaped tensors
// are all reported together, by name and shape, in one UserError.
void check_llama_tensors(const io::SafetensorsCheckpoint& checkpoint, const LlamaConfig& config);

// Checks (as above), then reads every tensor. Missing, unexpected and wrongly shaped tensors are
// all reported together, by name and shape, in one UserError. Norm weights stay fp32.
LlamaWeights load_llama_weights(const io::SafetensorsCheckpoint& checkpoint,
                                const LlamaConfig& config, const LoadOptions& options);

}  // namespace qlt::model
