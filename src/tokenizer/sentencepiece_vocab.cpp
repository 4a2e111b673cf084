// Tokenizer implemented with the SentencePiece library (Debian's libsentencepiece).
#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstring>
#include <system_error>

#include "core/errors.h"
#include "tokenizer/tokenizer.h"

namespace qlt::tokenizer {

Tokenizer::Tokenizer()
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()),
      encoded_bytes_(std::make_unique<std::atomic<uint64_t>>(0)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

namespace {

namespace fs = std::filesystem;

constexpr const char* kModelFolderHint =
    "set model.path to a Hugging Face LLaMA model folder (config.json, *.safetensors, "
    "tokenizer.model)";

// The status of `path` (following symbolic links); a path the system refuses to look at
// (too long, a file on the way, no permission) is a UserError naming it and what to do.
fs::file_status checked_status(const fs::path& path, const char* what, const char* hint) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!ec || ec == std::errc::no_such_file_or_directory) return status;
  if (ec == std::errc::filename_too_long)
    user_error("{}; {}", path_too_long(what, path.native()), hint);
  if (ec == std::errc::not_a_directory) {
    user_error("{} {}: a file on the way is not a folder; {}", what, path.string(), hint);
  }
  if (!is_user_path_errno(ec.value()))
    runtime_error("{} {}: cannot be read: {}", what, path.string(), ec.message());
  user_error("{} {}: cannot be read ({}); {}", what, path.string(), ec.message(), hint);
}

}  // namespace

void check_model_folder(const fs::path& model_dir) {
  const fs::file_status dir = checked_status(model_dir, "model.path", kModelFolderHint);
  if (!fs::exists(dir)) {
    user_error("model.path {} does not exist; {}", model_dir.string(), kModelFolderHint);
  }
  if (fs::is_directory(dir)) return;
  if (model_dir.extension() == ".gguf") {
    user_error(
        "model.path {} is a GGUF file; GGUF files are not supported yet: set model.path to the "
        "Hugging Face LLaMA model folder it was made from (config.json, *.safetensors, "
        "tokenizer.model)",
        model_dir.string());
  }
  user_error("model.path {} is a file, not a folder; {}", model_dir.string(), kModelFolderHint);
}

Tokenizer Tokenizer::load(const fs::path& model_dir) {
  // model.path is the first thing most commands touch: say what is wrong with it rather than
  // complain about a tokenizer.model inside something that is not a model folder.
  check_model_folder(model_dir);
  const auto file = model_dir / "tokenizer.model";
  const fs::file_status status = checked_status(file, "the tokenizer file", kModelFolderHint);
  if (!fs::exists(status)) {
    user_error(
        "{}: not found; the model folder needs the SentencePiece tokenizer.model "
        "(copy it from the original model)",
        file.string());
  }
  return load_file(file);
}

Tokenizer Tokenizer::load_file(const fs::path& file) {
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
  Tokenizer t;
  t.path_ = file;
  auto status_read = t.sp_->Load(file.string());
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
  if (t.sp_->GetPieceSize() <= 0) user_error("{}: the SentencePiece model is empty", file.string());
  return t;
}

std::vector<int64_t> Tokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  encoded_bytes_->fetch_add(text.size(), std::memory_order_relaxed);
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
