// UTF-8 helpers of the tokenizers: well-formed sequences as Unicode defines them (The Unicode
// Standard, ch. 3, Table 3-7), so that text that is not valid UTF-8 is handled byte by byte
// instead of being rejected or crashing.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace qlt::tokenizer {

// Length (1-4) of the well-formed UTF-8 sequence that starts at text[i], or 0 when the bytes
// there are not one (a stray continuation byte, an overlong form, a surrogate, a code point
// above U+10FFFF, a truncated sequence). i < text.size().
size_t utf8_sequence_length(std::string_view text, size_t i);

// Length of the UTF-8 "character" at text[i] for walking text one character at a time: the
// well-formed sequence there, or 1 for a byte that does not start one.
inline size_t utf8_step(std::string_view text, size_t i) {
  const size_t n = utf8_sequence_length(text, i);
  return n == 0 ? 1 : n;
}

// The code point of the well-formed sequence of `length` bytes at text[i].
char32_t utf8_decode(std::string_view text, size_t i, size_t length);

void append_utf8(std::string& out, char32_t code_point);

// `bytes` with every ill-formed subsequence replaced by U+FFFD, one per maximal subpart (the
// Unicode "substitution of maximal subparts" practice, which Rust's String::from_utf8_lossy
// and so Hugging Face tokenizers' decode follow).
std::string to_valid_utf8(std::string_view bytes);

// Unicode's White_Space property (PropList.txt): U+0009-000D, U+0020, U+0085, U+00A0, U+1680,
// U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000. What Rust's char::is_whitespace,
// Oniguruma's Unicode \s and llama.cpp's whitespace table mean.
bool is_white_space(char32_t code_point);

}  // namespace qlt::tokenizer
