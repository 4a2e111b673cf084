// GGUF: memory-mapped reader (versions 2 and 3), the file format of llama.cpp and ollama.
//
// Layout (docs/gguf.md in the ggml repository): magic "GGUF", u32 version, u64 tensor count,
// u64 metadata count, then the metadata key/value pairs, then the tensor infos (name, u32
// n_dims, n_dims x u64 dims with ne[0] the fastest-varying, u32 ggml type, u64 offset), then
// padding to `general.alignment` (default 32), then the tensor data; tensor offsets are
// relative to the start of the data and multiples of the alignment. All little-endian.
// Strings are u64 length + bytes (no terminator). Version 1 (u32 counts) is refused.
//
// The reader never trusts the file: every count, length, offset and size is bounds- and
// overflow-checked against the mapped file before it is used, and a bad file is a UserError
// naming the file and the key or tensor (exit 2), never a crash or an out-of-bounds read.
// Refused: bad magic; a version other than 2 or 3; truncation anywhere; a duplicate key or
// tensor name; an unknown metadata value type; arrays nested deeper than kMaxArrayDepth; a
// general.alignment that is not a power of two (or not u32); an unknown ggml type; more than
// 4 dims; a dim < 1 or dims whose product overflows int64; a row size (ne[0]) that is not a
// multiple of the type's block; tensor data that is misaligned or outside the file; tensors
// whose data overlap.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "io/ggml_types.h"

namespace qlt::io {

class MappedFile;

// The metadata value types of the format (gguf_metadata_value_type).
enum class GgufValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
std::string_view gguf_value_type_name(GgufValueType type);  // "UINT32", "ARRAY", ...

inline constexpr int kMaxArrayDepth = 8;  // arrays of arrays of ... (the spec allows nesting)

struct GgufValue;
struct GgufArray {
  GgufValueType element_type = GgufValueType::UINT8;
  std::vector<GgufValue> items;
};

// One metadata value. Integers keep their stored type in `type` and their value in u (unsigned
// types and BOOL) or i (signed types); FLOAT32/FLOAT64 in f; STRING in s; ARRAY in a.
struct GgufValue {
  GgufValueType type = GgufValueType::UINT8;
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // GGUF order: dims[0] (ne[0]) varies fastest; 1 to 4 of them
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // relative to the data section (a multiple of the alignment)
  uint64_t nbytes = 0;  // numel / block_elements * block_bytes, checked against the file
  int64_t numel() const;
  // The PyTorch (row-major) shape: dims reversed, e.g. a [out, in] matrix is dims {in, out}.
  std::vector<int64_t> torch_shape() const;
};

class GgufFile {
 public:
  // Maps and validates `path`. UserError on any malformed content (see above).
  static GgufFile open(const std::filesystem::path& path);
  // Parses a file already in memory (the fuzz harness; tests of crafted bytes). `origin`
  // names it in errors. The bytes must outlive the GgufFile.
  static GgufFile parse(std::span<const uint8_t> bytes, const std::string& origin);

  const std::string& origin() const { return origin_; }  // the path, or parse()'s origin
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section

  // Metadata in file order, and by key.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;  // nullptr when absent

  // Typed accessors. A missing key or a value of another type is a UserError naming the key,
  // the type found and the file. Integer getters accept any integer type whose value fits.
  std::string get_string(const std::string& key) const;
  uint64_t get_uint(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;  // FLOAT32 / FLOAT64
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;

  // Tensors in file order, and by name.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;  // nullptr when absent
  const GgufTensorInfo& tensor(const std::string& name) const;  // UserError naming it if absent
  // The tensor's bytes inside the mapping (bounds checked at open; valid while this object
  // or a copy of it lives).
  std::span<const uint8_t> tensor_bytes(const GgufTensorInfo& info) const;

 private:
  std::shared_ptr<MappedFile> file_;  // null for parse()
  std::span<const uint8_t> bytes_;
  std::string origin_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// True when `path` starts with the GGUF magic (the loader's test for "is this a GGUF file").
bool is_gguf_file(const std::filesystem::path& path);

}  // namespace qlt::io
