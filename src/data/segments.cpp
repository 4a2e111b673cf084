#include "data/segments.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <optional>

#include "core/errors.h"
#include "model/causal_lm_loss.h"

namespace qlt::data {

Segment bos_segment() { return {Segment::Kind::kBos, {}, false}; }
Segment template_bos_segment() { return {Segment::Kind::kTemplateBos, {}, false}; }
Segment eos_segment(bool trained) { return {Segment::Kind::kEos, {}, trained}; }
Segment text_segment(std::string text, bool trained) {
  return {Segment::Kind::kText, std::move(text), trained};
}

namespace {

// "\n" is its own token (a byte-fallback piece in LLaMA vocabularies) and the dummy prefix
// attaches to it, so the tokens after it are those of a text mid-string.
const std::string kSentinel = "\n";

// The ids of `text` after the sentinel, or nullopt when the sentinel's own ids are not a prefix
// of those of sentinel + text (the tokenizer merged them).
std::optional<std::vector<int64_t>> encode_after_sentinel(const tokenizer::Tokenizer& tokenizer,
                                                          const std::string& text) {
  const auto prefix = tokenizer.encode(kSentinel, /*add_bos=*/false);
  auto ids = tokenizer.encode(kSentinel + text, /*add_bos=*/false);
  if (ids.size() < prefix.size() || !std::equal(prefix.begin(), prefix.end(), ids.begin())) {
    return std::nullopt;
  }
  ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(prefix.size()));
  return ids;
}

}  // namespace

bool tokenizer_marks_text_start(const tokenizer::Tokenizer& tokenizer) {
  // Three letters, in case a vocabulary happened to spell one of them the same either way.
  for (const char* probe : {"a", "t", "x"}) {
    const auto after = encode_after_sentinel(tokenizer, probe);
    if (!after || *after != tokenizer.encode(probe, /*add_bos=*/false)) return true;
  }
  return false;
}

std::vector<int64_t> encode_continuation(const tokenizer::Tokenizer& tokenizer,
                                         const std::string& text) {
  if (text.empty()) return {};
  // The sentinel gives the mid-string ids for both kinds of tokenizer when it stays a token of
  // its own. When it merges (BPE: text starting with a newline), a tokenizer that does not mark
  // the text start needs no sentinel; only then is that asked (it costs a few encodes).
  auto ids = encode_after_sentinel(tokenizer, text);
  if (!ids && !tokenizer_marks_text_start(tokenizer)) return tokenizer.encode(text, false);
  if (!ids) {
    user_error(
        "the tokenizer merges a newline with the text after it (\"{}\"), so the template "
        "pieces cannot be tokenized one by one; use data.format \"text\" with this tokenizer",
        text.substr(0, 40));
  }
  return *ids;
}

namespace {

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
  // A budget whose byte target could overflow covers any text: tokenize it whole.
  if (max_tokens > (text.size() + kSlackBytes) / kBytesPerToken) {
    auto ids = encode(text);
    if (ids.size() > max_tokens) ids.resize(max_tokens);
    return ids;
  }
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
  // Adjacent text segments with the same label choice are joined first: fewer boundaries,
  // so the ids stay as close as possible to those of the whole string. The dummy prefix
  // applies to text at the start or right after BOS.
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
    // Without a limit the room stays "no limit" (kNoTokenLimit - n would be a huge limit, whose
    // byte budget in encode_first_tokens overflows).
    const size_t room = max_tokens == kNoTokenLimit ? kNoTokenLimit : max_tokens - ex.ids.size();
    std::vector<int64_t> ids;
    switch (seg.kind) {
      case Segment::Kind::kBos:
      case Segment::Kind::kTemplateBos:
        if (tokenizer.bos_id() >= 0 &&
            (seg.kind == Segment::Kind::kTemplateBos || tokenizer.add_bos_by_default())) {
          ids = {tokenizer.bos_id()};
        }
        fresh = true;
        break;
      case Segment::Kind::kEos:
        if (tokenizer.eos_id() >= 0) ids = {tokenizer.eos_id()};
        fresh = false;
        break;
      case Segment::Kind::kText:
        if (seg.text.empty()) continue;
        ids = encode_first_tokens(tokenizer, seg.text, fresh,
                                  room == kNoTokenLimit ? room : room + 1);
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

Example tokenize_segments(const tokenizer::Tokenizer& tokenizer,
                          const std::vector<Segment>& segments) {
  bool truncated = false;
  return tokenize_truncated(tokenizer, segments, kNoTokenLimit, truncated);
}

namespace {

// Decodes the UTF-8 code point at text[i]; sets len to its byte length (1 on bad bytes).
char32_t decode_utf8(const std::string& text, size_t i, size_t& len) {
  const auto b = static_cast<unsigned char>(text[i]);
  len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 1;
  if (i + len > text.size()) len = 1;
  if (len == 1) return b;
  char32_t cp = b & (0x7F >> len);
  for (size_t k = 1; k < len; ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
  return cp;
}

// Python's str.isspace() code points.
bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

}  // namespace

std::string python_strip(const std::string& text) {
  // Byte ranges [start, end) of the code points, found left to right.
  size_t begin = text.size(), end = 0;
  for (size_t i = 0; i < text.size();) {
    size_t len = 1;
    const char32_t cp = decode_utf8(text, i, len);
    if (!is_python_space(cp)) {
      begin = std::min(begin, i);
      end = i + len;
    }
    i += len;
  }
  return begin < end ? text.substr(begin, end - begin) : std::string();
}

}  // namespace qlt::data
