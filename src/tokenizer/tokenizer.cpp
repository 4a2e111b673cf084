#include "tokenizer/tokenizer.h"

#include <system_error>
#include <variant>

#include "core/errors.h"
#include "core/json_reader.h"
#include "io/gguf.h"
#include "tokenizer/bpe.h"
#include "tokenizer/conventions.h"
#include "tokenizer/gguf_vocab.h"
#include "tokenizer/model_path.h"
#include "tokenizer/sentencepiece_vocab.h"
#include "tokenizer/tokenizer_json.h"

namespace qlt::tokenizer {

namespace fs = std::filesystem;

struct Tokenizer::Impl {
  std::variant<SentencePieceVocab, BpeModel> vocab;
  Conventions conventions;
  fs::path source;
  std::string description;
  std::atomic<uint64_t> encoded_bytes{0};

  Impl(std::variant<SentencePieceVocab, BpeModel> v, Conventions c, fs::path s, std::string d)
      : vocab(std::move(v)),
        conventions(std::move(c)),
        source(std::move(s)),
        description(std::move(d)) {}
};

namespace {

// The id of a special token named by content in tokenizer_config.json.
int64_t config_token_id(const TokenizerConfig& config, const char* key, const std::string& content,
                        const std::variant<SentencePieceVocab, BpeModel>& vocab) {
  const std::optional<int64_t> id =
      std::visit([&](const auto& v) { return v.find(content); }, vocab);
  if (!id) {
    user_error(
        "{}: {} \"{}\" is not a token of the vocabulary; the tokenizer files do not "
        "belong together",
        config.file.string(), key, abridged(content, 60));
  }
  return *id;
}

std::unique_ptr<Tokenizer::Impl> sentencepiece_folder_tokenizer(const fs::path& file) {
  SentencePieceVocab vocab = SentencePieceVocab::from_file(file);
  const TokenizerConfig config = read_tokenizer_config(file.parent_path());
  Conventions c;
  const auto present = [](int64_t id) {
    return id >= 0 ? std::optional<int64_t>(id) : std::nullopt;
  };
  c.bos = present(vocab.library_bos());
  c.eos = present(vocab.library_eos());
  c.unk = present(vocab.library_unk());
  c.pad = present(vocab.library_pad());
  std::variant<SentencePieceVocab, BpeModel> v(std::move(vocab));
  if (config.pad_token) c.pad = config_token_id(config, "pad_token", *config.pad_token, v);
  c.add_bos = config.add_bos_token.value_or(c.bos.has_value());  // LLaMA 2: BOS, no EOS
  c.add_eos = config.add_eos_token.value_or(false);
  c.chat_template = config.chat_template;
  return std::make_unique<Tokenizer::Impl>(std::move(v), std::move(c), file,
                                           "sentencepiece (tokenizer.model)");
}

std::unique_ptr<Tokenizer::Impl> json_tokenizer(const nlohmann::json& json,
                                                const std::string& origin,
                                                const TokenizerConfig& config, fs::path source) {
  TokenizerJson parsed = parse_tokenizer_json(json, origin);
  const std::optional<int64_t> unk = parsed.spec.unk;
  std::variant<SentencePieceVocab, BpeModel> v(BpeModel(std::move(parsed.spec)));
  Conventions c;
  c.bos = config.bos_token ? config_token_id(config, "bos_token", *config.bos_token, v)
                           : parsed.template_bos;
  c.eos = config.eos_token ? config_token_id(config, "eos_token", *config.eos_token, v)
                           : parsed.template_eos;
  c.unk = unk;
  if (!c.unk && config.unk_token)
    c.unk = config_token_id(config, "unk_token", *config.unk_token, v);
  if (config.pad_token) c.pad = config_token_id(config, "pad_token", *config.pad_token, v);
  c.add_bos = config.add_bos_token.value_or(parsed.template_bos.has_value());
  c.add_eos = config.add_eos_token.value_or(parsed.template_eos.has_value());
  const std::string where = config.file.empty() ? origin : config.file.string();
  if (c.add_bos && !c.bos) user_error("{}: add_bos_token is true but there is no bos_token", where);
  if (c.add_eos && !c.eos) user_error("{}: add_eos_token is true but there is no eos_token", where);
  c.chat_template = config.chat_template;
  return std::make_unique<Tokenizer::Impl>(std::move(v), std::move(c), std::move(source),
                                           "byte-level BPE (tokenizer.json)");
}

std::unique_ptr<Tokenizer::Impl> json_file_tokenizer(const fs::path& file) {
  const nlohmann::json json = read_json_file(file);
  return json_tokenizer(json, file.string(), read_tokenizer_config(file.parent_path()), file);
}

std::unique_ptr<Tokenizer::Impl> gguf_tokenizer(const fs::path& file) {
  const io::GgufFile gguf = io::GgufFile::open(file);
  GgufVocabulary vocab = read_gguf_vocabulary(gguf);
  if (auto* spec = std::get_if<BpeSpec>(&vocab.model)) {
    const std::string description =
        "byte-level BPE (GGUF, pre-tokenizer " + gguf.get_string("tokenizer.ggml.pre") + ")";
    return std::make_unique<Tokenizer::Impl>(BpeModel(std::move(*spec)),
                                             std::move(vocab.conventions), file, description);
  }
  auto& sp = std::get<SentencePieceGguf>(vocab.model);
  return std::make_unique<Tokenizer::Impl>(
      SentencePieceVocab::from_gguf(sp.serialized_model, gguf.origin(), std::move(sp.types)),
      std::move(vocab.conventions), file, "sentencepiece (GGUF)");
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const fs::path& model_path) {
  // model.path is the first thing most commands touch: say what is wrong with it rather than
  // complain about a tokenizer file inside something that is not a model.
  check_model_path(model_path);
  std::error_code ec;
  if (!fs::is_directory(model_path, ec)) return Tokenizer(gguf_tokenizer(model_path));
  const fs::path sp = model_path / "tokenizer.model";
  if (fs::exists(checked_status(sp, "the tokenizer file", kModelPathHint))) {
    return Tokenizer(sentencepiece_folder_tokenizer(sp));
  }
  const fs::path json = model_path / "tokenizer.json";
  if (fs::exists(checked_status(json, "the tokenizer file", kModelPathHint))) {
    return Tokenizer(json_file_tokenizer(json));
  }
  user_error(
      "{}: no tokenizer: the model folder needs the SentencePiece tokenizer.model or the Hugging "
      "Face tokenizer.json (tokenizer.model: not found, tokenizer.json: not found); copy them "
      "from the original model",
      model_path.string());
}

Tokenizer Tokenizer::load_file(const fs::path& file) {
  const fs::file_status status =
      checked_status(file, "the tokenizer file", "give the path of a tokenizer file");
  if (fs::is_regular_file(status) && io::is_gguf_file(file)) return Tokenizer(gguf_tokenizer(file));
  if (file.extension() == ".json") return Tokenizer(json_file_tokenizer(file));
  return Tokenizer(sentencepiece_folder_tokenizer(file));
}

Tokenizer Tokenizer::from_tokenizer_json(std::string_view json_text, const std::string& origin) {
  const nlohmann::json json = parse_json(json_text, origin);
  return Tokenizer(json_tokenizer(json, origin, TokenizerConfig{}, origin));
}

std::vector<int64_t> Tokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  impl_->encoded_bytes.fetch_add(text.size(), std::memory_order_relaxed);
  const Conventions& c = impl_->conventions;
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_bos && c.bos) ids.push_back(*c.bos);
  std::visit([&](const auto& v) { v.encode(text, ids); }, impl_->vocab);
  if (add_eos && c.eos) ids.push_back(*c.eos);
  return ids;
}

