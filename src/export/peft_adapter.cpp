#include "export/peft_adapter.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

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
json peft_config_json(const adapters::LoraOptions& options, const std::string& base_model) {
  std::vector<std::string> targets;
  for (const auto& t : options.target_modules) {
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
  j["lora_alpha"] = number_json(options.alpha);
  j["lora_bias"] = false;
  j["lora_dropout"] = options.dropout;
  j["lora_ga_config"] = nullptr;
  j["megatron_config"] = nullptr;
  j["megatron_core"] = "megatron.core";
  j["modules_to_save"] = nullptr;
  j["monteclora_config"] = nullptr;
  j["peft_type"] = "LORA";
  j["qalora_group_size"] = 16;
  j["r"] = options.rank;
  j["rank_pattern"] = json::object();
  j["revision"] = nullptr;
  j["target_modules"] = targets;
  j["target_parameters"] = nullptr;
  j["task_type"] = "CAUSAL_LM";
  j["trainable_token_indices"] = nullptr;
  j["use_bdlora"] = nullptr;
  j["use_dora"] = false;
  j["use_qalora"] = false;
  j["use_rslora"] = options.use_rslora;
  j["velora_config"] = nullptr;
  return j;
}

// A feature PEFT supports and we do not: the key must be absent, null, false, or empty.
bool is_unset(const json& j) {
  return j.is_null() || (j.is_boolean() && !j.get<bool>()) ||
         ((j.is_object() || j.is_array() || j.is_string()) && j.empty());
}

adapters::LoraOptions lora_options_from_json(const json& j, const std::string& file) {
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

  adapters::LoraOptions o;
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
  adapters::check_lora_options(o);
  return o;
}

}  // namespace

void write_peft_adapter(const std::filesystem::path& dir, const model::LlamaModel& model,
                        const adapters::LoraOptions& options,
                        const std::string& base_model_name_or_path) {
  auto params = model::lora_parameters(model);
  const auto expected = model::expected_lora_tensors(model, options);
  TORCH_CHECK(params.size() == expected.size(), "write_peft_adapter: the model has ", params.size(),
              " adapter tensors, the options describe ", expected.size());
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t i = 0; i < params.size(); ++i) {
    TORCH_CHECK(params[i].first == expected[i].name &&
                    params[i].second.sizes() == at::IntArrayRef(expected[i].shape),
                "write_peft_adapter: adapter ", params[i].first, " ", params[i].second.sizes(),
                " does not match the options (", expected[i].name, ")");
    tensors.emplace_back(params[i].first,
                         params[i].second.detach().to(at::kCPU, at::kFloat).contiguous());
  }
  io::save_safetensors(dir / kPeftWeightsFile, tensors, {{"format", "pt"}});

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
  const auto weights_path = dir / kPeftWeightsFile;
  PeftAdapter adapter;
  const json j = read_json_file(config_path, fmt::format("; a PEFT adapter folder holds {} and {}",
                                                         kPeftConfigFile, kPeftWeightsFile));
  adapter.options = lora_options_from_json(j, config_path.string());
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()) {
    adapter.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
  }
  if (!std::filesystem::exists(weights_path)) {
    user_error(
        "{}: missing; a PEFT adapter folder holds {} (adapter_model.bin is not read: "
        "convert it to safetensors)",
        weights_path.string(), kPeftWeightsFile);
  }
  auto file = io::SafetensorsFile::open(weights_path);
  for (const auto& info : file.tensors()) {
    auto t = file.tensor(info.name);
    if (!at::isFloatingType(t.scalar_type())) {
      user_error("{}: tensor \"{}\" has dtype {}; LoRA weights must be F32, BF16 or F16",
                 weights_path.string(), info.name, info.dtype);
    }
    adapter.tensors.emplace(info.name, t);
  }
  return adapter;
}

void load_peft_adapter(model::LlamaModel& model, const std::filesystem::path& dir) {
  auto adapter = read_peft_adapter(dir);
  model::attach_lora(model, adapter.options, adapter.tensors, (dir / kPeftWeightsFile).string());
}

}  // namespace qlt::exporter
