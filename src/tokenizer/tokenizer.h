// Tokenizer of a model directory. Today: SentencePiece (tokenizer.model), with LLaMA-2's
// conventions: BOS prepended on request, EOS appended only on request, no other specials.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace qlt::tokenizer {

// UserError saying what is wrong with model.path `model_dir` and how to fix it when it is not
// an existing folder: missing, a file (a GGUF file: not supported yet), too long, unreadable.
// Tokenizer::load checks this first; commands that read a model folder without its tokenizer
// call it before anything else.
void check_model_folder(const std::filesystem::path& model_dir);

class Tokenizer {
 public:
  // Loads `model_dir`/tokenizer.model after check_model_folder(model_dir). UserError naming
  // the file when it is missing, a folder, unreadable or not a SentencePiece model.
  static Tokenizer load(const std::filesystem::path& model_dir);
  static Tokenizer load_file(const std::filesystem::path& tokenizer_model);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int64_t> encode(std::string_view text, bool add_bos, bool add_eos = false) const;
  // Total bytes of text passed to encode() so far: lets tests check that tokenization work
  // is bounded (data/examples.h, tokenize_truncated).
  uint64_t encoded_bytes() const { return encoded_bytes_->load(std::memory_order_relaxed); }
  // Special ids (BOS/EOS/UNK) decode to nothing, as in the reference.
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t vocab_size() const;
  int64_t bos_id() const;
  int64_t eos_id() const;
  int64_t unk_id() const;
  std::string id_to_piece(int64_t id) const;

 private:
  Tokenizer();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::unique_ptr<std::atomic<uint64_t>> encoded_bytes_;  // a pointer keeps Tokenizer movable
  std::filesystem::path path_;
};

}  // namespace qlt::tokenizer
