// The vocabulary of a GGUF file (llama.cpp's tokenizer.ggml.* keys; llama-vocab.cpp is the
// reference for how they are used):
//   tokenizer.ggml.model       "gpt2" (byte-level BPE) or "llama" (SentencePiece); any other
//                              is a UserError naming it
//   tokenizer.ggml.tokens      the tokens by id (non-empty, distinct)
//   tokenizer.ggml.token_type  per token: 1 normal, 2 unknown, 3 control, 4 user-defined,
//                              5 unused, 6 byte (0 undefined); optional, else all normal
//   tokenizer.ggml.scores      per token (SentencePiece); optional, else 0
//   tokenizer.ggml.merges      "a b" strings in rank order ("gpt2")
//   tokenizer.ggml.pre         the pre-tokenizer's name ("gpt2"): its regex list as in
//                              llama.cpp's llm_tokenizer_bpe (see kPreTokenizers in the .cpp):
//                              llama3 / llama-v3 / llama-bpe, smollm / starcoder, gpt-2
//   tokenizer.ggml.{bos,eos,unknown,padding}_token_id, add_bos_token, add_eos_token,
//   add_space_prefix, remove_extra_whitespaces, tokenizer.chat_template
// Arrays whose lengths differ from the token count, ids outside the vocabulary and values of
// the wrong type are UserErrors naming the key (the GGUF reader's getters name key and type).
// Where a key is absent llama.cpp's defaults apply: "llama" vocabularies have BOS 1, EOS 2,
// UNK 0 and add BOS; "gpt2" ones have no special ids and add BOS only for the llama3 pre.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/conventions.h"

namespace qlt::io {
class GgufFile;
}

namespace qlt::tokenizer {

// llama.cpp's token types (tokenizer.ggml.token_type; llama-vocab.h, gguf.TokenType).
namespace gguf_token_type {
inline constexpr int32_t kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5,
                         kByte = 6;
}  // namespace gguf_token_type

struct SentencePieceGguf {
  std::string serialized_model;  // sentencepiece_proto.h
  std::vector<int32_t> types;    // the GGUF token types
};

struct GgufVocabulary {
  std::variant<BpeSpec, SentencePieceGguf> model;
  Conventions conventions;
};

GgufVocabulary read_gguf_vocabulary(const io::GgufFile& file);

}  // namespace qlt::tokenizer
