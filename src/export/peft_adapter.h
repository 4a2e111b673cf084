// Adapters in PEFT's own folder layout, so PEFT (PeftModel.from_pretrained), vLLM and
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

#include "model/llama.h"

namespace qlt::exporter {

inline constexpr const char* kPeftWeightsFile = "adapter_model.safetensors";
inline constexpr const char* kPeftConfigFile = "adapter_config.json";

// The native adapter of the kinds PEFT cannot hold as they are trained (blora, qa-blora, l4q):
// their own tensors (model::adapter_parameters), with the adapter section and state in the
// safetensors metadata. A folder holding it is read through it; PEFT ignores the file.
inline constexpr const char* kNativeAdapterFile = "qlora_adapter.safetensors";

// Writes the model's attached adapters into the existing folder `dir` (the caller makes it
// atomic with io::AtomicDir): adapter_model.safetensors + adapter_config.json as the standard
// PEFT LoRA they equal (model::peft_lora_tensors; for l4q the LoRA without its quantizer), and
// for every kind but lora also kNativeAdapterFile.
void write_peft_adapter(const std::filesystem::path& dir, const model::LlamaModel& model,
                        const std::string& base_model_name_or_path);

struct PeftAdapter {
  AdapterConfig config;                 // adapter.* as trained (type "lora" for a PEFT folder)
  int64_t pool = 1;                     // native: the pooling window it was trained with
  bool l4q_quantizing = true;           // native l4q: whether the quantizer was on
  std::string base_model_name_or_path;  // "" when null or absent
  std::map<std::string, at::Tensor> tensors;  // name -> CPU tensor as stored
};

// Reads and checks an adapter folder: kNativeAdapterFile when present, else the PEFT LoRA.
// UserError naming the file and key for: a missing file, malformed JSON or metadata, peft_type
// other than "LORA", task_type other than "CAUSAL_LM" (or null), a bad r / lora_alpha /
// lora_dropout, a target module that is not a LLaMA linear (a regex string is refused;
// "all-linear" means all seven), and PEFT features this program does not implement: bias other
// than "none", use_dora, lora_bias, use_qalora, fan_in_fan_out, layers_to_transform,
// layer_replication, rank_pattern, alpha_pattern, modules_to_save, exclude_modules,
// target_parameters, trainable_token_indices, alora_invocation_tokens, arrow_config. Non-float
// tensors are refused too.
PeftAdapter read_peft_adapter(const std::filesystem::path& dir);

// read_peft_adapter, converted with the frozen weights' `format` (adapters::adapter_options),
// then model::attach_adapters: missing, unexpected or wrongly shaped tensors give one UserError
// naming the file and every key at fault. `expected_type` (when not empty) is the adapter.type
// the caller needs (a resumed run): another type is a UserError saying both.
void load_peft_adapter(model::LlamaModel& model, const std::filesystem::path& dir,
                       const quant::WeightFormat& format, const std::string& expected_type = "");

}  // namespace qlt::exporter
