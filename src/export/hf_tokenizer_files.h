// Hugging Face tokenizer files made from a GGUF file's vocabulary (tokenizer.ggml.*, read and
// checked by tokenizer/gguf_vocab.h), for the hf-* exports of a GGUF model.path: what
// transformers 4.57's AutoTokenizer.from_pretrained(dir) needs to give the ids llama.cpp gives
// on the GGUF (tokenizer.ggml.add_bos_token and the rest of the conventions included):
//
//   tokenizer.json          the `tokenizers` serialization:
//     "gpt2" (byte-level BPE): model BPE with the GGUF's tokens as vocab (ids = GGUF ids) and its
//       merges (as ["a", "b"] pairs, llama.cpp's split: at the first space after the first
//       byte; a pair listed twice keeps its first rank, as llama.cpp does), ignore_merges for
//       the Llama 3 pre-tokenizer; the pre-tokenizer of tokenizer.ggml.pre (llama.cpp's regex
//       list, llama-vocab.cpp):
//         llama3 / llama-v3 / llama-bpe   Split(llama.cpp's Llama 3 regex, Isolated) +
//                                         ByteLevel(use_regex false)
//         smollm / starcoder              Digits(individual_digits) + ByteLevel (GPT-2 regex)
//         gpt-2                           ByteLevel (GPT-2 regex)
//       (any other value: UserError naming it); decoder ByteLevel.
//     "llama" (SentencePiece): what transformers' GGUF converter (integrations/ggml.py,
//       GGUFLlamaConverter) makes: model BPE with byte_fallback, unk_token, fuse_unk and merges
//       built from the scores as its GGUFTokenizerSkeleton builds them; normalizer
//       Prepend("▁") (when tokenizer.ggml.add_space_prefix, default true) + Replace(" ", "▁"),
//       the legacy LLaMA scheme, which like llama.cpp gives every stretch of text after a
//       special token the dummy-prefix space; decoder ByteFallback, Fuse, Replace("▁", " "),
//       Strip(1 leading space). Unlike that converter the unknown and user-defined tokens are
//       added tokens too (llama.cpp cuts them out of the text), and BOS / EOS are not swapped.
//       tokenizer.ggml.remove_extra_whitespaces is ignored, as llama.cpp ignores it for these.
//     Both: every token of type unknown (2), control (3) or user-defined (4) is an added token
//     with its GGUF id (special unless user-defined; no lstrip / rstrip / single_word,
//     normalized false: llama.cpp cuts them out of the text as they are); a post-processor
//     TemplateProcessing that puts BOS / EOS around the text when add_bos_token /
//     add_eos_token say so (llama.cpp's defaults where the keys are absent).
//   tokenizer.model         "llama" only: the SentencePiece model our GGUF reader runs
//                           (tokenizer/sentencepiece_proto.h) with its bos / eos / pad pieces
//                           named, for transformers' slow LlamaTokenizer and for our own loader
//                           (which prefers it to tokenizer.json in a folder)
//   tokenizer_config.json   tokenizer_class (PreTrainedTokenizerFast, or LlamaTokenizerFast
//                           with legacy true), add_bos_token, add_eos_token, bos / eos / unk /
//                           pad tokens, added_tokens_decoder, chat_template
//                           (tokenizer.chat_template; with named tokenizer.chat_template.<name>
//                           templates transformers' list of {name, template}),
//                           clean_up_tokenization_spaces false, model_max_length
//                           (<general.architecture>.context_length when present)
//   special_tokens_map.json bos / eos / unk / pad tokens that the vocabulary has
//   generation_config.json  bos_token_id, eos_token_id, pad_token_id (those the GGUF has;
//                           written when it has BOS or EOS)
// JSON files are UTF-8; a token or template that is not valid UTF-8 is a UserError naming it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace qlt::io {
class GgufFile;
}

namespace qlt::exporter {

struct HfTokenizerFile {
  std::string name;   // file name inside the folder, e.g. "tokenizer.json"
  std::string bytes;  // its content
};

// The files, in memory, in the order listed above. UserError for a GGUF without a vocabulary,
// one our GGUF reader refuses, or a tokenizer.ggml.pre value listed nowhere above.
std::vector<HfTokenizerFile> hf_tokenizer_files_from_gguf(const io::GgufFile& gguf);

// Opens `gguf_source` and writes its files into the existing folder `dir` (each atomically,
// io/atomic_file.h; an existing file of the same name is replaced). Returns the file names
// (relative to `dir`) with their sizes in bytes, for the export summary.
std::vector<std::pair<std::string, int64_t>> write_hf_tokenizer_from_gguf(
    const std::filesystem::path& gguf_source, const std::filesystem::path& dir);

}  // namespace qlt::exporter
