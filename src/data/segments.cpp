#include "data/segments.h"

#include <c10/util/Exception.h>

#include <algorithm>

#include "core/errors.h"
#include "model/causal_lm_loss.h"

namespace qlt::data {

Segment bos_segment() { return {Segment::Kind::kBos, {}, false}; }
Segment eos_segment(bool trained) { return {Segment::Kind::kEos, {}, trained}; }
Segment text_segment(std::string text, bool trained) {
  return {Segment::Kind::kText, std::move(text), trained};
}

std::vector<int64_t> encode_continuation(const tokenizer::Tokenizer& tokenizer,
                                         const std::string& text) {
  if (text.empty()) return {};
  // "\n" is its own token (a byte-fallback piece in LLaMA vocabularies) and the dummy
  // prefix attaches to it, so the tokens after it are those of `text` mid-string.
  static const std::string kSentinel = "\n";
  const auto prefix = tokenizer.encode(kSentinel, /*add_bos=*/false);
  auto ids = tokenizer.encode(kSentinel + text, /*add_bos=*/false);
  if (ids.size() < prefix.size() || !std::equal(prefix.begin(), prefix.end(), ids.begin())) {
    user_error(
        "the tokenizer merges a newline with the text after it (\"{}\"), so the template "
        "pieces cannot be tokenized one by one; use data.format \"text\" with this tokenizer",
        text.substr(0, 40));
  }
  ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(prefix.size()));
  return ids;
}

Example tokenize_segments(const tokenizer::Tokenizer& tokenizer,
                          const std::vector<Segment>& segments) {
  // Adjacent text segments with the same label choice are joined first: fewer boundaries,
  // so the ids stay as close as possible to those of the whole string.
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
  bool fresh = true;  // at the start of a string: SentencePiece's dummy prefix applies
  for (const auto& seg : merged) {
    std::vector<int64_t> ids;
    switch (seg.kind) {
      case Segment::Kind::kBos:  // a model without BOS / EOS (id -1) just has none
        if (tokenizer.bos_id() >= 0) ids = {tokenizer.bos_id()};
        fresh = true;
        break;
      case Segment::Kind::kEos:
        if (tokenizer.eos_id() >= 0) ids = {tokenizer.eos_id()};
        fresh = false;
        break;
      case Segment::Kind::kText:
        if (seg.text.empty()) continue;
        ids = fresh ? tokenizer.encode(seg.text, /*add_bos=*/false)
                    : encode_continuation(tokenizer, seg.text);
        fresh = false;
        break;
    }
    ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
    ex.labels.insert(ex.labels.end(), ids.size(), model::kIgnoreIndex);
    if (seg.trained) std::copy(ids.begin(), ids.end(), ex.labels.end() - ids.size());
  }
  if (!ex.labels.empty()) ex.labels[0] = model::kIgnoreIndex;
  return ex;
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
