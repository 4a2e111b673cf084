#include "export/peft_adapter.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/config.h"
#include "core/errors.h"
#include "core/json_reader.h"
#include "io/atomic_file.h"
#include "io/folder_manifest.h"
#include "io/safetensors.h"

namespace qlt::exporter {
namespace {

using nlohmann::json;

// lora_alpha as PEFT users write it: an integer when it is one (16, not 16.0).
json number_json(double value) {
  if (std::nearbyint(value) == value && std::abs(value) < 1e15) {
    return static_cast<int64_t>(value);
  }
  return value;
}

// The keys peft 0.21.2's LoraConfig.save_pretrained writes (tests/fixtures/lora_llama_gqa/
// adapter/adapter_config.json), with the values that describe a plain LoRA. "peft_version" is
// left out: PEFT fills it in with its own version when absent.
json peft_config_json(const adapters::AdapterOptions& options, const std::string& base_model) {
  std::vector<std::string> targets;
  for (const auto& t : options.target_modules()) {
    if (std::find(targets.begin(), targets.end(), t) == targets.end()) targets.push_back(t);
  }
  json j = json::object();
  j["alora_invocation_tokens"] = nullptr;
  j["alpha_pattern"] = json::object();
  j["arrow_config"] = nullptr;
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = base_model;
  j["bias"] = "none";
  j["corda_config"] = nullptr;
  j["ensure_weight_tying"] = false;
  j["eva_config"] = nullptr;
  j["exclude_modules"] = nullptr;
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["kasa_config"] = nullptr;
  j["layer_replication"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["loftq_config"] = json::object();
  j["lora_alpha"] = number_json(adapters::peft_alpha(options));
  j["lora_bias"] = false;
  j["lora_dropout"] = options.config.dropout;
  j["lora_ga_config"] = nullptr;
  j["megatron_config"] = nullptr;
  j["megatron_core"] = "megatron.core";
  j["modules_to_save"] = nullptr;
  j["monteclora_config"] = nullptr;
  j["peft_type"] = "LORA";
  j["qalora_group_size"] = 16;
  j["r"] = adapters::peft_rank(options);
  j["rank_pattern"] = json::object();
  j["revision"] = nullptr;
  j["target_modules"] = targets;
  j["target_parameters"] = nullptr;
  j["task_type"] = "CAUSAL_LM";
  j["trainable_token_indices"] = nullptr;
  j["use_bdlora"] = nullptr;
  j["use_dora"] = false;
  j["use_qalora"] = false;
  j["use_rslora"] = options.config.use_rslora;
  j["velora_config"] = nullptr;
  return j;
}

// A feature PEFT supports and we do not: the key must be absent, null, false, or empty.
bool is_unset(const json& j) {
  return j.is_null() || (j.is_boolean() && !j.get<bool>()) ||
         ((j.is_object() || j.is_array() || j.is_string()) && j.empty());
}

AdapterConfig lora_config_from_json(const json& j, const std::string& file) {
  if (!j.is_object()) user_error("{}: expected a JSON object", file);
  auto peft_type = j.value("peft_type", json());
  if (peft_type != "LORA") {
    user_error("{}: key \"peft_type\" is {}, only \"LORA\" adapters are supported", file,
               peft_type.dump());
  }
  if (j.contains("task_type") && !j["task_type"].is_null() && j["task_type"] != "CAUSAL_LM") {
    user_error("{}: key \"task_type\" is {}, expected \"CAUSAL_LM\" (a LLaMA causal LM)", file,
               j["task_type"].dump());
  }
  if (j.contains("bias") && j["bias"] != "none") {
    user_error("{}: key \"bias\" is {}; only \"none\" is supported (no trained biases)", file,
               j["bias"].dump());
  }
  static const char* const kUnsupported[] = {"use_dora",
                                             "lora_bias",
                                             "use_qalora",
                                             "fan_in_fan_out",
                                             "layers_to_transform",
                                             "layer_replication",
                                             "rank_pattern",
                                             "alpha_pattern",
                                             "modules_to_save",
                                             "exclude_modules",
                                             "target_parameters",
                                             "trainable_token_indices",
                                             "alora_invocation_tokens",
                                             "arrow_config"};
  for (const char* key : kUnsupported) {
    if (j.contains(key) && !is_unset(j[key])) {
      user_error(
          "{}: key \"{}\" is {}; this PEFT feature is not supported here (only plain "
          "LoRA on the decoder linears); unset it or retrain without it",
          file, key, j[key].dump());
    }
  }

  AdapterConfig o;
  o.type = "lora";
  if (!j.contains("r") || !j["r"].is_number_integer() || j["r"].get<int64_t>() < 1) {
    user_error("{}: key \"r\" must be a positive integer, got {}", file,
               j.contains("r") ? j["r"].dump() : std::string("nothing"));
  }
  o.rank = j["r"].get<int64_t>();
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number()) {
    user_error("{}: key \"lora_alpha\" must be a number, got {}", file,
               j.contains("lora_alpha") ? j["lora_alpha"].dump() : std::string("nothing"));
  }
  o.alpha = j["lora_alpha"].get<double>();
  const json dropout = j.value("lora_dropout", json(0.0));
  if (!dropout.is_number() || dropout.get<double>() < 0 || dropout.get<double>() >= 1) {
    user_error("{}: key \"lora_dropout\" must be a number in [0, 1), got {}", file, dropout.dump());
  }
  o.dropout = dropout.get<double>();
  const json rslora = j.value("use_rslora", json(false));
  if (!rslora.is_boolean()) {
    user_error("{}: key \"use_rslora\" must be true or false, got {}", file, rslora.dump());
  }
  o.use_rslora = rslora.get<bool>();

  const auto& names = model::llama_linear_names();
  const json targets = j.value("target_modules", json());
  o.target_modules.clear();
  if (targets.is_string() && targets.get<std::string>() == "all-linear") {
    // PEFT's shorthand: every linear layer except the output layer.
    o.target_modules.assign(names.begin(), names.end());
  } else if (targets.is_array() && !targets.empty()) {
    for (const auto& t : targets) {
      if (!t.is_string() ||
          std::find(names.begin(), names.end(), t.get<std::string>()) == names.end()) {
        user_error(
            "{}: key \"target_modules\" holds {}, which is not a LLaMA linear layer; "
            "valid names: {}",
            file, t.dump(), fmt::join(names, ", "));
      }
      o.target_modules.push_back(t.get<std::string>());
    }
  } else {
    user_error(
        "{}: key \"target_modules\" must be a list of module names ({}) or "
        "\"all-linear\", got {} (regular expressions are not supported)",
        file, fmt::join(names, ", "), targets.dump());
  }
  return o;
}

// kNativeAdapterFile's metadata keys.
constexpr const char* kAdapterMetaKey = "qlora_train.adapter";            // adapter.* as JSON
constexpr const char* kPoolMetaKey = "qlora_train.pool";                  // pooling window
constexpr const char* kQuantizingMetaKey = "qlora_train.l4q_quantizing";  // "true" | "false"

// The adapter section as JSON, every key (the config table's own dump).
json adapter_config_json(const AdapterConfig& config) {
  TrainConfig whole;
  whole.adapter = config;
  return config_to_json(whole)["adapter"];
}

// Reads the adapter section and state from kNativeAdapterFile's metadata, validated by the
// config table like any config.
void read_native_meta(const std::map<std::string, std::string>& meta, const std::string& file,
                      PeftAdapter& adapter) {
  auto field = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end()) {
      user_error("{}: metadata key \"{}\" is missing; the file was not written by qlora-train",
                 file, key);
    }
    return it->second;
  };
  const json section = parse_json(field(kAdapterMetaKey), file + " metadata " + kAdapterMetaKey);
  adapter.config = config_from_json(json{{"model", {{"path", "-"}}}, {"adapter", section}},
                                    file + " metadata " + kAdapterMetaKey)
                       .adapter;
  const std::string& pool = field(kPoolMetaKey);
  if (pool.empty() || pool.size() > 6 || !std::all_of(pool.begin(), pool.end(), ::isdigit) ||
      std::stoll(pool) < 1) {
    user_error("{}: metadata key \"{}\" is \"{}\", expected a positive integer", file, kPoolMetaKey,
               pool);
  }
  adapter.pool = std::stoll(pool);
  const std::string& quantizing = field(kQuantizingMetaKey);
  if (quantizing != "true" && quantizing != "false") {
    user_error("{}: metadata key \"{}\" is \"{}\", expected true or false", file,
               kQuantizingMetaKey, quantizing);
  }
  adapter.l4q_quantizing = quantizing == "true";
}

}  // namespace

