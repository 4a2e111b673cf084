// Helpers for the GGUF tests: raw GGUF bytes built field by field (so that malformed files can
// be written exactly, nothing is checked here), a small valid model-like file from the
// writer, and parse-from-memory wrappers.
#pragma once

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/safetensors_test_util.h"  // TempDir, write_bytes, read_bytes, require_user_error

namespace qlt::test::gguf {

using io::GgmlType;
using io::GgufValue;
using io::GgufValueType;
using io::GgufWriter;

// Little-endian field encoders.
template <typename T>
std::string le(T v) {
  std::string out(sizeof(T), '\0');
  std::memcpy(out.data(), &v, sizeof(T));
  return out;
}
inline std::string u32(uint32_t v) { return le(v); }
inline std::string u64(uint64_t v) { return le(v); }
inline std::string gstr(std::string_view s) { return u64(s.size()) + std::string(s); }

// One metadata entry: key, type id, value bytes (as given, unchecked).
inline std::string kv(std::string_view key, uint32_t type, const std::string& value) {
  return gstr(key) + u32(type) + value;
}
inline std::string kv(std::string_view key, GgufValueType type, const std::string& value) {
  return kv(key, static_cast<uint32_t>(type), value);
}
inline std::string kv_u32(std::string_view key, uint32_t v) {
  return kv(key, GgufValueType::UINT32, u32(v));
}
inline std::string kv_str(std::string_view key, std::string_view v) {
  return kv(key, GgufValueType::STRING, gstr(v));
}
// An array value: element type, count, element bytes.
inline std::string array_value(uint32_t element_type, uint64_t count, const std::string& items) {
  return u32(element_type) + u64(count) + items;
}

// One tensor info: name, n_dims, dims, type, offset.
inline std::string info(std::string_view name, const std::vector<uint64_t>& dims, uint32_t type,
                        uint64_t offset, std::optional<uint32_t> n_dims = std::nullopt) {
  std::string out = gstr(name) + u32(n_dims.value_or(static_cast<uint32_t>(dims.size())));
  for (const uint64_t d : dims) out += u64(d);
  return out + u32(type) + u64(offset);
}

// A whole file from raw parts. Counts default to the number of parts; padding to `alignment`
// before the data section.
struct RawGguf {
  std::string magic = "GGUF";
  uint32_t version = 3;
  std::optional<uint64_t> tensor_count, kv_count;
  std::vector<std::string> kvs;
  std::vector<std::string> infos;
  uint64_t alignment = 32;
  std::string data;

  std::string bytes() const {
    std::string out = magic + u32(version) + u64(tensor_count.value_or(infos.size())) +
                      u64(kv_count.value_or(kvs.size()));
    for (const auto& k : kvs) out += k;
    for (const auto& i : infos) out += i;
    out.append((alignment - out.size() % alignment) % alignment, '\0');
    return out + data;
  }
};

inline std::span<const uint8_t> as_span(const std::string& bytes) {
  return {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

inline io::GgufFile parse(const std::string& bytes, const std::string& origin = "test.gguf") {
  return io::GgufFile::parse(as_span(bytes), origin);
}

// `n` bytes 0, 1, 2, ... (mod 251): tensor data whose every byte is distinguishable.
inline std::vector<uint8_t> pattern(size_t n, uint8_t seed = 0) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>((i + seed) % 251);
  return out;
}

// A small llama-like file from the writer: strings, a token array, a nested array, an F32
// norm, a Q8_0 matrix and a Q4_1 matrix.
// The metadata of small_model_writer().
inline void add_small_model_metadata(io::GgufWriter& w) {
  w.add("general.architecture", GgufValue::str("llama"));
  w.add("general.name", GgufValue::str("tiny"));
  w.add("llama.block_count", GgufValue::u32(1));
  w.add("tokenizer.ggml.tokens", GgufValue::string_array({"<unk>", "<s>", "</s>", "hello"}));
  w.add("test.nested", GgufValue::array(GgufValueType::ARRAY,
                                        {GgufValue::array(GgufValueType::INT32,
                                                          {GgufValue::i32(1), GgufValue::i32(2)}),
                                         GgufValue::string_array({"x"})}));
}

inline io::GgufWriter small_model_writer() {
  io::GgufWriter w;
  add_small_model_metadata(w);
  w.add_tensor("output_norm.weight", GgmlType::F32, {8}, pattern(32));
  w.add_tensor("blk.0.attn_q.weight", GgmlType::Q8_0, {32, 2}, pattern(68, 1));
  w.add_tensor("blk.0.ffn_up.weight", GgmlType::Q4_1, {64, 1}, pattern(40, 2));
  return w;
}

using qlt::test::require_user_error;

}  // namespace qlt::test::gguf
