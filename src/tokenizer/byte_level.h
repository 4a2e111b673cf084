// GPT-2's byte-level alphabet (bytes_to_unicode in openai/gpt-2 src/encoder.py; the same
// table in Hugging Face tokenizers' pre_tokenizers/byte_level.rs and llama.cpp's unicode.cpp):
// every byte is shown as one printable code point, so that a byte-level BPE vocabulary is a
// set of strings. Bytes 0x21-0x7E, 0xA1-0xAC and 0xAE-0xFF stand for themselves; the other 68
// (controls, space, 0x7F-0xA0, 0xAD) map to U+0100, U+0101, ... in byte order, so a space is
// "Ġ" (U+0120) and a newline "Ċ" (U+010A).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace qlt::tokenizer::byte_level {

// The UTF-8 of the code point that stands for `byte`.
const std::string& byte_to_utf8(uint8_t byte);

// The byte a code point stands for, or -1 when it is not in the alphabet.
int code_point_to_byte(char32_t code_point);

// `bytes` in the byte-level alphabet (each byte -> its code point's UTF-8).
std::string encode(std::string_view bytes);

// Appends the bytes that the byte-level string `token` stands for; false (nothing appended)
// when a character of it is not in the alphabet (an added token such as "<|im_start|> x"
// with a plain space), which the decoder then copies as it is.
bool decode(std::string_view token, std::string& out);

}  // namespace qlt::tokenizer::byte_level
