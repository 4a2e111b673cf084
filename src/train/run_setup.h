// What `train`, `eval` and `generate` set up the same way (DESIGN.md §3): the config converted
// once into the typed options of each layer, then tokenizer, model and adapter.
#pragma once

#include <ATen/ATen.h>

#include <filesystem>
#include <optional>
#include <string>

#include "adapters/adapter.h"
#include "core/config.h"
#include "model/llama.h"
#include "quant/weight_format.h"
#include "tokenizer/tokenizer.h"

namespace qlt::train {

// The typed options that every command derives from the config.
struct RunOptions {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  quant::WeightFormat format;        // frozen decoder linears (quantization.*)
  adapters::AdapterOptions adapter;  // adapter.*, checked against `format`
};

// THE conversion: applies training.threads, resolves training.device and model.compute_dtype,
// converts quantization.* (quant::weight_format) and adapter.* (adapters::adapter_options).
// Every cross-key error is a UserError naming the key; nothing is read from disk.
RunOptions run_options(const TrainConfig& cfg);

// Where the adapter comes from.
struct AdapterSource {
  std::filesystem::path folder;  // an adapter folder (PEFT or checkpoint adapter/) when set
  std::string expected_type;     // with folder: the adapter.type it must have ("" = any)
  std::optional<int64_t> seed;   // else, when set: fresh adapters of options.adapter, seeded
};

struct LoadedModel {
  tokenizer::Tokenizer tokenizer;
  model::LlamaModel model;
};

// The tokenizer first (it says what is wrong with a model.path that is not a model), then the
// model in the options' dtype, device and format; UserError when the tokenizer has more tokens
// than the embedding has rows. Then the adapter from `source` (none when it names neither).
LoadedModel load_model(const TrainConfig& cfg, const RunOptions& options,
                       const AdapterSource& source);

// "LoRA r=8 alpha=16 on q_proj,v_proj" / "Q-BLoRA λ=2 r=8 (rank 16) ..." for logs.
std::string describe_adapter(const adapters::AdapterOptions& options);

}  // namespace qlt::train
