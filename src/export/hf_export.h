// A merged model as a Hugging Face LLaMA folder in bf16 (export format "hf-bf16"; "hf-nf4" is the
// same folder with the decoder linears in bitsandbytes' NF4 layout): what
// transformers' save_pretrained writes for LlamaForCausalLM in torch.bfloat16, so
// transformers, vLLM and qlora-train load it as it is:
//   model.safetensors                    one shard, or
//   model-0000k-of-0000n.safetensors     shards of at most max_shard_bytes (huggingface_hub's
//   + model.safetensors.index.json       split: tensors in order, a new shard when the next
//                                        one would tip it over; a larger tensor gets its own)
//   config.json                          the source's (HF folder) or one made from the model's
//                                        config (GGUF source); torch_dtype / dtype bfloat16,
//                                        quantization_config removed
//   tokenizer.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json,
//   added_tokens.json, generation_config.json   copied from a HF source when present; made
//                                        from a GGUF source's vocabulary
//                                        (export/hf_tokenizer_files.h)
// Streams: each tensor is made (a decoder linear merged: ExportInput::linears), written and
// dropped in turn, into shards written by io::SafetensorsStreamWriter.
// Tensor names are Hugging Face's (model.layers.{i}.self_attn.q_proj.weight, ...; no
// lm_head.weight when the embeddings are tied, as save_pretrained), every tensor in bf16
// (round to nearest even from the model's dtype; quantized weights are dequantized first).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "export/export_format.h"
#include "export/linear_source.h"
#include "model/llama.h"

namespace qlt::exporter {

// Files of a Hugging Face model folder that travel with the weights unchanged.
inline constexpr const char* kHfTokenizerFiles[] = {
    "tokenizer.model",         "tokenizer.json",    "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "generation_config.json",
};

// How the decoder's linear weights are written: bf16 tensors, or bitsandbytes' NF4 layout
// (the weights must then be stored as NF4: the row merges into quant::Nf4Options).
enum class HfLinears { kBf16, kBnbNf4 };

// One tensor of the written state dict: its HF name, shape, the bytes it takes in the file, the
// names of its safetensors entries, and how to make them on the CPU (made only when the writer
// reaches it, and dropped once written: one tensor in memory at a time): one bf16 tensor, or a
// bnb NF4 weight with its quant state (quant::bnb_nf4_tensors).
struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  int64_t file_bytes = 0;
  std::vector<std::string> entry_names;
  std::function<std::vector<std::pair<std::string, at::Tensor>>()> entries;
  int64_t bytes() const { return file_bytes; }
};

// The model's tensors in Hugging Face's names and file order (model::expected_llama_tensors);
// everything but the decoder linears in bf16, those from `source` (made when the entries are;
// empty: the model's own, which must then have no adapters) as `linears_as` says.
std::vector<HfTensor> hf_state_dict(const model::LlamaModel& model,
                                    HfLinears linears_as = HfLinears::kBf16,
                                    const LinearSource& source = {});

// huggingface_hub's split_torch_state_dict_into_shards: indices into `bytes`, per shard.
std::vector<std::vector<size_t>> plan_shards(const std::vector<int64_t>& bytes,
                                             int64_t max_shard_bytes);

// "5GB" (10^9), "500MB", "2GiB" (2^30), "100KB", "123" (bytes): transformers'
// convert_file_size_to_int. UserError naming `what` for anything else or a size < 1.
int64_t parse_byte_size(std::string_view text, std::string_view what);

// config.json for a model with no Hugging Face config (a GGUF source): LlamaForCausalLM with
// the model's architecture; model::llama_config_from_json reads it back to the same config.
nlohmann::json hf_llama_config_json(const model::LlamaConfig& config);

// The ExportWriter of "hf-bf16": input.model must be merged (no adapters attached).
ExportSummary write_hf_bf16(const ExportInput& input, const std::filesystem::path& dir);

// The ExportWriter of "hf-nf4": the merged model's linears, re-quantized to NF4 by the merge
// (quantization.block_size / double_quant), in bitsandbytes' layout (METHODS.md §3), the rest
// in bf16, and config.json with transformers' quantization_config (compute dtype bfloat16):
// what save_pretrained writes for a load_in_4bit model, so transformers + bitsandbytes and
// qlora-train load it as stored.
ExportSummary write_hf_nf4(const ExportInput& input, const std::filesystem::path& dir);

}  // namespace qlt::exporter
