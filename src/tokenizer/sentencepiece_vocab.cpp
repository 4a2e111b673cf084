// SentencePiece vocabularies with Debian's libsentencepiece.
#include "tokenizer/sentencepiece_vocab.h"

#include <sentencepiece_processor.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "core/errors.h"
#include "tokenizer/model_path.h"

namespace qlt::tokenizer {

SentencePieceVocab::SentencePieceVocab()
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
SentencePieceVocab::SentencePieceVocab(SentencePieceVocab&&) noexcept = default;
SentencePieceVocab& SentencePieceVocab::operator=(SentencePieceVocab&&) noexcept = default;
SentencePieceVocab::~SentencePieceVocab() = default;

namespace fs = std::filesystem;

SentencePieceVocab SentencePieceVocab::from_file(const fs::path& file) {
  const fs::file_status status = checked_status(file, "the tokenizer file",
                                                "give the path of a SentencePiece tokenizer.model");
  if (fs::is_directory(status)) {
    user_error(
        "{}: is a folder, not a file; replace it with the model's original SentencePiece "
        "tokenizer.model",
        file.string());
  }
  if (!fs::exists(status)) {
    user_error("{}: not found; give the path of a SentencePiece tokenizer.model", file.string());
  }
  SentencePieceVocab v;
  v.origin_ = file.string();
  auto status_read = v.sp_->Load(file.string());
  if (!status_read.ok()) {
    // Load() reports an unreadable file (permissions, I/O) and a file that does not parse
    // alike; tell them apart by trying to open it.
    if (std::FILE* f = std::fopen(file.c_str(), "rb")) {
      std::fclose(f);
      user_error(
          "{}: not a SentencePiece model ({}); replace it with the model's original "
          "tokenizer.model",
          file.string(), status_read.ToString());
    }
    const int err = errno;
    if (!is_user_path_errno(err)) {
      runtime_error("{}: cannot be read: {}", file.string(), std::strerror(err));
    }
    user_error("{}: cannot be read ({}); check its permissions", file.string(), std::strerror(err));
  }
  if (v.sp_->GetPieceSize() <= 0) user_error("{}: the SentencePiece model is empty", file.string());
  return v;
}

SentencePieceVocab SentencePieceVocab::from_gguf(const std::string& serialized,
                                                 const std::string& origin,
                                                 std::vector<int32_t> types) {
  SentencePieceVocab v;
  v.origin_ = origin;
  v.gguf_ = true;
  const auto status = v.sp_->LoadFromSerializedProto(serialized);
  if (!status.ok()) {
    user_error(
        "{}: the SentencePiece vocabulary (tokenizer.ggml.tokens, .scores, .token_type) is not "
        "one the sentencepiece library accepts: {}",
        origin, status.ToString());
  }
  std::vector<AddedToken> specials;
  for (size_t id = 0; id < types.size(); ++id) {
    if (types[id] == 2 || types[id] == 3 || types[id] == 4) {
      specials.push_back({v.sp_->IdToPiece(static_cast<int>(id)), static_cast<int64_t>(id)});
    }
  }
  v.types_ = std::move(types);
  v.specials_ = AddedTokenMatcher(std::move(specials), AddedTokenRule::kLlamaCpp);
  return v;
}

void SentencePieceVocab::encode_text(std::string_view text, std::vector<int64_t>& out) const {
  std::vector<int> pieces;
  auto status = sp_->Encode(text, &pieces);
  if (!status.ok()) user_error("{}: cannot encode text: {}", origin_, status.ToString());
  out.insert(out.end(), pieces.begin(), pieces.end());
}

void SentencePieceVocab::encode(std::string_view text, std::vector<int64_t>& out) const {
  if (!gguf_) {
    encode_text(text, out);
    return;
  }
  std::vector<TextSegment> segments;
  specials_.split(text, segments);
  for (const TextSegment& seg : segments) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
    } else if (seg.end > seg.begin) {
      encode_text(text.substr(seg.begin, seg.end - seg.begin), out);
    }
  }
}

std::string SentencePieceVocab::decode(const std::vector<int64_t>& ids) const {
  const auto decode_run = [&](auto begin, auto end, std::string& text) {
    if (begin == end) return;
    std::vector<int> pieces(begin, end);
    std::string part;
    auto status = sp_->Decode(pieces, &part);
    if (!status.ok()) user_error("{}: cannot decode: {}", origin_, status.ToString());
    text += part;
  };
  std::string text;
  if (!gguf_) {
    decode_run(ids.begin(), ids.end(), text);
    return text;
  }
  auto run = ids.begin();
  for (auto it = ids.begin(); it != ids.end(); ++it) {
    const int32_t type = types_[*it];
    if (type == 2 || type == 3 || type == 4) {
      decode_run(run, it, text);
      text += sp_->IdToPiece(static_cast<int>(*it));
      run = it + 1;
    }
  }
  decode_run(run, ids.end(), text);
  return text;
}

int64_t SentencePieceVocab::size() const { return sp_->GetPieceSize(); }
std::string SentencePieceVocab::piece(int64_t id) const {
  return sp_->IdToPiece(static_cast<int>(id));
}
std::optional<int64_t> SentencePieceVocab::find(std::string_view piece) const {
  const int id = sp_->PieceToId(piece);
  // PieceToId answers unk_id for an unknown piece: only an exact match counts.
  if (id < 0 || sp_->IdToPiece(id) != piece) return std::nullopt;
  return id;
}
bool SentencePieceVocab::is_special(int64_t id) const {
  return sp_->IsControl(static_cast<int>(id)) || sp_->IsUnknown(static_cast<int>(id));
}
int64_t SentencePieceVocab::library_bos() const { return sp_->bos_id(); }
int64_t SentencePieceVocab::library_eos() const { return sp_->eos_id(); }
int64_t SentencePieceVocab::library_unk() const { return sp_->unk_id(); }
int64_t SentencePieceVocab::library_pad() const { return sp_->pad_id(); }

}  // namespace qlt::tokenizer
