#include "cli/text_stream.h"

#include <algorithm>

namespace qlt::cli {

namespace {

// The window is decoded whole at every token; past this many new tokens it restarts from its
// last kKeepTokens tokens (when nothing is held back), so a step costs O(window), not O(text).
constexpr size_t kMaxWindow = 64;
constexpr size_t kKeepTokens = 8;

const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

}  // namespace

size_t unfinished_tail(const std::string& text) {
  size_t end = text.size();
  while (true) {
    // An incomplete sequence: a lead byte followed by fewer continuation bytes than it needs.
    size_t i = end;
    while (i > 0 && end - i < 3 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) --i;
    if (i > 0) {
      const auto lead = static_cast<unsigned char>(text[i - 1]);
      const size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
      if (need > 1 && end - (i - 1) < need) {
        end = i - 1;
        continue;
      }
    }
    if (end >= kReplacement.size() &&
        text.compare(end - kReplacement.size(), kReplacement.size(), kReplacement) == 0) {
      end -= kReplacement.size();
      continue;
    }
    return text.size() - end;
  }
}

TextStream::TextStream(Decode decode, std::vector<int64_t> context)
    : decode_(std::move(decode)), window_(std::move(context)) {
  if (!window_.empty()) seen_ = decode_(window_);
}

std::string TextStream::push(int64_t id) {
  window_.push_back(id);
  const std::string text = decode_(window_);
  // A decoder may rewrite earlier text (SentencePiece's leading space); what was handed out
  // stays, and the stream goes on after as many bytes.
  const std::string fresh = text.substr(std::min(seen_.size(), text.size()));
  const size_t hold = unfinished_tail(fresh);
  std::string out = fresh.substr(0, fresh.size() - hold);
  held_ = fresh.substr(fresh.size() - hold);
  seen_ += out;
  if (held_.empty() && window_.size() > kMaxWindow) {
    window_.erase(window_.begin(), window_.end() - kKeepTokens);
    seen_ = decode_(window_);
  }
  return out;
}

std::string TextStream::finish() {
  std::string out = std::move(held_);
  seen_ += out;
  held_.clear();
  return out;
}

}  // namespace qlt::cli