uint64_t Tokenizer::encoded_bytes() const {
  return impl_->encoded_bytes.load(std::memory_order_relaxed);
}

void Tokenizer::check_id(int64_t id) const {
  if (id < 0 || id >= vocab_size()) {
    user_error("{}: token id {} is outside the vocabulary [0, {})", impl_->source.string(), id,
               vocab_size());
  }
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  for (int64_t id : ids) check_id(id);
  return std::visit([&](const auto& v) { return v.decode(ids); }, impl_->vocab);
}

int64_t Tokenizer::vocab_size() const {
  return std::visit([](const auto& v) { return v.size(); }, impl_->vocab);
}
int64_t Tokenizer::bos_id() const { return impl_->conventions.bos.value_or(-1); }
int64_t Tokenizer::eos_id() const { return impl_->conventions.eos.value_or(-1); }
int64_t Tokenizer::unk_id() const { return impl_->conventions.unk.value_or(-1); }
std::optional<int64_t> Tokenizer::pad_id() const { return impl_->conventions.pad; }
bool Tokenizer::add_bos_by_default() const { return impl_->conventions.add_bos; }
bool Tokenizer::add_eos_by_default() const { return impl_->conventions.add_eos; }
const std::string& Tokenizer::chat_template() const { return impl_->conventions.chat_template; }

std::string Tokenizer::id_to_piece(int64_t id) const {
  check_id(id);
  return std::visit(
      [&](const auto& v) -> std::string {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, BpeModel>) {
          return v.token(id);
        } else {
          return v.piece(id);
        }
      },
      impl_->vocab);
}

std::optional<int64_t> Tokenizer::piece_to_id(std::string_view piece) const {
  return std::visit([&](const auto& v) { return v.find(piece); }, impl_->vocab);
}

bool Tokenizer::is_special(int64_t id) const {
  check_id(id);
  return std::visit([&](const auto& v) { return v.is_special(id); }, impl_->vocab);
}

const std::string& Tokenizer::description() const { return impl_->description; }
const fs::path& Tokenizer::source() const { return impl_->source; }

}  // namespace qlt::tokenizer
