#include "model/llama_source_linears.h"

#include <fmt/format.h>

#include "model/llama.h"
#include "model/llama_gguf.h"
#include "quant/ggml_dequantize.h"

namespace qlt::model {

SourceLinears SourceLinears::open(const std::filesystem::path& model_path,
                                  const LlamaConfig& config) {
  SourceLinears s;
  s.config_ = config;
  if (io::is_gguf_file(model_path)) {
    s.gguf_ = std::make_shared<const io::GgufFile>(io::GgufFile::open(model_path));
  } else {
    s.hf_.emplace(io::SafetensorsCheckpoint::open(model_path));
  }
  return s;
}

at::Tensor SourceLinears::read(int64_t layer, int linear) const {
  const std::string hf_name =
      fmt::format("model.layers.{}.{}{}.weight", layer, linear < 4 ? "self_attn." : "mlp.",
                  llama_linear_names().at(static_cast<size_t>(linear)));
  // A copy in fp32, after which the file's pages of the tensor are dropped (a 7B source would
  // otherwise stay resident, page by page, as the export reads it).
  if (hf_) {
    at::Tensor w = hf_->tensor(hf_name).to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
    hf_->release(hf_name);
    return w;
  }
  const io::GgufTensorInfo& info = gguf_->tensor(gguf_name_of_hf_tensor(hf_name));
  at::Tensor w =
      quant::ggml_dequantize(info.type, gguf_->tensor_bytes(info), info.numel(), info.name)
          .view(info.torch_shape())
          .clone();
  gguf_->release(info);
  // llama.cpp's converter permuted q and k rows for its rope (model/llama_gguf.h).
  const int64_t heads = linear == 0   ? config_.num_attention_heads
                        : linear == 1 ? config_.num_key_value_heads
                                      : 0;
  if (heads > 0) w = w.index_select(0, gguf_unpermute_rows(heads, config_.head_dim));
  return w;
}

}  // namespace qlt::model
