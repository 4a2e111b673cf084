// LlamaConfig: the architecture fields of a Hugging Face LLaMA config.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace qlt::model {

// rope_scaling of config.json. Only "llama3" (Llama 3.1+) changes the frequencies here;
// other variants are refused when the config is read rather than silently ignored.
struct RopeScaling {
  bool llama3 = false;
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // = num_attention_heads when absent (no GQA)
  int64_t head_dim = 0;             // = hidden_size / num_attention_heads when absent
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";  // dtype the checkpoint was saved in
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;

  int64_t q_size() const { return num_attention_heads * head_dim; }
  int64_t kv_size() const { return num_key_value_heads * head_dim; }
};

// Parses and checks config.json's fields. `origin` (the file) is named in errors: a missing
// required field, a wrong type, an inconsistent shape (heads not dividing), or an unsupported
// feature (model_type not llama, hidden_act not silu, attention/mlp bias, other rope_scaling).
LlamaConfig llama_config_from_json(const nlohmann::json& json, const std::string& origin);

// Reads `model_dir`/config.json.
LlamaConfig read_llama_config(const std::filesystem::path& model_dir);

}  // namespace qlt::model
