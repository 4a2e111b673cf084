// GGUF metadata values: type names, equality, descriptions for messages, and the typed
// getters of GgufFile (the parsing itself is in gguf.cpp).
#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "core/errors.h"
#include "io/gguf.h"
#include "io/gguf_internal.h"

namespace qlt::io {

namespace gguf_detail {

std::string quote_text(std::string_view text, size_t max) {
  std::string out = "'";
  const std::string_view shown = text.substr(0, max);
  for (const char c : shown) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b < 0x7f && c != '\\' && c != '\'') {
      out += c;
    } else {
      out += fmt::format("\\x{:02x}", b);
    }
  }
  out += '\'';
  if (shown.size() < text.size()) out += fmt::format("... ({} bytes)", text.size());
  return out;
}

}  // namespace gguf_detail

namespace {

using gguf_detail::quote_text;

constexpr std::string_view kTypeNames[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                           "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                           "UINT64", "INT64",   "FLOAT64"};

bool is_unsigned(GgufValueType t) {
  return t == GgufValueType::UINT8 || t == GgufValueType::UINT16 || t == GgufValueType::UINT32 ||
         t == GgufValueType::UINT64;
}
bool is_signed(GgufValueType t) {
  return t == GgufValueType::INT8 || t == GgufValueType::INT16 || t == GgufValueType::INT32 ||
         t == GgufValueType::INT64;
}
bool is_float(GgufValueType t) {
  return t == GgufValueType::FLOAT32 || t == GgufValueType::FLOAT64;
}

// The value as a short text (no type name): 7, -3, 0.5, true, 'llama', [3 STRING].
std::string value_text(const GgufValue& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return quote_text(x, 60);
        } else if constexpr (std::is_same_v<T, GgufArray>) {
          return fmt::format("[{} {}]", x.items.size(), gguf_value_type_name(x.element_type));
        } else {
          return fmt::format("{}", x);
        }
      },
      v.value);
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType type) {
  const auto i = static_cast<uint32_t>(type);
  return i < std::size(kTypeNames) ? kTypeNames[i] : std::string_view("(unknown type)");
}

bool is_gguf_value_type(uint32_t type_id) { return type_id < std::size(kTypeNames); }

GgufValue GgufValue::string_array(const std::vector<std::string>& items) {
  std::vector<GgufValue> values;
  values.reserve(items.size());
  for (const auto& s : items) values.push_back(str(s));
  return array(GgufValueType::STRING, std::move(values));
}

bool operator==(const GgufValue& a, const GgufValue& b) {
  if (a.type != b.type || a.value.index() != b.value.index()) return false;
  if (const auto* x = std::get_if<double>(&a.value)) {
    return std::bit_cast<uint64_t>(*x) == std::bit_cast<uint64_t>(std::get<double>(b.value));
  }
  if (const auto* x = std::get_if<GgufArray>(&a.value)) {
    const auto& y = std::get<GgufArray>(b.value);
    return x->element_type == y.element_type && x->items == y.items;
  }
  if (const auto* x = std::get_if<uint64_t>(&a.value)) return *x == std::get<uint64_t>(b.value);
  if (const auto* x = std::get_if<int64_t>(&a.value)) return *x == std::get<int64_t>(b.value);
  if (const auto* x = std::get_if<bool>(&a.value)) return *x == std::get<bool>(b.value);
  return std::get<std::string>(a.value) == std::get<std::string>(b.value);
}

std::string describe(const GgufValue& value) {
  if (value.type == GgufValueType::ARRAY) {
    const auto* a = std::get_if<GgufArray>(&value.value);
    if (a == nullptr) return "ARRAY (malformed)";
    return fmt::format("ARRAY of {} {}", a->items.size(), gguf_value_type_name(a->element_type));
  }
  return fmt::format("{} {}", gguf_value_type_name(value.type), value_text(value));
}

// ---- typed getters ---------------------------------------------------------------------------