void write_peft_adapter(const std::filesystem::path& dir, const model::LlamaModel& model,
                        const std::string& base_model_name_or_path) {
  TORCH_CHECK(model.adapter_options.has_value() && model.has_adapters(),
              "write_peft_adapter: the model has no adapters");
  const adapters::AdapterOptions& options = *model.adapter_options;
  auto cpu = [](const at::Tensor& t) { return t.detach().to(at::kCPU, at::kFloat).contiguous(); };
  std::vector<std::pair<std::string, at::Tensor>> peft;
  for (auto& [name, t] : model::peft_lora_tensors(model)) peft.emplace_back(name, cpu(t));
  io::save_safetensors(dir / kPeftWeightsFile, peft, {{"format", "pt"}});
  if (options.kind != adapters::AdapterKind::kLora) {
    std::vector<std::pair<std::string, at::Tensor>> native;
    for (auto& p : model::adapter_parameters(model)) native.emplace_back(p.name, cpu(p.tensor));
    const bool quantizing =
        options.kind == adapters::AdapterKind::kL4q && model::l4q_quantizing(model);
    io::save_safetensors(dir / kNativeAdapterFile, native,
                         {{"format", "pt"},
                          {kAdapterMetaKey, adapter_config_json(options.config).dump()},
                          {kPoolMetaKey, std::to_string(options.pool)},
                          {kQuantizingMetaKey, quantizing ? "true" : "false"}});
  }
  io::write_file_atomically(dir / kPeftConfigFile,
                            peft_config_json(options, base_model_name_or_path).dump(2));
}

