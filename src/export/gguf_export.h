// Writes a LLaMA model (merged: no adapters attached) as one GGUF file that llama.cpp, ollama
// and LM Studio run with nothing else: llama.* hyperparameters, the vocabulary and chat
// template, and every tensor under llama.cpp's name (METHODS.md §8), q/k rows in llama.cpp's
// interleaved RoPE order (the inverse of model/llama_gguf.h's gguf_unpermute_rows, as
// convert_hf_to_gguf.py's LlamaModel.permute). Written atomically (io::GgufWriter::write).
//
// Tensor types (GgufTensorReport::how says which rule applied to each tensor):
//  - decoder linears (attn_q/k/v/output, ffn_gate/up/down) take the file type's type:
//    F16, BF16, Q8_0, Q4_0 or Q4_1.
//      * "as stored": an INT4 group-32 weight under kQ4_1 is written as its own blocks (they
//        ARE Q4_1 bytes; q/k block rows re-permuted), with no re-quantization, so a QA-BLoRA
//        or L4Q model merged into INT4 g32, or a Q4_1 GGUF loaded as INT4 g32, is written
//        losslessly and byte for byte.
//      * otherwise the weight is dequantized to fp32 and encoded by quant::ggml_quantize
//        (byte-identical to the `gguf` package and llama.cpp's converter); the report gives
//        the error of each such tensor, "exact" when the encoding holds it bit for bit.
//      * a row length that is not a multiple of 32 falls back to F16 for the quantized types,
//        as llama.cpp's converter does.
//  - token_embd and output (lm_head; absent when the embeddings are tied, as llama.cpp
//    expects) are what training kept in high precision, so they are written in the smallest
//    type that holds their values exactly ("exact"): for quantized file types the first of
//    Q4_0, Q4_1, Q8_0, F16, BF16, F32 whose round trip is bit-identical (a Q8_0 embedding read
//    from a GGUF file stays Q8_0), for F16 / BF16 files the first of the file's own type, the
//    other 16-bit type, F32. With fp32 compute that is normally F32; with bf16 compute BF16.
//    (llama.cpp's own choice, Q6_K / Q8_0 / the file type, would round them.)
//  - norms (attn_norm, ffn_norm, output_norm) are always F32, llama.cpp's convention for 1-D
//    tensors (they are fp32 in the model: exact).
//  - rope_freqs.weight (F32 [head_dim / 2]), for llama3 RoPE scaling: the per-frequency
//    divisors llama.cpp applies, computed as convert_hf_to_gguf.py's generate_extra_tensors.
//
// Metadata, in this order: general.architecture "llama", general.type "model", general.name,
// llama.block_count, context_length, embedding_length, feed_forward_length,
// attention.head_count, attention.head_count_kv, rope.freq_base,
// attention.layer_norm_rms_epsilon, (attention.key_length / value_length when head_dim is not
// hidden / heads), general.file_type (llama.cpp's LLAMA_FTYPE), llama.vocab_size,
// llama.rope.dimension_count, general.quantization_version 2, then the vocabulary:
//  - a vocabulary read from a GGUF file (tokenizer.source() is one): its tokenizer.* keys
//    copied verbatim, in file order;
//  - SentencePiece (tokenizer.model): tokenizer.ggml.model "llama", pre "default", tokens,
//    scores, token_type as convert_hf_to_gguf.py's _create_vocab_sentencepiece computes them
//    (the sentencepiece library's pieces, scores and types; added_tokens.json and
//    tokenizer_config.json's added_tokens_decoder as user-defined / control tokens; ids up to
//    the model's vocab_size without a piece as "[PAD<i>]", unused);
//  - byte-level BPE (tokenizer.json): tokenizer.ggml.model "gpt2", pre named from the
//    tokenizer.json pre-tokenizer (Llama 3's split -> "llama-bpe", Digits + ByteLevel ->
//    "smollm", ByteLevel alone -> "gpt-2"; another is a UserError: llama.cpp would split the
//    text differently), tokens by id, token_type (added tokens that are special, or look like
//    "<|...|>", control; other added tokens user-defined; missing ids "[PAD<i>]" unused),
//    merges "a b";
//  then (not for a copied GGUF vocabulary) bos / eos / unknown / padding ids where the
//  tokenizer has them, add_bos_token / add_eos_token (Tokenizer::add_*_by_default),
//  tokenizer.ggml.add_space_prefix when tokenizer_config.json sets add_prefix_space, and
//  tokenizer.chat_template when the model has one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "export/linear_source.h"
#include "io/ggml_types.h"

