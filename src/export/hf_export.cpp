#include "export/hf_export.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <map>
#include <utility>

#include "core/errors.h"
#include "core/json_reader.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "quant/bnb_layout.h"

namespace qlt::exporter {
namespace {

namespace fs = std::filesystem;

at::Tensor cpu_bf16(const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kCPU).contiguous(); }

std::string shard_name(size_t index, size_t count) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", index + 1, count);
}

std::string megabytes(int64_t bytes) { return fmt::format("{:.2f} MB", bytes / 1e6); }

}  // namespace

std::vector<HfTensor> hf_state_dict(const model::LlamaModel& model, HfLinears linears_as) {
  const auto& w = model.weights;
  std::vector<HfTensor> out;
  const auto add = [&](std::string name, const at::Tensor& t) {
    out.push_back({name, t.sizes().vec(), t.numel() * 2, [name, t] {
                     return std::vector<std::pair<std::string, at::Tensor>>{{name, cpu_bf16(t)}};
                   }});
  };
  add("model.embed_tokens.weight", w.embed_tokens);
  const auto& linears = model::llama_linear_names();
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const auto& layer = w.layers[i];
    const std::string prefix = fmt::format("model.layers.{}.", i);
    add(prefix + "input_layernorm.weight", layer.input_layernorm);
    for (int j = 0; j < model::kNumLlamaLinears; ++j) {
      if (j == 4) add(prefix + "post_attention_layernorm.weight", layer.post_attention_layernorm);
      const adapters::FrozenWeight& weight = model::linear_weight(layer, j);
      const std::string name = prefix + (j < 4 ? "self_attn." : "mlp.") + linears[j] + ".weight";
      const std::vector<int64_t> shape = quant::stored_shape(weight.stored);
      if (linears_as == HfLinears::kBnbNf4) {
        const auto* nf4 = std::get_if<quant::Nf4Tensor>(&weight.stored);
        TORCH_CHECK(nf4 != nullptr, "hf_state_dict: ", name, " is stored as ",
                    quant::describe(weight.stored), ", not NF4");
        out.push_back({name, shape, nf4->storage_bytes(), [name, nf4] {
                         // The quant state says bf16: the dtype of the rest of the folder.
                         return quant::bnb_nf4_tensors(name, nf4->to(at::kCPU), "bfloat16");
                       }});
        continue;
      }
      // Dequantized to fp32 first, so a quantized weight is rounded to bf16 once.
      out.push_back({name, shape, shape.at(0) * shape.at(1) * 2, [name, &weight] {
                       return std::vector<std::pair<std::string, at::Tensor>>{
                           {name, cpu_bf16(weight.materialize(at::kFloat))}};
                     }});
    }
  }
  add("model.norm.weight", w.norm);
  if (!model.config.tie_word_embeddings) add("lm_head.weight", w.lm_head);

  // The names and shapes every loader expects (the checkpoint check of model/llama_weights.h).
  const auto expected = model::expected_llama_tensors(model.config);
  TORCH_CHECK(expected.size() == out.size(), "hf_state_dict: ", out.size(), " tensors, expected ",
              expected.size());
  for (size_t k = 0; k < out.size(); ++k) {
    TORCH_CHECK(expected[k].name == out[k].name && expected[k].shape == out[k].shape,
                "hf_state_dict: tensor ", k, " is ", out[k].name, ", expected ", expected[k].name);
  }
  return out;
}

