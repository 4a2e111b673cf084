#include "model/llama_config.h"

#include <fstream>

#include "core/errors.h"
#include "core/json_reader.h"

namespace qlt::model {
namespace {

using nlohmann::json;

// Reads json[key] as T, naming the file and key when it is missing or of the wrong type.
template <typename T>
T required(const json& j, const char* key, const std::string& origin) {
  if (!j.contains(key)) {
    user_error(
        "{}: missing field \"{}\"; a LLaMA config.json needs it (re-export the model with "
        "transformers' save_pretrained)",
        origin, key);
  }
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    user_error("{}: field \"{}\" has the wrong type ({})", origin, key, j.at(key).dump());
  }
}

template <typename T>
T optional(const json& j, const char* key, T fallback, const std::string& origin) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  return required<T>(j, key, origin);
}

void check_positive(int64_t value, const char* key, const std::string& origin) {
  if (value <= 0) user_error("{}: \"{}\" must be positive, got {}", origin, key, value);
}

RopeScaling parse_rope_scaling(const json& j, const std::string& origin) {
  RopeScaling scaling;
  if (!j.contains("rope_scaling") || j.at("rope_scaling").is_null()) return scaling;
  const json& rs = j.at("rope_scaling");
  if (!rs.is_object()) user_error("{}: \"rope_scaling\" must be an object or null", origin);
  // transformers writes "rope_type"; older configs wrote "type".
  std::string type = rs.contains("rope_type") ? optional<std::string>(rs, "rope_type", "", origin)
                                              : optional<std::string>(rs, "type", "", origin);
  if (type == "default" || type.empty()) return scaling;
  if (type != "llama3") {
    user_error("{}: rope_scaling type \"{}\" is not supported (supported: llama3, or none)", origin,
               type);
  }
  scaling.llama3 = true;
  scaling.factor = required<double>(rs, "factor", origin);
  scaling.low_freq_factor = required<double>(rs, "low_freq_factor", origin);
  scaling.high_freq_factor = required<double>(rs, "high_freq_factor", origin);
  scaling.original_max_position_embeddings =
      required<int64_t>(rs, "original_max_position_embeddings", origin);
  if (scaling.factor <= 0 || scaling.low_freq_factor <= 0 ||
      scaling.high_freq_factor <= scaling.low_freq_factor) {
    user_error("{}: rope_scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0",
               origin);
  }
  check_positive(scaling.original_max_position_embeddings,
                 "rope_scaling.original_max_position_embeddings", origin);
  return scaling;
}

}  // namespace

LlamaConfig llama_config_from_json(const json& j, const std::string& origin) {
  if (!j.is_object()) user_error("{}: expected a JSON object", origin);
  auto model_type = optional<std::string>(j, "model_type", "llama", origin);
  if (model_type != "llama") {
    user_error("{}: model_type \"{}\" is not a LLaMA-family model (expected \"llama\")", origin,
               model_type);
  }
  auto act = optional<std::string>(j, "hidden_act", "silu", origin);
  if (act != "silu") user_error("{}: hidden_act \"{}\" is not supported (only silu)", origin, act);
  if (optional<bool>(j, "attention_bias", false, origin) ||
      optional<bool>(j, "mlp_bias", false, origin)) {
    user_error("{}: attention_bias / mlp_bias are not supported", origin);
  }

  LlamaConfig c;
  c.vocab_size = required<int64_t>(j, "vocab_size", origin);
  c.hidden_size = required<int64_t>(j, "hidden_size", origin);
  c.intermediate_size = required<int64_t>(j, "intermediate_size", origin);
  c.num_hidden_layers = required<int64_t>(j, "num_hidden_layers", origin);
  c.num_attention_heads = required<int64_t>(j, "num_attention_heads", origin);
  for (auto [value, key] : {std::pair{c.vocab_size, "vocab_size"},
                            {c.hidden_size, "hidden_size"},
                            {c.intermediate_size, "intermediate_size"},
                            {c.num_hidden_layers, "num_hidden_layers"},
                            {c.num_attention_heads, "num_attention_heads"}}) {
    check_positive(value, key, origin);
  }
  c.num_key_value_heads =
      optional<int64_t>(j, "num_key_value_heads", c.num_attention_heads, origin);
  check_positive(c.num_key_value_heads, "num_key_value_heads", origin);
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    user_error("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
               origin, c.num_attention_heads, c.num_key_value_heads);
  }
  if (!j.contains("head_dim") && c.hidden_size % c.num_attention_heads != 0) {
    user_error("{}: hidden_size ({}) is not divisible by num_attention_heads ({})", origin,
               c.hidden_size, c.num_attention_heads);
  }
  c.head_dim = optional<int64_t>(j, "head_dim", c.hidden_size / c.num_attention_heads, origin);
  check_positive(c.head_dim, "head_dim", origin);
  if (c.head_dim % 2 != 0)
    user_error("{}: head_dim ({}) must be even for RoPE", origin, c.head_dim);
  c.max_position_embeddings =
      optional<int64_t>(j, "max_position_embeddings", c.max_position_embeddings, origin);
  c.rms_norm_eps = optional<double>(j, "rms_norm_eps", c.rms_norm_eps, origin);
  c.rope_theta = optional<double>(j, "rope_theta", c.rope_theta, origin);
  if (c.rms_norm_eps <= 0 || c.rope_theta <= 0) {
    user_error("{}: rms_norm_eps and rope_theta must be positive", origin);
  }
  c.rope_scaling = parse_rope_scaling(j, origin);
  c.tie_word_embeddings = optional<bool>(j, "tie_word_embeddings", false, origin);
  // transformers >= 4.56 writes "dtype", older versions "torch_dtype".
  c.torch_dtype = optional<std::string>(
      j, "dtype", optional<std::string>(j, "torch_dtype", c.torch_dtype, origin), origin);
  // bos/eos may be lists (Llama 3.1 lists several eos ids); keep the first.
  auto first_id = [&](const char* key, int64_t fallback) -> int64_t {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    const json& v = j.at(key);
    if (v.is_array() && !v.empty() && v.front().is_number_integer())
      return v.front().get<int64_t>();
    return required<int64_t>(j, key, origin);
  };
  c.bos_token_id = first_id("bos_token_id", c.bos_token_id);
  c.eos_token_id = first_id("eos_token_id", c.eos_token_id);
  return c;
}

LlamaConfig read_llama_config(const std::filesystem::path& model_dir) {
  if (!std::filesystem::is_directory(model_dir)) {
    user_error(
        "model directory {} does not exist; set model.path to a Hugging Face LLaMA "
        "directory (config.json, *.safetensors, tokenizer.model)",
        model_dir.string());
  }
  const auto file = model_dir / "config.json";
  const json j = read_json_file(
      file, "; model.path must be a Hugging Face model directory with a config.json");
  return llama_config_from_json(j, file.string());
}

}  // namespace qlt::model
