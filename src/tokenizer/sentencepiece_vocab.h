// SentencePiece vocabularies through the sentencepiece library: a tokenizer.model file (as
// before: the library does everything, ids unchanged), or a model built from a GGUF vocabulary
// of type "llama" (sentencepiece_proto.h), which is tokenized as llama.cpp does it
// (llama-vocab.cpp, LLAMA_VOCAB_TYPE_SPM): the special tokens (types unknown, control,
// user-defined) are cut out of the text first (added_tokens.h, llama.cpp's rule), then each
// stretch of text between them is encoded on its own, each with the dummy-prefix space (llama.cpp
// prefixes a space to every text fragment that follows a special token or starts the text,
// which is every fragment).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/added_tokens.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace qlt::tokenizer {

class SentencePieceVocab {
 public:
  // UserError naming the file when it is missing, a folder, unreadable or not a model.
  static SentencePieceVocab from_file(const std::filesystem::path& file);
  // `types`: the GGUF token types, one per piece. UserError naming `origin` when the library
  // refuses the model (no unknown piece, missing byte pieces, ...).
  static SentencePieceVocab from_gguf(const std::string& serialized_model,
                                      const std::string& origin, std::vector<int32_t> types);

  SentencePieceVocab(SentencePieceVocab&&) noexcept;
  SentencePieceVocab& operator=(SentencePieceVocab&&) noexcept;
  ~SentencePieceVocab();

  void encode(std::string_view text, std::vector<int64_t>& out) const;
  // tokenizer.model: the library's decode (control ids decode to nothing). GGUF: special tokens
  // as their text, the runs between them through the library (each run loses its dummy-prefix
  // space), so that decode(encode(t)) == t.
  std::string decode(const std::vector<int64_t>& ids) const;  // ids in [0, size())

  int64_t size() const;
  std::string piece(int64_t id) const;
  std::optional<int64_t> find(std::string_view piece) const;
  bool is_special(int64_t id) const;  // control or unknown
  // The library's own special ids (tokenizer.model's trainer spec); -1 when absent.
  int64_t library_bos() const;
  int64_t library_eos() const;
  int64_t library_unk() const;
  int64_t library_pad() const;

 private:
  SentencePieceVocab();
  void encode_text(std::string_view text, std::vector<int64_t>& out) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string origin_;
  bool gguf_ = false;
  std::vector<int32_t> types_;  // GGUF only
  AddedTokenMatcher specials_;  // GGUF only
};

}  // namespace qlt::tokenizer