PeftAdapter read_peft_adapter(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) {
    user_error("{}: no such PEFT adapter folder (expected a folder with {} and {})", dir.string(),
               kPeftConfigFile, kPeftWeightsFile);
  }
  // A folder we wrote (final/) carries a manifest: verify it before trusting the tensors. A
  // PEFT folder from elsewhere has none and is read as it is.
  if (std::filesystem::exists(dir / io::kManifestFile)) {
    if (const std::string problem = io::folder_manifest_problem(dir, io::kDoneFile);
        !problem.empty())
      user_error(
          "{}: {}; the adapter folder is damaged: use a checkpoint of the run instead "
          "(qlora-train train --resume rewrites final/ from the last checkpoint)",
          dir.string(), problem);
  }
  const auto config_path = dir / kPeftConfigFile;
  PeftAdapter adapter;
  const json j = read_json_file(config_path, fmt::format("; a PEFT adapter folder holds {} and {}",
                                                         kPeftConfigFile, kPeftWeightsFile));
  adapter.config = lora_config_from_json(j, config_path.string());
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()) {
    adapter.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
  }
  const auto native_path = dir / kNativeAdapterFile;
  const bool native = std::filesystem::exists(native_path);
  const auto weights_path = native ? native_path : dir / kPeftWeightsFile;
  if (!std::filesystem::exists(weights_path)) {
    user_error(
        "{}: missing; a PEFT adapter folder holds {} (adapter_model.bin is not read: "
        "convert it to safetensors)",
        weights_path.string(), kPeftWeightsFile);
  }
  auto file = io::SafetensorsFile::open(weights_path);
  if (native) read_native_meta(file.metadata(), native_path.string(), adapter);
  for (const auto& info : file.tensors()) {
    auto t = file.tensor(info.name);
    if (!at::isFloatingType(t.scalar_type())) {
      user_error("{}: tensor \"{}\" has dtype {}; adapter weights must be F32, BF16 or F16",
                 weights_path.string(), info.name, info.dtype);
    }
    adapter.tensors.emplace(info.name, t);
  }
  return adapter;
}

void load_peft_adapter(model::LlamaModel& model, const std::filesystem::path& dir,
                       const quant::WeightFormat& format, const std::string& expected_type) {
  auto adapter = read_peft_adapter(dir);
  if (!expected_type.empty() && adapter.config.type != expected_type) {
    user_error(
        "{}: the adapter is of type {} but adapter.type is {}; a checkpoint continues only as "
        "the adapter type it was trained as (set adapter.type to {} or start a new run)",
        dir.string(), adapter.config.type, expected_type, adapter.config.type);
  }
  const adapters::AdapterOptions options = adapters::adapter_options(adapter.config, format);
  if (options.pool != adapter.pool) {
    user_error(
        "{}: the {} adapter was trained with a pooling window of {} inputs, but this config "
        "gives {} (for qa-blora: quantization.group_size); use the quantization it was trained "
        "with",
        dir.string(), adapter.config.type, adapter.pool, options.pool);
  }
  const bool native = std::filesystem::exists(dir / kNativeAdapterFile);
  model::attach_adapters(model, options, adapter.tensors,
                         (dir / (native ? kNativeAdapterFile : kPeftWeightsFile)).string(),
                         adapter.l4q_quantizing);
}

}  // namespace qlt::exporter
