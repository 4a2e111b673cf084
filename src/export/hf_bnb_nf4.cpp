#include "export/hf_bnb_nf4.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "core/errors.h"
#include "core/json_reader.h"
#include "io/atomic_dir.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/llama_config.h"
#include "model/llama_weights.h"
#include "quant/bnb_layout.h"

namespace qlt::exporter {
namespace {

namespace fs = std::filesystem;

// Files of a Hugging Face model directory that travel with the weights unchanged.
constexpr const char* kCopiedFiles[] = {
    "tokenizer.model",         "tokenizer.json",    "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "generation_config.json",
};

int64_t tensor_bytes(const io::TensorInfo& info) {
  return static_cast<int64_t>(info.end - info.begin);
}

}  // namespace

BnbNf4ExportSummary write_bnb_nf4_model(const fs::path& model_dir, const fs::path& out_dir,
                                        const BnbNf4ExportOptions& options) {
  quant::check_nf4_block_size(options.nf4.block_size, "quantization.block_size");
  const model::LlamaConfig config = model::read_llama_config(model_dir);
  auto checkpoint = io::SafetensorsCheckpoint::open(model_dir);
  model::check_llama_tensors(checkpoint, config);
  const auto expected = model::expected_llama_tensors(config);
  for (const auto& e : expected) {
    if (quant::claims_bnb_4bit_layout(checkpoint, e.name)) {
      user_error(
          "{}: {} is already in bitsandbytes' 4-bit layout; `quantize` needs a full-precision "
          "model (a 4-bit directory loads as it is: point model.path at it)",
          checkpoint.file_of(e.name).string(), e.name);
    }
  }
  nlohmann::json config_json =
      read_json_file(model_dir / "config.json", " (is model.path a Hugging Face model directory?)");
  if (config_json.contains("quantization_config")) {
    user_error(
        "{}: the model already has a quantization_config; `quantize` needs a full-precision model",
        (model_dir / "config.json").string());
  }

  BnbNf4ExportSummary summary;
  for (const auto& name : checkpoint.names())
    summary.input_bytes += tensor_bytes(checkpoint.info(name));

  io::AtomicDir dir(out_dir, options.overwrite);
  // Every output tensor: NF4 entries are small CPU tensors; the others are zero-copy views of
  // the mapped input files, so memory stays near the quantized model plus one weight.
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& e : expected) {
    at::Tensor stored = checkpoint.tensor(e.name);
    if (!model::is_decoder_linear(e.name)) {
      summary.other_bytes += tensor_bytes(checkpoint.info(e.name));
      tensors.emplace_back(e.name, stored);
      continue;
    }
    if (!stored.is_floating_point()) {
      user_error("{}: tensor {} has dtype {}, expected a floating-point weight to quantize",
                 checkpoint.file_of(e.name).string(), e.name, checkpoint.info(e.name).dtype);
    }
    const quant::Nf4Tensor q = quant::quantize_nf4(stored.to(options.device), options.nf4, e.name);
    summary.quantized_weights += 1;
    summary.quantized_params += q.numel();
    summary.quantized_bytes += q.storage_bytes();
    // The quant state records the dtype the weight had (dequantize returns it).
    for (auto& entry :
         quant::bnb_nf4_tensors(e.name, q, quant::bnb_dtype_name(stored.scalar_type())))
      tensors.push_back(std::move(entry));
  }
  io::save_safetensors(dir.path() / "model.safetensors", tensors, {{"format", "pt"}});

  config_json["quantization_config"] =
      quant::bnb_quantization_config(options.nf4, options.compute_dtype);
  io::write_file_atomically(dir.path() / "config.json", config_json.dump(2) + "\n");
  for (const char* file : kCopiedFiles) {
    if (fs::exists(model_dir / file)) fs::copy_file(model_dir / file, dir.path() / file);
  }
  if (!fs::exists(model_dir / "tokenizer.model")) {
    spdlog::warn("{} has no tokenizer.model; the quantized model has no tokenizer either",
                 model_dir.string());
  }
  dir.commit();
  return summary;
}

}  // namespace qlt::exporter