namespace qlt::model {
struct LlamaModel;
}
namespace qlt::tokenizer {
class Tokenizer;
}

namespace qlt::exporter {

// The file types of the gguf-* export formats. The numbers llama.cpp writes as
// general.file_type (llama_ftype): F16 1, BF16 32, Q8_0 7, Q4_0 2, Q4_1 3.
enum class GgufFileType { kF16, kBF16, kQ8_0, kQ4_0, kQ4_1 };

std::string_view gguf_file_type_name(GgufFileType type);  // "f16", "bf16", "q8_0", ...
std::optional<GgufFileType> parse_gguf_file_type(std::string_view name);  // the inverse
uint32_t gguf_llama_ftype(GgufFileType type);                             // general.file_type
io::GgmlType gguf_linear_type(GgufFileType type);  // the decoder linears' type

struct GgufExportOptions {
  // general.name. Empty: the source GGUF's general.name, else the source's file or folder
  // name, else "qlora-train model".
  std::string model_name;
  // model.path the model was loaded from (a folder or a GGUF file): where general.name comes
  // from when model_name is empty. The vocabulary is read from tokenizer.source() and the
  // folder beside it.
  std::filesystem::path source;
  // The decoder linears to write, made one at a time as the file is written (a merge:
  // exporter::merged_linears). Empty: the model's own (it must then have no adapters).
  LinearSource linears;
};

struct GgufTensorReport {
  std::string name;  // GGUF name ("blk.3.attn_q.weight")
  io::GgmlType type = io::GgmlType::F32;
  std::vector<int64_t> shape;  // PyTorch order ([out, in])
  uint64_t bytes = 0;          // tensor data
  // "as stored" (INT4 g32 blocks as they are), "exact" (encoded; bit-identical when read
  // back), "re-quantized" (encoded with an error), "generated" (rope_freqs).
  std::string how;
  // For encoded tensors, against the model's values (fp32): max |w' - w| and
  // ||w' - w||_F / ||w||_F (0 when exact).
  double max_abs_error = 0;
  double relative_error = 0;
};

struct GgufExportReport {
  std::filesystem::path path;
  GgufFileType file_type = GgufFileType::kQ4_1;
  uint64_t file_bytes = 0;
  std::vector<GgufTensorReport> tensors;       // in file order
  std::map<std::string, int64_t> type_counts;  // "Q4_1" -> tensors of that type
  std::map<std::string, uint64_t> type_bytes;  // "Q4_1" -> their bytes
  int64_t as_stored = 0, exact = 0, requantized = 0;
  // Over the re-quantized tensors: the largest max |w' - w| and relative error, and the
  // relative error of all of them together (sqrt(Σ ||Δ||²) / sqrt(Σ ||w||²)).
  double max_abs_error = 0;
  double max_relative_error = 0;
  double overall_relative_error = 0;
  std::string vocabulary;  // where the vocabulary came from, for the log
};

// Writes `model` (its decoder linears in any quant::StoredWeight format; on any device, moved
// to the CPU one tensor at a time) with `tokenizer`'s vocabulary to `out` as `type`.
// Streams: the header first, then each tensor made, written and dropped in turn, so at most one
// tensor is held beside the model (the decoder linears come from options.linears).
// UserError (exit 2, nothing written) when the model still has adapters attached and no
// options.linears is given (merge them first), when the vocabulary is larger than the model's, when
// the tokenizer's pre-tokenizer has no llama.cpp name, or for a bad path; RuntimeError for a full
// disk or an I/O error.
GgufExportReport write_gguf_model(const std::filesystem::path& out, const model::LlamaModel& model,
                                  const tokenizer::Tokenizer& tokenizer, GgufFileType type,
                                  const GgufExportOptions& options = {});

// One line per type and the error summary, for the log / the export command's output.
std::string describe(const GgufExportReport& report);

}  // namespace qlt::exporter
