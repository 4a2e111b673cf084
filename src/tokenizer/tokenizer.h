// Tokenizer of a model directory. Today: SentencePiece (tokenizer.model), with LLaMA-2's
// conventions: BOS prepended on request, EOS appended only on request, no other specials.
#pragma once

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

class Tokenizer {
 public:
  // Loads `model_dir`/tokenizer.model. UserError naming the file when it is missing or is
  // not a SentencePiece model.
  static Tokenizer load(const std::filesystem::path& model_dir);
  static Tokenizer load_file(const std::filesystem::path& tokenizer_model);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int64_t> encode(std::string_view text, bool add_bos, bool add_eos = false) const;
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
  std::filesystem::path path_;
};

}  // namespace qlt::tokenizer
