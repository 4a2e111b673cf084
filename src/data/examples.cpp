#include "data/examples.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/errors.h"
#include "data/jsonl.h"
#include "data/templates.h"
#include "model/causal_lm_loss.h"

namespace qlt::data {

namespace {

struct Where {
  const std::filesystem::path& file;
  int64_t line;
};

// object[key] as a string; absent -> `fallback` when given, else UserError.
std::string string_field(const nlohmann::json& object, const char* key, const Where& at,
                         const std::string& format, const std::string* fallback = nullptr) {
  auto it = object.find(key);
  if (it == object.end() && fallback) return *fallback;
  if (it == object.end() || !it->is_string()) {
    user_error("{}:{}: format \"{}\" needs a string field \"{}\"{}", at.file.string(), at.line,
               format, key, it == object.end() ? "" : fmt::format(" (got {})", it->type_name()));
  }
  return it->get<std::string>();
}

std::vector<ChatMessage> chat_messages(const nlohmann::json& object, const Where& at) {
  auto it = object.find("messages");
  if (it == object.end() || !it->is_array()) {
    user_error(
        "{}:{}: format \"chat\" needs an array field \"messages\" of {{\"role\", \"content\"}} "
        "objects",
        at.file.string(), at.line);
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& m = (*it)[i];
    auto role = m.is_object() ? m.find("role") : m.end();
    auto content = m.is_object() ? m.find("content") : m.end();
    if (!m.is_object() || role == m.end() || !role->is_string() || content == m.end() ||
        !content->is_string()) {
      user_error(
          "{}:{}: messages[{}] must be an object with string fields \"role\" and "
          "\"content\"",
          at.file.string(), at.line, i);
    }
    messages.push_back({role->get<std::string>(), content->get<std::string>()});
  }
  if (auto problem = chat_shape_problem(messages); !problem.empty()) {
    user_error("{}:{}: {}", at.file.string(), at.line, problem);
  }
  return messages;
}

std::vector<Segment> record_segments(const nlohmann::json& object, const Where& at,
                                     const DataOptions& options) {
  if (options.format == "text") return text_segments(string_field(object, "text", at, "text"));
  if (options.format == "alpaca") {
    // Stanford's train.py reads the input with example.get("input", ""): it may be absent.
    static const std::string kNoInput;
    return alpaca_segments(string_field(object, "instruction", at, "alpaca"),
                           string_field(object, "input", at, "alpaca", &kNoInput),
                           string_field(object, "output", at, "alpaca"), options.train_on_inputs);
  }
  auto messages = chat_messages(object, at);
  return options.chat_template == "llama2" ? llama2_chat_segments(messages, options.train_on_inputs)
                                           : chatml_segments(messages, options.train_on_inputs);
}

// Bounded tokenization (encode_first_tokens). A prefix of about kBytesPerToken bytes per wanted
// token (+ kSlackBytes) is tokenized; if it yields at least kMarginTokens more tokens than
// wanted, its first tokens are kept, else the prefix is doubled (at worst up to the whole
// text). A token covers at least one byte of text, so the work per call stays within a few
// times the bytes the wanted tokens span.
//
// Why the kept tokens are exactly those of the whole text: SentencePiece (BPE and unigram)
// picks tokens among the vocabulary's pieces, and with split_by_whitespace (LLaMA's
// tokenizers and the bundled one) no piece holds a space ("▁") after another character: a
// piece is "▁word", "word" or all spaces. So no token crosses a point where a space follows
// a non-space, and the tokens before such a point do not depend on the text after it (byte
// fallback and identity normalization act character by character). The prefix is cut at
// such a word boundary when the last half of it holds one; then the tokens of the prefix are
// exactly the first tokens of the whole. Only text without a space near the cut (a long URL,
// base64, languages written without spaces) is cut inside a word, at a UTF-8 character
// boundary: there the last tokens of the prefix may differ from those of the whole (merges
// across the cut are missing). The difference starts at the cut and spreads back only as far
// as a chain of competing merges reaches, in practice a token or two, so the kMarginTokens
// tokens kept away from the cut absorb it. That part is not a proof (a contrived vocabulary
// could chain merges further back); tests/data/test_bounded_tokenize.cpp checks it on
// space-free text (ASCII and multi-byte) as well as on every example of the bundled datasets.
constexpr size_t kBytesPerToken = 8;
constexpr size_t kSlackBytes = 256;
constexpr size_t kMarginTokens = 8;

// Where to cut `text` (longer than `target` bytes) for a prefix of at most `target` bytes:
// just before a space that follows a non-space, the last one in (target/2, target]; else at
// the start of the UTF-8 character that holds byte `target`.
size_t prefix_cut(const std::string& text, size_t target) {
  for (size_t i = target; i > target / 2; --i) {
    if (text[i] == ' ' && text[i - 1] != ' ') return i;
  }
  size_t i = target;
  while (i > target / 2 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  return i;
}

}  // namespace

std::vector<int64_t> encode_first_tokens(const tokenizer::Tokenizer& tokenizer,
                                         const std::string& text, bool fresh, size_t max_tokens) {
  const auto encode = [&](const std::string& piece) {
    return fresh ? tokenizer.encode(piece, /*add_bos=*/false)
                 : encode_continuation(tokenizer, piece);
  };
  if (max_tokens == 0) return {};
  for (size_t target = kBytesPerToken * max_tokens + kSlackBytes;; target *= 2) {
    if (target >= text.size()) {
      auto ids = encode(text);
      if (ids.size() > max_tokens) ids.resize(max_tokens);
      return ids;
    }
    auto ids = encode(text.substr(0, prefix_cut(text, target)));
    if (ids.size() >= max_tokens + kMarginTokens) {
      ids.resize(max_tokens);
      return ids;
    }
  }
}

Example tokenize_truncated(const tokenizer::Tokenizer& tokenizer,
                           const std::vector<Segment>& segments, size_t max_tokens,
                           bool& truncated) {
  // As tokenize_segments (segments.cpp): adjacent text segments with the same label choice are
  // joined first, and the dummy prefix applies to text at the start or right after BOS.
  std::vector<Segment> merged;
  for (const auto& seg : segments) {
    if (seg.kind == Segment::Kind::kText && !merged.empty() &&
        merged.back().kind == Segment::Kind::kText && merged.back().trained == seg.trained) {
      merged.back().text += seg.text;
    } else {
      merged.push_back(seg);
    }
  }
  Example ex;
  truncated = false;
  bool fresh = true;
  for (const auto& seg : merged) {
    // One token more than there is room for tells whether the whole is longer than the budget
    // (a text segment that yields no token at all does not make the example longer).
    const size_t room = max_tokens - ex.ids.size();
    std::vector<int64_t> ids;
    switch (seg.kind) {
      case Segment::Kind::kBos:
        if (tokenizer.bos_id() >= 0) ids = {tokenizer.bos_id()};
        fresh = true;
        break;
      case Segment::Kind::kEos:
        if (tokenizer.eos_id() >= 0) ids = {tokenizer.eos_id()};
        fresh = false;
        break;
      case Segment::Kind::kText:
        if (seg.text.empty()) continue;
        ids = encode_first_tokens(tokenizer, seg.text, fresh, room + 1);
        fresh = false;
        break;
    }
    if (ids.size() > room) {
      truncated = true;
      ids.resize(room);
    }
    ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
    ex.labels.insert(ex.labels.end(), ids.size(), model::kIgnoreIndex);
    if (seg.trained) std::copy(ids.begin(), ids.end(), ex.labels.end() - ids.size());
    if (truncated) break;
  }
  if (!ex.labels.empty()) ex.labels[0] = model::kIgnoreIndex;
  return ex;
}

ExampleSet read_examples(const std::filesystem::path& file, const tokenizer::Tokenizer& tokenizer,
                         const DataOptions& options) {
  validate(options);
  ExampleSet set;
  const auto max_len = static_cast<size_t>(options.max_seq_len);
  for_each_jsonl(file, [&](const nlohmann::json& object, int64_t line) {
    ++set.records;
    auto segments = record_segments(object, Where{file, line}, options);
    Example ex;
    bool truncated = false;
    try {
      ex = tokenize_truncated(tokenizer, segments, max_len, truncated);
    } catch (const UserError& e) {
      user_error("{}:{}: {}", file.string(), line, e.what());
    }
    set.truncated += truncated;
    const int64_t trained = trained_tokens(ex);
    if (trained == 0) {
      ++set.dropped;
      return;
    }
    set.trained_tokens += trained;
    set.examples.push_back(std::move(ex));
  });
  if (set.records == 0) user_error("dataset {} holds no examples", file.string());
  if (set.dropped > 0) {
    spdlog::warn(
        "dataset {}: {} of {} examples dropped: nothing left to train on after truncation to "
        "max_seq_len {}",
        file.string(), set.dropped, set.records, options.max_seq_len);
  }
  if (set.examples.empty()) {
    user_error(
        "dataset {}: no example has a token to train on within max_seq_len {} (the trained "
        "part comes after the prompt); raise data.max_seq_len or shorten the prompts",
        file.string(), options.max_seq_len);
  }
  return set;
}

}  // namespace qlt::data
