// Pre-tokenization: the text between added tokens is cut into pieces ("words") by a sequence
// of steps before BPE runs on each piece. The steps and their semantics are those of Hugging
// Face tokenizers (pre_tokenizers/split.rs, digits.rs, byte_level.rs; NormalizedString::split
// in tokenizer/normalizer.rs); llama.cpp's regex lists (llama-vocab.cpp) are a sequence of
// Isolated splits.
//  - Split(pattern, behavior, invert): the pattern's matches and the text between them cover
//    the piece; `invert` swaps which of them count as matches; then
//      Removed            drops the matches,
//      Isolated           keeps every match and every gap as its own piece,
//      MergedWithPrevious appends each match to the piece before it,
//      MergedWithNext     prepends each match to the piece after it,
//      Contiguous         joins runs of adjacent matches (and of gaps);
//    empty pieces are dropped. Digits is Split(\p{N}, Isolated or Contiguous) (Rust's
//    char::is_numeric is \p{N}); ByteLevel with use_regex is Split(GPT-2's pattern, Isolated).
//  - PrefixSpace (ByteLevel's add_prefix_space): a piece that does not start with a space gets
//    one. (Hugging Face applies it to each piece that reaches ByteLevel, not just the first.)
// The byte-level mapping itself (byte_level.h) is left to the BPE model, which works on the
// raw bytes of each piece.
#pragma once

#include <deque>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tokenizer/regex.h"

namespace qlt::tokenizer {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct SplitStep {
  Regex regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};
struct PrefixSpaceStep {};
using PreTokenizerStep = std::variant<SplitStep, PrefixSpaceStep>;

// GPT-2's pre-tokenizer pattern as Hugging Face's ByteLevel uses it.
inline constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

class PreTokenizer {
 public:
  std::vector<PreTokenizerStep> steps;

  // Appends the pieces of `text` to `pieces`: views into `text`, or into `storage` for pieces
  // a step made up (a prefixed space); `storage` must outlive the views.
  void split(std::string_view text, std::deque<std::string>& storage,
             std::vector<std::string_view>& pieces) const;
};

}  // namespace qlt::tokenizer