namespace {

[[noreturn]] void wrong_type(const std::string& origin, const std::string& key, const GgufValue& v,
                             std::string_view wanted) {
  user_error(
      "GGUF file {}: key {} is {}, not {}; the file does not follow the layout qlora-train "
      "expects for this key (convert the model again with a current llama.cpp)",
      origin, quote_text(key), describe(v), wanted);
}

// An integer value (any integer type) as int64 when `want_signed`, else as uint64 (in the
// uint64 slot); nullopt-like failure through `ok`.
bool integer_of(const GgufValue& v, bool want_signed, uint64_t& u, int64_t& i) {
  if (is_unsigned(v.type)) {
    const auto* p = std::get_if<uint64_t>(&v.value);
    if (p == nullptr) return false;
    if (want_signed) {
      if (*p > static_cast<uint64_t>(INT64_MAX)) return false;
      i = static_cast<int64_t>(*p);
    } else {
      u = *p;
    }
    return true;
  }
  if (is_signed(v.type)) {
    const auto* p = std::get_if<int64_t>(&v.value);
    if (p == nullptr) return false;
    if (want_signed) {
      i = *p;
    } else {
      if (*p < 0) return false;
      u = static_cast<uint64_t>(*p);
    }
    return true;
  }
  return false;
}

const GgufArray& array_of(const std::string& origin, const std::string& key, const GgufValue& v,
                          std::string_view wanted, bool (*element_ok)(GgufValueType)) {
  const auto* a = std::get_if<GgufArray>(&v.value);
  if (v.type != GgufValueType::ARRAY || a == nullptr || !element_ok(a->element_type)) {
    wrong_type(origin, key, v, wanted);
  }
  return *a;
}

}  // namespace

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

namespace {
const GgufValue& require_key(const GgufFile& file, const std::string& key) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) {
    user_error(
        "GGUF file {} has no metadata key {} (it has {} keys); the file is incomplete or made "
        "for another program: convert the model again with a current llama.cpp",
        file.origin(), quote_text(key), file.metadata().size());
  }
  return *v;
}
}  // namespace

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = require_key(*this, key);
  const auto* s = std::get_if<std::string>(&v.value);
  if (v.type != GgufValueType::STRING || s == nullptr) wrong_type(origin_, key, v, "a STRING");
  return *s;
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  const GgufValue& v = require_key(*this, key);
  uint64_t u = 0;
  int64_t i = 0;
  if (!integer_of(v, false, u, i)) wrong_type(origin_, key, v, "a non-negative integer");
  return u;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = require_key(*this, key);
  uint64_t u = 0;
  int64_t i = 0;
  if (!integer_of(v, true, u, i)) wrong_type(origin_, key, v, "an integer (within int64)");
  return i;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = require_key(*this, key);
  const auto* d = std::get_if<double>(&v.value);
  if (!is_float(v.type) || d == nullptr) wrong_type(origin_, key, v, "a FLOAT32 or FLOAT64");
  return *d;
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = require_key(*this, key);
  const auto* b = std::get_if<bool>(&v.value);
  if (v.type != GgufValueType::BOOL || b == nullptr) wrong_type(origin_, key, v, "a BOOL");
  return *b;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue& v = require_key(*this, key);
  const GgufArray& a = array_of(origin_, key, v, "an ARRAY of STRING",
                                [](GgufValueType t) { return t == GgufValueType::STRING; });
  std::vector<std::string> out;
  out.reserve(a.items.size());
  for (const GgufValue& item : a.items) {
    const auto* s = std::get_if<std::string>(&item.value);
    if (s == nullptr) wrong_type(origin_, key, v, "an ARRAY of STRING");
    out.push_back(*s);
  }
  return out;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue& v = require_key(*this, key);
  const GgufArray& a = array_of(origin_, key, v, "an ARRAY of FLOAT32 or FLOAT64", is_float);
  std::vector<double> out;
  out.reserve(a.items.size());
  for (const GgufValue& item : a.items) {
    const auto* d = std::get_if<double>(&item.value);
    if (d == nullptr) wrong_type(origin_, key, v, "an ARRAY of FLOAT32 or FLOAT64");
    out.push_back(*d);
  }
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue& v = require_key(*this, key);
  const GgufArray& a = array_of(origin_, key, v, "an ARRAY of integers",
                                [](GgufValueType t) { return is_unsigned(t) || is_signed(t); });
  std::vector<int64_t> out;
  out.reserve(a.items.size());
  for (size_t j = 0; j < a.items.size(); ++j) {
    uint64_t u = 0;
    int64_t i = 0;
    if (!integer_of(a.items[j], true, u, i)) {
      user_error("GGUF file {}: element {} of key {} is {}, beyond int64; the file is corrupt",
                 origin_, j, quote_text(key), describe(a.items[j]));
    }
    out.push_back(i);
  }
  return out;
}

}  // namespace qlt::io
