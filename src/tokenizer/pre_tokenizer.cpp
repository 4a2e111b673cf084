#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <utility>

namespace qlt::tokenizer {

namespace {

struct Span {
  uint32_t begin, end;
  bool match;
};

// NormalizedString::split: the spans of `piece` (matches and gaps, in order) -> the kept
// pieces, by behavior.
void apply_split(const SplitStep& step, std::string_view piece,
                 std::vector<std::pair<uint32_t, uint32_t>>& matches, std::vector<Span>& spans,
                 std::vector<std::string_view>& out) {
  matches.clear();
  spans.clear();
  if (piece.empty()) return;  // ((0, 0), false): an empty piece, dropped
  step.regex.find_all(piece, matches);
  uint32_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev != b) spans.push_back({prev, b, step.invert});
    spans.push_back({b, e, !step.invert});
    prev = e;
  }
  if (prev != piece.size())
    spans.push_back({prev, static_cast<uint32_t>(piece.size()), step.invert});

  // (offsets, remove) after the behavior, as in normalizer.rs.
  std::vector<Span> kept;  // `match` reused as "remove"
  kept.reserve(spans.size());
  switch (step.behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) kept.push_back({s.begin, s.end, false});
      break;
    case SplitBehavior::kRemoved:
      kept = spans;
      break;
    case SplitBehavior::kContiguous: {
      bool previous = false;
      for (const Span& s : spans) {
        if (s.match == previous && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back({s.begin, s.end, false});
        }
        previous = s.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous = false;
      for (const Span& s : spans) {
        if (s.match && !previous && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back({s.begin, s.end, false});
        }
        previous = s.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->match && !previous && !kept.empty()) {
          kept.back().begin = it->begin;
        } else {
          kept.push_back({it->begin, it->end, false});
        }
        previous = it->match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const Span& s : kept) {
    if (!s.match && s.end > s.begin) out.push_back(piece.substr(s.begin, s.end - s.begin));
  }
}

}  // namespace

void PreTokenizer::split(std::string_view text, std::deque<std::string>& storage,
                         std::vector<std::string_view>& pieces) const {
  std::vector<std::string_view> current, next;
  if (!text.empty()) current.push_back(text);
  std::vector<std::pair<uint32_t, uint32_t>> matches;
  std::vector<Span> spans;
  for (const PreTokenizerStep& step : steps) {
    next.clear();
    if (const auto* split = std::get_if<SplitStep>(&step)) {
      for (std::string_view piece : current) apply_split(*split, piece, matches, spans, next);
    } else {
      for (std::string_view piece : current) {
        if (piece.front() == ' ') {
          next.push_back(piece);
        } else {
          storage.push_back(" " + std::string(piece));
          next.push_back(storage.back());
        }
      }
    }
    current.swap(next);
  }
  pieces.insert(pieces.end(), current.begin(), current.end());
}

}  // namespace qlt::tokenizer
