#include "export/hf_export.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <map>
#include <utility>

#include "core/errors.h"
#include "core/json_reader.h"
#include "export/hf_tokenizer_files.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "nf4_layout.h"
#include "quant/bnb_layout.h"
#include "quant/nf4.h"

namespace qlt::exporter {
namespace {

namespace fs = std::filesystem;

at::Tensor cpu_bf16(const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kCPU).contiguous(); }

std::string shard_name(size_t index, size_t count) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", index + 1, count);
}

std::string megabytes(int64_t bytes) { return fmt::format("{:.2f} MB", bytes / 1e6); }

// The NF4 options of the linears hf-nf4 writes: the merge's target, else the model's (stored
// as NF4: the first linear's options, which every linear shares).
quant::Nf4Options written_nf4_options(const model::LlamaModel& model, const LinearSource& linears) {
  if (linears.format) {
    const auto* o = std::get_if<quant::Nf4Options>(&*linears.format);
    TORCH_CHECK(o != nullptr, "hf-nf4: the linears are merged into ",
                quant::describe(*linears.format), ", not NF4");
    return *o;
  }
  const auto* q = std::get_if<quant::Nf4Tensor>(&model.weights.layers.at(0).q_proj.stored);
  TORCH_CHECK(q != nullptr, "hf-nf4: the model's linears are stored as ",
              quant::describe(model.weights.layers.at(0).q_proj.stored), ", not NF4");
  quant::Nf4Options options;
  options.block_size = q->block_size;
  options.double_quant = q->double_quant();
  return options;
}

}  // namespace

std::vector<HfTensor> hf_state_dict(const model::LlamaModel& model, HfLinears linears_as,
                                    const LinearSource& source) {
  const LinearSource linears = source.weight ? source : stored_linears(model);
  const auto& w = model.weights;
  std::vector<HfTensor> out;
  const auto add = [&](std::string name, const at::Tensor& t) {
    out.push_back({name, t.sizes().vec(), t.numel() * 2, {name}, [name, t] {
                     return std::vector<std::pair<std::string, at::Tensor>>{{name, cpu_bf16(t)}};
                   }});
  };
  add("model.embed_tokens.weight", w.embed_tokens);
  const auto& linear_names = model::llama_linear_names();
  // hf-nf4: the options every linear is written with (one answer for the whole model).
  const quant::Nf4Options nf4 =
      linears_as == HfLinears::kBnbNf4 ? written_nf4_options(model, linears) : quant::Nf4Options{};
  for (int64_t i = 0; i < static_cast<int64_t>(w.layers.size()); ++i) {
    const auto& layer = w.layers[static_cast<size_t>(i)];
    const std::string prefix = fmt::format("model.layers.{}.", i);
    add(prefix + "input_layernorm.weight", layer.input_layernorm);
    for (int j = 0; j < model::kNumLlamaLinears; ++j) {
      if (j == 4) add(prefix + "post_attention_layernorm.weight", layer.post_attention_layernorm);
      const quant::StoredWeight& model_stored = model::linear_weight(layer, j).stored;
      const std::string name =
          prefix + (j < 4 ? "self_attn." : "mlp.") + linear_names[j] + ".weight";
      const std::vector<int64_t> shape = quant::stored_shape(model_stored);
      if (linears_as == HfLinears::kBnbNf4) {
        const int64_t n = shape.at(0) * shape.at(1);
        const int64_t blocks = nf4::num_blocks(n, nf4.block_size);
        const int64_t bytes =
            nf4::nf4_packed_bytes(n) +
            (nf4.double_quant ? blocks + 4 * nf4::num_blocks(blocks, nf4::kNestedBlockSize)
                              : 4 * blocks);
        out.push_back({name, shape, bytes, quant::bnb_nf4_tensor_names(name, nf4.double_quant),
                       [name, linears, i, j] {
                         const quant::StoredWeight s = linears.weight(i, j);
                         const auto* q = std::get_if<quant::Nf4Tensor>(&s);
                         TORCH_CHECK(q != nullptr, "hf_state_dict: ", name, " is stored as ",
                                     quant::describe(s), ", not NF4");
                         // The quant state says bf16: the dtype of the rest of the folder.
                         return quant::bnb_nf4_tensors(name, q->to(at::kCPU), "bfloat16");
                       }});
        continue;
      }
      // Dequantized to fp32 first, so a quantized weight is rounded to bf16 once.
      out.push_back({name, shape, shape.at(0) * shape.at(1) * 2, {name}, [name, linears, i, j] {
                       return std::vector<std::pair<std::string, at::Tensor>>{
                           {name, cpu_bf16(quant::dequantize(linears.weight(i, j), at::kFloat))}};
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
  ExportSummary summary;

  // 1. The weights, tensor by tensor (one in memory at a time; the linears merged then).
  const std::vector<HfTensor> tensors = hf_state_dict(model, linears, input.linears);
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
    const std::map<std::string, std::string> metadata = {{"format", "pt"}};
    std::vector<std::string> names;
    for (const size_t k : shards[s])
      names.insert(names.end(), tensors[k].entry_names.begin(), tensors[k].entry_names.end());
    io::SafetensorsStreamWriter writer(dir / file, io::safetensors_header_capacity(names, metadata),
                                       metadata);
    for (const size_t k : shards[s]) {
      const auto entries = tensors[k].entries();
      TORCH_CHECK(entries.size() == tensors[k].entry_names.size(), tensors[k].name, ": ",
                  entries.size(), " entries made, ", tensors[k].entry_names.size(), " declared");
      for (size_t e = 0; e < entries.size(); ++e) {
        TORCH_CHECK(entries[e].first == tensors[k].entry_names[e], "entry ", entries[e].first,
                    " made, ", tensors[k].entry_names[e], " declared");
        weight_map[entries[e].first] = file;
        writer.add(entries[e].first, entries[e].second);
      }
    }
    writer.commit();
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
    // A GGUF source: its vocabulary as Hugging Face tokenizer files (export/hf_tokenizer_files.h).
    write_hf_tokenizer_from_gguf(input.source, dir);  // write_export lists every file
  }
  return summary;
}

}  // namespace

ExportSummary write_hf_bf16(const ExportInput& input, const fs::path& dir) {
  return write_hf_folder(input, dir, HfLinears::kBf16, nullptr);
}

ExportSummary write_hf_nf4(const ExportInput& input, const fs::path& dir) {
  const LinearSource linears = input.linears.weight ? input.linears : stored_linears(input.model);
  return write_hf_folder(
      input, dir, HfLinears::kBnbNf4,
      quant::bnb_quantization_config(written_nf4_options(input.model, linears), "bfloat16"));
}

}  // namespace qlt::exporter
