#include "tokenizer/utf8.h"

#include <cstdint>

namespace qlt::tokenizer {

namespace {

// How many bytes of a sequence starting at text[i] are a valid prefix of a well-formed
// sequence (Table 3-7), and how long the complete sequence would be.
struct Prefix {
  size_t valid = 0;  // bytes that are a valid prefix (0 when the lead byte is invalid)
  size_t total = 0;  // length of the complete sequence the lead byte announces
};

Prefix valid_prefix(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t lead = byte(i);
  if (lead < 0x80) return {1, 1};
  size_t total = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    total = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    total = 3;
    if (lead == 0xE0) lo = 0xA0;  // no overlong forms
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    total = 4;
    if (lead == 0xF0) lo = 0x90;  // no overlong forms
    if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {0, 1};  // 0x80-0xC1, 0xF5-0xFF never start a sequence
  }
  size_t valid = 1;
  for (size_t k = 1; k < total; ++k) {
    if (i + k >= text.size()) break;
    const uint8_t b = byte(i + k);
    const uint8_t min = k == 1 ? lo : 0x80, max = k == 1 ? hi : 0xBF;
    if (b < min || b > max) break;
    ++valid;
  }
  return {valid, total};
}

}  // namespace

size_t utf8_sequence_length(std::string_view text, size_t i) {
  const Prefix p = valid_prefix(text, i);
  return p.valid == p.total ? p.total : 0;
}

char32_t utf8_decode(std::string_view text, size_t i, size_t length) {
  const auto byte = [&](size_t k) {
    return static_cast<char32_t>(static_cast<uint8_t>(text[i + k]));
  };
  switch (length) {
    case 1:
      return byte(0);
    case 2:
      return ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F);
    case 3:
      return ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
    default:
      return ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) |
             (byte(3) & 0x3F);
  }
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string to_valid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const Prefix p = valid_prefix(bytes, i);
    if (p.valid == p.total) {
      out.append(bytes.substr(i, p.total));
      i += p.total;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for the maximal subpart (at least the lead byte)
      i += p.valid == 0 ? 1 : p.valid;
    }
  }
  return out;
}

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

}  // namespace qlt::tokenizer
