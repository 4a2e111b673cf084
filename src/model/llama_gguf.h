// A LLaMA model from a GGUF file (llama.cpp's format): architecture from the llama.* metadata,
// tensors mapped from llama.cpp's names back to Hugging Face's layout (METHODS.md §8).
//
// llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute) reorders the rows of q_proj
// and k_proj from Hugging Face's rotate-half RoPE order to the interleaved order of ggml's rope:
// per head of d rows, GGUF row 2j + t holds HF row t*d/2 + j (t in {0, 1}, j < d/2). We undo it
// on load, so the model computes exactly what transformers computes on the original.
#pragma once

#include <string>

#include "io/gguf.h"
#include "model/llama_config.h"
#include "model/llama_weights.h"

namespace qlt::model {

// The architecture of a GGUF file. general.architecture other than "llama" is refused, naming
// it; a missing or mistyped llama.* key is a UserError naming the key and the file.
LlamaConfig llama_config_from_gguf(const io::GgufFile& file);

// The Hugging Face name of a GGUF tensor name ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"); empty when it is not a LLaMA tensor.
std::string hf_name_of_gguf_tensor(const std::string& gguf_name);
// The GGUF name of a Hugging Face tensor name (the inverse; empty when unknown).
std::string gguf_name_of_hf_tensor(const std::string& hf_name);

// Row order that undoes llama.cpp's q/k permutation: HF row r is GGUF row rows[r].
// [n_heads * head_dim] int64.
at::Tensor gguf_unpermute_rows(int64_t n_heads, int64_t head_dim);

// Checks every tensor's name, shape and type (missing, unexpected, wrongly shaped: one
// UserError listing them), then reads them: linears stored in `options.format` (a Q4_1
// linear under INT4 group 32 is used as stored, byte for byte; any other type is decoded to
// fp32 by quant::ggml_dequantize and then stored), embeddings and lm_head in options.dtype,
// norms in fp32. The vocabulary size must equal the embedding's rows.
LlamaWeights load_llama_weights_gguf(const io::GgufFile& file, const LlamaConfig& config,
                                     const LoadOptions& options);

}  // namespace qlt::model
