// Writes a Hugging Face LLaMA directory in bitsandbytes' 4-bit NF4 safetensors layout
// (METHODS.md §3): what `transformers` saves for a model loaded with
// BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"), so transformers +
// bitsandbytes load it as is, and so does `qlora-train` (model/llama_weights.h).
//
// Decoder linear weights (q/k/v/o/gate/up/down_proj) are quantized from their stored dtype;
// embeddings, norms and lm_head are copied unchanged (bitsandbytes keeps them in float).
// config.json gains "quantization_config"; the tokenizer and generation files are copied.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "quant/nf4.h"

namespace qlt::exporter {

struct BnbNf4ExportOptions {
  quant::Nf4Options nf4;                  // block size, double quant
  std::string compute_dtype = "float32";  // bnb_4bit_compute_dtype in config.json
  at::Device device = at::kCPU;           // where quantize_nf4 runs (CUDA: the kernels)
  bool overwrite = false;                 // replace an existing output folder (atomically)
};

struct BnbNf4ExportSummary {
  int64_t quantized_weights = 0;  // decoder linear weights written as NF4
  int64_t quantized_params = 0;   // their parameter count
  int64_t quantized_bytes = 0;    // their NF4 storage (packed + scales), in bytes
  int64_t other_bytes = 0;        // every other tensor (embeddings, norms, lm_head)
  int64_t input_bytes = 0;        // every tensor of the input checkpoint
  double bits_per_param() const {
    return quantized_params ? 8.0 * static_cast<double>(quantized_bytes) / quantized_params : 0;
  }
};

// Reads the Hugging Face LLaMA directory `model_dir` (full precision; a directory already in
// a 4-bit layout is refused) and writes `out_dir` atomically: nothing is left behind on
// failure and an existing folder is never replaced unless options.overwrite. UserError for
// bad input (tensor names, shapes, dtypes, paths), naming the file and tensor.
BnbNf4ExportSummary write_bnb_nf4_model(const std::filesystem::path& model_dir,
                                        const std::filesystem::path& out_dir,
                                        const BnbNf4ExportOptions& options);

}  // namespace qlt::exporter
