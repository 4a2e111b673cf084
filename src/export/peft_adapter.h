// LoRA adapters in PEFT's own folder layout, so PEFT (PeftModel.from_pretrained), vLLM and
// others load them (DESIGN.md §5), checked against what peft 0.21.2 writes:
//   adapter_model.safetensors  fp32 lora_A / lora_B by PEFT key
//                              ("base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight"),
//                              metadata {"format": "pt"}
//   adapter_config.json        LoraConfig fields (peft_type "LORA", task_type "CAUSAL_LM", r,
//                              lora_alpha, lora_dropout, target_modules, use_rslora, ...)
#pragma once

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <string>

#include "adapters/lora.h"
#include "model/llama.h"

namespace qlt::exporter {

inline constexpr const char* kPeftWeightsFile = "adapter_model.safetensors";
inline constexpr const char* kPeftConfigFile = "adapter_config.json";

// Writes the model's attached adapters (lora_parameters) and a PEFT adapter_config.json
// describing `options` into the existing folder `dir` (the caller makes it atomic with
// io::AtomicDir). The adapters must be the ones `options` describe (internal check).
void write_peft_adapter(const std::filesystem::path& dir, const model::LlamaModel& model,
                        const adapters::LoraOptions& options,
                        const std::string& base_model_name_or_path);

struct PeftAdapter {
  adapters::LoraOptions options;        // r, lora_alpha, lora_dropout, use_rslora, target_modules
  std::string base_model_name_or_path;  // "" when null or absent
  std::map<std::string, at::Tensor> tensors;  // PEFT key -> CPU tensor as stored
};

// Reads and checks a PEFT LoRA adapter folder. UserError naming the file and key for: a
// missing file, malformed JSON, peft_type other than "LORA", task_type other than
// "CAUSAL_LM" (or null), a bad r / lora_alpha / lora_dropout, a target module that is not
// a LLaMA linear (a regex string is refused; "all-linear" means all seven), and PEFT features
// this program does not implement: bias other than "none", use_dora, lora_bias, use_qalora,
// fan_in_fan_out, layers_to_transform, layer_replication, rank_pattern, alpha_pattern,
// modules_to_save, exclude_modules, target_parameters, trainable_token_indices,
// alora_invocation_tokens, arrow_config. Non-float tensors are refused too.
PeftAdapter read_peft_adapter(const std::filesystem::path& dir);

// read_peft_adapter + model::attach_lora: missing, unexpected or wrongly shaped tensors (a
// rank other than the config's r) give one UserError naming adapter_model.safetensors and
// every key at fault.
void load_peft_adapter(model::LlamaModel& model, const std::filesystem::path& dir);

}  // namespace qlt::exporter
