#include "tokenizer/added_tokens.h"

#include <algorithm>
#include <cstring>

#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace qlt::tokenizer {

namespace {

// Rust regex's Unicode \w: Alphabetic, marks, decimal digits, connector punctuation and the
// join controls (regex-syntax's perl_word table).
bool is_word_char(std::string_view text, size_t begin, size_t end) {
  static const Regex word =
      Regex::compile("^[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]$", "the \\w class");
  std::vector<std::pair<uint32_t, uint32_t>> m;
  word.find_all(text.substr(begin, end - begin), m);
  return !m.empty();
}

// Start of the last character of text[0, end) (end > 0).
size_t last_char_start(std::string_view text, size_t end) {
  size_t i = end - 1;
  for (size_t back = 0; back < 3 && i > 0 && (static_cast<uint8_t>(text[i]) & 0xC0) == 0x80;
       ++back) {
    --i;
  }
  return utf8_sequence_length(text, i) == end - i ? i : end - 1;
}

bool ends_with_word(std::string_view text, size_t begin, size_t end) {
  if (end <= begin) return false;
  const size_t start = std::max(begin, last_char_start(text, end));
  return is_word_char(text, start, end);
}

bool starts_with_word(std::string_view text, size_t begin, size_t end) {
  if (begin >= end) return false;
  return is_word_char(text, begin, std::min(end, begin + utf8_step(text, begin)));
}

bool white_space_at(std::string_view text, size_t i, size_t& length) {
  length = utf8_sequence_length(text, i);
  return length != 0 && is_white_space(utf8_decode(text, i, length));
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens, AddedTokenRule rule)
    : tokens_(std::move(tokens)), rule_(rule) {
  std::vector<uint32_t> order(tokens_.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    if (tokens_[a].content.size() != tokens_[b].content.size())
      return tokens_[a].content.size() > tokens_[b].content.size();
    return tokens_[a].id < tokens_[b].id;
  });
  if (rule_ == AddedTokenRule::kLlamaCpp) {
    longest_first_ = std::move(order);
    return;
  }
  for (uint32_t i : order) {
    Pass& pass = tokens_[i].normalized ? normalized_pass_ : raw_pass_;
    pass.by_first_byte[static_cast<uint8_t>(tokens_[i].content[0])].push_back(i);
  }
}

void AddedTokenMatcher::hf_pass(const Pass& pass, std::string_view text, size_t begin, size_t end,
                                std::vector<TextSegment>& out) const {
  size_t start_offset = begin;  // end of the last token taken (find_matches' start_offset)
  size_t i = begin;
  while (i < end) {
    const auto& candidates = pass.by_first_byte[static_cast<uint8_t>(text[i])];
    const AddedToken* hit = nullptr;
    for (uint32_t index : candidates) {
      const std::string& c = tokens_[index].content;
      if (c.size() <= end - i && std::memcmp(text.data() + i, c.data(), c.size()) == 0) {
        hit = &tokens_[index];
        break;  // longest first
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + hit->content.size();
    i = stop;  // the next match starts after this one, taken or not
    if (hit->single_word &&
        (ends_with_word(text, begin, start) || starts_with_word(text, stop, end))) {
      continue;
    }
    if (start < start_offset) continue;  // inside white space an rstrip token took
    if (hit->lstrip) {
      size_t s = start;
      while (s > start_offset) {
        const size_t c = last_char_start(text, s);
        size_t n = 0;
        if (c < start_offset || !white_space_at(text, c, n) || c + n != s) break;
        s = c;
      }
      start = s;
    }
    if (hit->rstrip) {
      size_t n = 0;
      while (stop < end && white_space_at(text, stop, n)) stop += n;
      i = stop;
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, hit->id});
    start_offset = stop;
  }
  if (start_offset < end || (start_offset == begin && begin == end)) {
    out.push_back({start_offset, end, -1});
  }
}

void AddedTokenMatcher::llama_cpp_split(std::string_view text,
                                        std::vector<TextSegment>& out) const {
  std::vector<TextSegment> current{{0, text.size(), -1}}, next;
  for (uint32_t index : longest_first_) {
    const AddedToken& token = tokens_[index];
    next.clear();
    for (const TextSegment& seg : current) {
      if (seg.id >= 0) {
        next.push_back(seg);
        continue;
      }
      size_t from = seg.begin;
      while (from < seg.end) {
        const size_t at = text.substr(0, seg.end).find(token.content, from);
        if (at == std::string_view::npos) break;
        if (at > from) next.push_back({from, at, -1});
        next.push_back({at, at + token.content.size(), token.id});
        from = at + token.content.size();
      }
      if (from < seg.end) next.push_back({from, seg.end, -1});
    }
    current.swap(next);
  }
  out.insert(out.end(), current.begin(), current.end());
}

void AddedTokenMatcher::split(std::string_view text, std::vector<TextSegment>& out) const {
  if (tokens_.empty() || text.empty()) {
    out.push_back({0, text.size(), -1});
    return;
  }
  if (rule_ == AddedTokenRule::kLlamaCpp) {
    llama_cpp_split(text, out);
    return;
  }
  std::vector<TextSegment> first;
  hf_pass(raw_pass_, text, 0, text.size(), first);
  for (const TextSegment& seg : first) {
    if (seg.id >= 0) {
      out.push_back(seg);
    } else {
      hf_pass(normalized_pass_, text, seg.begin, seg.end, out);
    }
  }
}

}  // namespace qlt::tokenizer
