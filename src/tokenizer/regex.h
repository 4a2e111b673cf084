// Regular expressions of the pre-tokenizers, through PCRE2 (UTF + Unicode properties), with
// the match-iteration rules of the references, so that pieces split by a pattern from a
// tokenizer.json or from llama.cpp's table are the same pieces:
//  - Hugging Face tokenizers runs its patterns with Oniguruma; there \s is Unicode's
//    White_Space. PCRE2's \s (with PCRE2_UCP) also matches U+180E MONGOLIAN VOWEL SEPARATOR
//    (a format character since Unicode 6.3), so \s and \S outside a character class and \s
//    inside one are rewritten to the explicit set (utf8.h, is_white_space). A \S inside a
//    class keeps PCRE2's meaning (no pattern in use has one).
//  - Empty matches: Oniguruma's find_iter (the onig crate) skips an empty match that ends
//    where the previous match ended and retries one character further; for_each_match does
//    the same.
// Text that is not valid UTF-8 is matched with PCRE2_MATCH_INVALID_UTF: an ill-formed byte is
// never part of a match, so it ends up in a piece between matches (and is then encoded byte
// by byte); nothing is rejected.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qlt::tokenizer {

class Regex {
 public:
  // Compiles `pattern` (Oniguruma / PCRE syntax as tokenizer.json and llama.cpp write it), or
  // the literal string `pattern` when `literal`. A pattern PCRE2 refuses is a UserError naming
  // `origin` (file and JSON path or GGUF key), the position and PCRE2's message.
  static Regex compile(std::string_view pattern, const std::string& origin, bool literal = false);

  // The matches in `text`, left to right, non-overlapping: (begin, end) byte offsets appended
  // to `out`. A match the engine gives up on (PCRE2's match or heap limit, after a retry
  // without JIT) is a UserError naming the pattern's origin and the text length.
  void find_all(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& out) const;

  const std::string& origin() const;

 private:
  struct Compiled;
  std::shared_ptr<const Compiled> compiled_;
};

// `pattern` with \s and \S written out as Unicode White_Space (see above); exposed for tests.
std::string white_space_as_unicode(std::string_view pattern);

}  // namespace qlt::tokenizer
