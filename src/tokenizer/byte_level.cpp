#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace qlt::tokenizer::byte_level {

namespace {

bool stands_for_itself(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Tables {
  std::array<std::string, 256> utf8;
  std::array<int16_t, 0x144> byte_of{};  // code points 0 .. 0x143 (256 + 68 - 1)
  Tables() {
    byte_of.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp =
          stands_for_itself(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      append_utf8(utf8[b], cp);
      byte_of[cp] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const std::string& byte_to_utf8(uint8_t byte) { return tables().utf8[byte]; }

int code_point_to_byte(char32_t cp) {
  return cp < tables().byte_of.size() ? tables().byte_of[cp] : -1;
}

std::string encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_to_utf8(static_cast<uint8_t>(c));
  return out;
}

bool decode(std::string_view token, std::string& out) {
  const size_t start = out.size();
  for (size_t i = 0; i < token.size();) {
    const size_t n = utf8_sequence_length(token, i);
    const int b = n == 0 ? -1 : code_point_to_byte(utf8_decode(token, i, n));
    if (b < 0) {
      out.resize(start);
      return false;
    }
    out += static_cast<char>(b);
    i += n;
  }
  return true;
}

}  // namespace qlt::tokenizer::byte_level
