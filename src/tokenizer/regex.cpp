#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include <limits>

#include "core/errors.h"
#include "tokenizer/utf8.h"

namespace qlt::tokenizer {

namespace {

// Unicode White_Space as class members: U+0009-000D, U+0020, U+0085 and the Z categories
// (Zs, Zl, Zp: U+00A0, U+1680, U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000).
constexpr std::string_view kWhiteSpaceMembers = "\\t-\\r\\x{20}\\x{85}\\p{Z}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof buffer);
  return n < 0 ? "error " + std::to_string(code) : std::string(reinterpret_cast<char*>(buffer));
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

// One match block per thread, shared by every pattern: only the whole match (pair 0) is read,
// so one pair is enough (pcre2_match then returns 0 for patterns with groups).
pcre2_match_data* thread_match_data() {
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(
      pcre2_match_data_create(1, nullptr));
  if (!data) throw std::bad_alloc();
  return data.get();
}

}  // namespace

struct Regex::Compiled {
  pcre2_code* code = nullptr;
  std::string origin;
  ~Compiled() { pcre2_code_free(code); }
};

std::string white_space_as_unicode(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  for (size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char d = p[i + 1];
      if (d == 'Q') {  // \Q...\E: literal text, copied as it is
        const size_t end = p.find("\\E", i + 2);
        const size_t stop = end == std::string_view::npos ? p.size() : end + 2;
        out.append(p.substr(i, stop - i));
        i = stop;
        continue;
      }
      if (d == 's') {
        if (in_class) {
          out.append(kWhiteSpaceMembers);
        } else {
          out.append("[").append(kWhiteSpaceMembers).append("]");
        }
        i += 2;
        continue;
      }
      if (d == 'S' && !in_class) {
        out.append("[^").append(kWhiteSpaceMembers).append("]");
        i += 2;
        continue;
      }
      out.append(p.substr(i, 2));
      i += 2;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      ++i;
      if (i < p.size() && p[i] == '^') out += p[i++];
      if (i < p.size() && p[i] == ']') out += p[i++];  // a ']' first in a class is literal
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // [:alpha:]
      const size_t end = p.find(":]", i + 2);
      const size_t stop = end == std::string_view::npos ? i + 1 : end + 2;
      out.append(p.substr(i, stop - i));
      i = stop;
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
    ++i;
  }
  return out;
}

Regex Regex::compile(std::string_view pattern, const std::string& origin, bool literal) {
  const std::string text = literal ? std::string(pattern) : white_space_as_unicode(pattern);
  uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
  options |= literal ? PCRE2_LITERAL : PCRE2_UCP;
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), options,
                                   &error, &offset, nullptr);
  if (code == nullptr) {
    user_error(
        "{}: the pattern \"{}\" is not a valid regular expression for PCRE2 (at offset {}: {})",
        origin, abridged(pattern, 120), offset, pcre2_message(error));
  }
  auto compiled = std::make_shared<Compiled>();
  compiled->code = code;
  compiled->origin = origin;
  // JIT where the platform has it (several times faster); the interpreter otherwise.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  Regex r;
  r.compiled_ = std::move(compiled);
  return r;
}

const std::string& Regex::origin() const { return compiled_->origin; }

void Regex::find_all(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& out) const {
  if (text.size() > std::numeric_limits<uint32_t>::max()) {
    user_error("{}: a text of {} bytes is too long to pre-tokenize (at most 4 GiB)",
               compiled_->origin, text.size());
  }
  pcre2_match_data* data = thread_match_data();
  // PCRE2 10.42 refuses a null subject even of length 0 (an empty string_view may have one).
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.empty() ? "" : text.data());
  size_t start = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (start <= text.size()) {
    int rc = pcre2_match(compiled_->code, subject, text.size(), start, 0, data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // deep backtracking: the interpreter uses the heap
      rc = pcre2_match(compiled_->code, subject, text.size(), start, PCRE2_NO_JIT, data, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      user_error(
          "{}: the pre-tokenizer pattern gives up on a text of {} bytes (PCRE2: {}); split "
          "the text into shorter pieces",
          compiled_->origin, text.size(), pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
    const size_t begin = ov[0], end = ov[1];
    if (begin == end && have_last && last_end == end) {
      // An empty match right where the previous one ended: skip one character and retry.
      if (start >= text.size()) break;
      start += utf8_step(text, start);
      continue;
    }
    out.emplace_back(static_cast<uint32_t>(begin), static_cast<uint32_t>(end));
    have_last = true;
    last_end = end;
    start = end;
  }
}

}  // namespace qlt::tokenizer
