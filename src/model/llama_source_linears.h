// The full-precision decoder linears of a checkpoint, read one at a time: what
// `export --merge-into original` adds the adapter's update to, without loading a second copy of
// the model (a 7B model in fp32 is 28 GB; one linear of it is at most 180 MB).
#pragma once

#include <ATen/ATen.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/llama_config.h"

namespace qlt::model {

class SourceLinears {
 public:
  // `model_path` as load_llama takes it (a Hugging Face folder or a GGUF file), already loaded
  // once (its names, shapes and types were checked then); `config` is its config.
  static SourceLinears open(const std::filesystem::path& model_path, const LlamaConfig& config);

  // Linear `linear` (llama_linear_names() index) of decoder layer `layer`: [out, in] fp32 on the
  // CPU, rows in Hugging Face order (a GGUF file's q/k permutation undone), decoded from the
  // file's type (F32, F16, BF16; quantized ggml types decode too, but are not originals).
  at::Tensor read(int64_t layer, int linear) const;

 private:
  LlamaConfig config_;
  std::optional<io::SafetensorsCheckpoint> hf_;
  std::shared_ptr<const io::GgufFile> gguf_;
};

}  // namespace qlt::model
