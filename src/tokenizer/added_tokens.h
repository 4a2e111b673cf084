// Added tokens (special tokens such as "<|im_start|>", and tokens added to a vocabulary after
// training) are found in the text before anything else, so that a chat marker typed in the
// text becomes its one id. Two rules, one per reference:
//  - Hugging Face tokenizers (tokenizer/added_vocabulary.rs): first the tokens with
//    normalized = false are taken out of the whole text, then those with normalized = true out
//    of the text between (with no normalizer both see the text as it is). Each pass scans
//    left to right and takes, at the first position where any token starts, the longest one
//    there (Aho-Corasick, MatchKind::LeftmostLongest); matches do not overlap. A single_word
//    token only counts with no word character (Rust regex \w) right before and after it (a
//    discarded match still consumes its text); lstrip / rstrip make the token take the white
//    space (Unicode White_Space) before / after it.
//  - llama.cpp (llama-vocab.cpp, tokenizer_st_partition): the special tokens (types control,
//    user-defined, unknown) from the longest to the shortest (ties by id), each one cut out of
//    every piece of text that is left, first occurrence first.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qlt::tokenizer {

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool special = false;  // HF "special" (skipped by decode(skip_special_tokens=True))
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

enum class AddedTokenRule { kHuggingFace, kLlamaCpp };

// A stretch of the text: an added token (id >= 0) or text to pre-tokenize (id == -1).
struct TextSegment {
  size_t begin = 0, end = 0;
  int64_t id = -1;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // Tokens must have distinct, non-empty contents (the loaders check).
  AddedTokenMatcher(std::vector<AddedToken> tokens, AddedTokenRule rule);

  // Splits `text` into segments in text order, covering it (text segments may be empty only
  // when the text is). Segments of swallowed white space (lstrip/rstrip) belong to the token.
  void split(std::string_view text, std::vector<TextSegment>& out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  struct Pass {
    std::vector<uint32_t> by_first_byte[256];  // token indices, longest first
  };
  void hf_pass(const Pass& pass, std::string_view text, size_t begin, size_t end,
               std::vector<TextSegment>& out) const;
  void llama_cpp_split(std::string_view text, std::vector<TextSegment>& out) const;

  std::vector<AddedToken> tokens_;
  AddedTokenRule rule_ = AddedTokenRule::kHuggingFace;
  Pass raw_pass_, normalized_pass_;      // kHuggingFace: normalized = false / true
  std::vector<uint32_t> longest_first_;  // kLlamaCpp
};

}  // namespace qlt::tokenizer
