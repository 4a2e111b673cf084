// Tokenizer implemented with the SentencePiece library (Debian's libsentencepiece).
#include <sentencepiece_processor.h>

#include "core/errors.h"
#include "tokenizer/tokenizer.h"

namespace qlt::tokenizer {

Tokenizer::Tokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::filesystem::path& model_dir) {
  auto file = model_dir / "tokenizer.model";
  if (!std::filesystem::exists(file)) {
    user_error(
        "{}: not found; the model directory needs the SentencePiece tokenizer.model "
        "(copy it from the original model)",
        file.string());
  }
  return load_file(file);
}

Tokenizer Tokenizer::load_file(const std::filesystem::path& file) {
  Tokenizer t;
  t.path_ = file;
  auto status = t.sp_->Load(file.string());
  if (!status.ok()) {
    user_error(
        "{}: not a SentencePiece model ({}); replace it with the model's original "
        "tokenizer.model",
        file.string(), status.ToString());
  }
  if (t.sp_->GetPieceSize() <= 0) user_error("{}: the SentencePiece model is empty", file.string());
  return t;
}

std::vector<int64_t> Tokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int> pieces;
  auto status = sp_->Encode(text, &pieces);
  if (!status.ok()) user_error("{}: cannot encode text: {}", path_.string(), status.ToString());
  std::vector<int64_t> ids;
  ids.reserve(pieces.size() + 2);
  if (add_bos && bos_id() >= 0) ids.push_back(bos_id());
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (add_eos && eos_id() >= 0) ids.push_back(eos_id());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      user_error("{}: token id {} is outside the vocabulary [0, {})", path_.string(), id,
                 vocab_size());
    }
    pieces.push_back(static_cast<int>(id));
  }
  std::string text;
  auto status = sp_->Decode(pieces, &text);
  if (!status.ok()) user_error("{}: cannot decode: {}", path_.string(), status.ToString());
  return text;
}

int64_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int64_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int64_t Tokenizer::eos_id() const { return sp_->eos_id(); }
int64_t Tokenizer::unk_id() const { return sp_->unk_id(); }

std::string Tokenizer::id_to_piece(int64_t id) const {
  if (id < 0 || id >= vocab_size()) {
    user_error("{}: token id {} is outside the vocabulary [0, {})", path_.string(), id,
               vocab_size());
  }
  return sp_->IdToPiece(static_cast<int>(id));
}

}  // namespace qlt::tokenizer