std::vector<std::vector<size_t>> plan_shards(const std::vector<int64_t>& bytes,
                                             int64_t max_shard_bytes) {
  // huggingface_hub/serialization/_base.py, split_state_dict_into_shards_factory.
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  int64_t current_bytes = 0;
  for (size_t k = 0; k < bytes.size(); ++k) {
    if (bytes[k] > max_shard_bytes) {  // bigger than a shard: one of its own
      shards.push_back({k});
      continue;
    }
    if (current_bytes + bytes[k] > max_shard_bytes) {  // would tip it over: a new shard
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(k);
    current_bytes += bytes[k];
  }
  if (!current.empty()) shards.push_back(std::move(current));
  return shards;
}

int64_t parse_byte_size(std::string_view text, std::string_view what) {
  const auto bad = [&]() -> int64_t {
    user_error(
        "{} \"{}\": not a size; give bytes, or a whole number with a unit: KB, MB, GB, TB "
        "(powers of 1000, as transformers' max_shard_size) or KiB, MiB, GiB, TiB (powers of "
        "1024), e.g. 5GB",
        what, abridged(text, 40));
  };
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 18) return bad();
  const int64_t number = std::stoll(std::string(text.substr(0, digits)));
  std::string unit(text.substr(digits));
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  static const std::map<std::string, int64_t> kUnits = {
      {"", 1},
      {"B", 1},
      {"KB", 1'000},
      {"MB", 1'000'000},
      {"GB", 1'000'000'000},
      {"TB", 1'000'000'000'000},
      {"KIB", int64_t{1} << 10},
      {"MIB", int64_t{1} << 20},
      {"GIB", int64_t{1} << 30},
      {"TIB", int64_t{1} << 40},
  };
  const auto it = kUnits.find(unit);
  if (it == kUnits.end()) return bad();
  if (number > std::numeric_limits<int64_t>::max() / it->second)
    user_error("{} \"{}\": too large", what, abridged(text, 40));
  if (number < 1) user_error("{} \"{}\": must be at least 1 byte", what, abridged(text, 40));
  return number * it->second;
}

nlohmann::json hf_llama_config_json(const model::LlamaConfig& c) {
  nlohmann::json rope_scaling = nullptr;
  if (c.rope_scaling.llama3) {
    rope_scaling = {
        {"rope_type", "llama3"},
        {"factor", c.rope_scaling.factor},
        {"low_freq_factor", c.rope_scaling.low_freq_factor},
        {"high_freq_factor", c.rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  }
  // The keys transformers 4.57's LlamaConfig saves, with its defaults where the model has no
  // say (initializer_range, pretraining_tp, use_cache).
  return {{"architectures", nlohmann::json::array({"LlamaForCausalLM"})},
          {"model_type", "llama"},
          {"hidden_act", "silu"},
          {"attention_bias", false},
          {"attention_dropout", 0.0},
          {"mlp_bias", false},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_hidden_layers", c.num_hidden_layers},
          {"num_attention_heads", c.num_attention_heads},
          {"num_key_value_heads", c.num_key_value_heads},
          {"head_dim", c.head_dim},
          {"max_position_embeddings", c.max_position_embeddings},
          {"rms_norm_eps", c.rms_norm_eps},
          {"rope_theta", c.rope_theta},
          {"rope_scaling", rope_scaling},
          {"tie_word_embeddings", c.tie_word_embeddings},
          {"bos_token_id", c.bos_token_id},
          {"eos_token_id", c.eos_token_id},
          {"initializer_range", 0.02},
          {"pretraining_tp", 1},
          {"use_cache", true},
          {"torch_dtype", "bfloat16"},
          {"dtype", "bfloat16"}};
}

namespace {

// A Hugging Face folder of the merged model: weights (linears as `linears` says), config.json,
// tokenizer files. `quantization_config`: added to config.json when not null.
ExportSummary write_hf_folder(const ExportInput& input, const fs::path& dir, HfLinears linears,
                              const nlohmann::json& quantization_config) {
  const model::LlamaModel& model = input.model;
  TORCH_CHECK(!model.has_adapters(), "write_hf_folder: merge the adapters first");
  ExportSummary summary;

  // 1. The weights, shard by shard (at most one shard of copies in memory).
  const std::vector<HfTensor> tensors = hf_state_dict(model, linears);
  std::vector<int64_t> bytes;
  int64_t total = 0;
  for (const auto& t : tensors) {
    bytes.push_back(t.bytes());
    total += t.bytes();
  }
  const auto shards = plan_shards(bytes, input.settings.max_shard_bytes);
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file =
        shards.size() == 1 ? "model.safetensors" : shard_name(s, shards.size());
    std::vector<std::pair<std::string, at::Tensor>> shard;
    for (const size_t k : shards[s]) {
      for (auto& entry : tensors[k].entries()) {
        weight_map[entry.first] = file;
        shard.push_back(std::move(entry));
      }
    }
    io::save_safetensors(dir / file, shard, {{"format", "pt"}});
  }
  if (shards.size() > 1) {
    const nlohmann::json index = {{"metadata", {{"total_size", total}}},
                                  {"weight_map", weight_map}};
    io::write_file_atomically(dir / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  summary.notes.push_back(fmt::format(
      "{} tensors in {}: {}", tensors.size(),
      linears == HfLinears::kBnbNf4 ? "bf16, decoder linears in bitsandbytes NF4" : "bf16",
      shards.size() == 1 ? std::string("model.safetensors")
                         : fmt::format("{} shards of at most {} + model.safetensors.index.json",
                                       shards.size(), megabytes(input.settings.max_shard_bytes))));

  // 2. config.json: the source's, else made from the model's architecture.
  const bool hf_source = fs::is_directory(input.source);
  nlohmann::json config;
  if (hf_source && fs::exists(input.source / "config.json")) {
    config = read_json_file(input.source / "config.json");
    config.erase("quantization_config");  // a bitsandbytes source: the export is not quantized
    config["torch_dtype"] = "bfloat16";
    config["dtype"] = "bfloat16";  // transformers >= 4.56 reads this one first
  } else {
    config = hf_llama_config_json(model.config);
    config["bos_token_id"] = input.tokenizer.bos_id();
    config["eos_token_id"] = input.tokenizer.eos_id();
  }
  if (!quantization_config.is_null()) config["quantization_config"] = quantization_config;
  io::write_file_atomically(dir / "config.json", config.dump(2) + "\n");

  // 3. Tokenizer and generation files.
  if (hf_source) {
    for (const char* file : kHfTokenizerFiles) {
      if (fs::exists(input.source / file)) fs::copy_file(input.source / file, dir / file);
    }
    if (!fs::exists(dir / "tokenizer.model") && !fs::exists(dir / "tokenizer.json")) {
      summary.notes.push_back(
          fmt::format("no tokenizer: {} has neither tokenizer.model nor tokenizer.json to copy",
                      input.source.string()));
    }
  } else {
    summary.notes.push_back(fmt::format(
        "no tokenizer files: model.path {} is a GGUF file, whose vocabulary is not written as "
        "Hugging Face tokenizer files yet; transformers loads the model as it is, and for its "
        "tokenizer copy tokenizer.model or tokenizer.json with tokenizer_config.json from the "
        "model's Hugging Face repository into the output folder",
        input.source.string()));
  }
  return summary;
}

}  // namespace

ExportSummary write_hf_bf16(const ExportInput& input, const fs::path& dir) {
  return write_hf_folder(input, dir, HfLinears::kBf16, nullptr);
}

ExportSummary write_hf_nf4(const ExportInput& input, const fs::path& dir) {
  // The merge stored every linear as NF4 with the config's block size and double quant.
  const auto& q = std::get<quant::Nf4Tensor>(input.model.weights.layers.at(0).q_proj.stored);
  quant::Nf4Options options;
  options.block_size = q.block_size;
  options.double_quant = q.double_quant();
  return write_hf_folder(input, dir, HfLinears::kBnbNf4,
                         quant::bnb_quantization_config(options, "bfloat16"));
}

}  // namespace qlt::exporter
