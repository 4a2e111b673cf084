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
// overflow-checked against the mapped file before it is used (a count is bounded by the bytes
// left before anything is reserved for it, so a 1 KB file claiming a 2^60-element array costs
// nothing), and a bad file is a UserError "bad GGUF file F: key 'K' (byte N): what; how to
// fix" naming the file and the key or tensor (exit 2), never a crash or an out-of-bounds read.
// Refused: bad magic (an old GGML/GGJT file is named as such); a version other than 2 or 3
// (a byte-swapped version is named as a big-endian file); truncation anywhere; a duplicate key
// or tensor name; a key over kMaxKeyBytes; an unknown metadata value type; a BOOL byte other
// than 0 or 1; arrays nested deeper than kMaxArrayDepth; more than kMaxMetadataValues values;
// a general.alignment that is not a UINT32 power of two; an unknown or removed ggml type; 0 or
// more than 4 dims; a dim < 1 (or > INT64_MAX, "negative") or dims whose product overflows
// int64; a row size (ne[0]) that is not a multiple of the type's block; a byte size that
// overflows; tensor data that is misaligned or outside the file; tensors whose data overlap.
// Not checked: that strings are UTF-8 and keys lower_snake_case (docs/gguf.md asks for both;
// real files are read as they are); that the data of tensors is what its type allows (NaN
// scales etc.: the dequantizers and the loader's finite check see to that).
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
// True for a type id the format defines (0..12).
bool is_gguf_value_type(uint32_t type_id);

// Arrays of arrays of ... (the spec allows nesting; no real file nests at all): an array at
// depth 1 may hold arrays down to depth kMaxArrayDepth.
inline constexpr int kMaxArrayDepth = 8;
// Metadata values in one file, array elements included (each costs ~48 bytes in memory). The
// largest real vocabularies (262k tokens plus 500k merges) hold < 2 M; the cap keeps a small
// file that claims huge arrays from costing gigabytes.
inline constexpr uint64_t kMaxMetadataValues = uint64_t{1} << 24;
// Longest key (docs/gguf.md: "at most 2^16-1 bytes").
inline constexpr uint64_t kMaxKeyBytes = 65535;

struct GgufValue;
struct GgufArray {
  GgufValueType element_type = GgufValueType::UINT8;
  std::vector<GgufValue> items;  // each of type element_type
};

// One metadata value. `type` is the stored type; the value is held as
//   uint64_t     UINT8, UINT16, UINT32, UINT64
//   int64_t      INT8, INT16, INT32, INT64
//   double       FLOAT32 (exactly the stored float), FLOAT64
//   bool         BOOL
//   std::string  STRING (bytes as stored; GGUF says UTF-8, the reader does not check)
//   GgufArray    ARRAY
// Build values with the factories (GgufValue::u32(7), GgufValue::array(...)); the writer
// refuses a value whose alternative or range does not fit its type.
struct GgufValue {
  GgufValueType type = GgufValueType::UINT8;
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> value;

  static GgufValue u8(uint8_t v) { return {GgufValueType::UINT8, uint64_t{v}}; }
  static GgufValue i8(int8_t v) { return {GgufValueType::INT8, int64_t{v}}; }
  static GgufValue u16(uint16_t v) { return {GgufValueType::UINT16, uint64_t{v}}; }
  static GgufValue i16(int16_t v) { return {GgufValueType::INT16, int64_t{v}}; }
  static GgufValue u32(uint32_t v) { return {GgufValueType::UINT32, uint64_t{v}}; }
  static GgufValue i32(int32_t v) { return {GgufValueType::INT32, int64_t{v}}; }
  static GgufValue f32(float v) { return {GgufValueType::FLOAT32, double{v}}; }
  static GgufValue boolean(bool v) { return {GgufValueType::BOOL, v}; }
  static GgufValue str(std::string v) { return {GgufValueType::STRING, std::move(v)}; }
  static GgufValue u64(uint64_t v) { return {GgufValueType::UINT64, v}; }
  static GgufValue i64(int64_t v) { return {GgufValueType::INT64, v}; }
  static GgufValue f64(double v) { return {GgufValueType::FLOAT64, v}; }
  static GgufValue array(GgufValueType element_type, std::vector<GgufValue> items) {
    return {GgufValueType::ARRAY, GgufArray{element_type, std::move(items)}};
  }
  static GgufValue string_array(const std::vector<std::string>& items);
};

// Same type, same value; floats compare by bit pattern (NaN == NaN of the same bits), so a
// value read back from a file equals what was written.
bool operator==(const GgufValue& a, const GgufValue& b);
// "UINT32 7", "STRING \"llama\"", "ARRAY of 3 STRING", ... for messages (short; strings and
// long arrays abridged, bytes that are not printable ASCII escaped).
std::string describe(const GgufValue& value);

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
  // Maps and validates `path`. UserError on any malformed content (see above). The bytes are
  // mapped (io/mapped_file.h), not read: tensor_bytes() pages them in when touched.
  static GgufFile open(const std::filesystem::path& path);
  // Parses a file already in memory (the fuzz harness; tests of crafted bytes). `origin`
  // names it in errors. The bytes must outlive the GgufFile.
  static GgufFile parse(std::span<const uint8_t> bytes, const std::string& origin);

  const std::string& origin() const { return origin_; }  // the path, or parse()'s origin
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
  uint64_t size() const { return bytes_.size(); }        // bytes in the file

  // Metadata in file order, and by key.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;  // nullptr when absent

  // Typed accessors. A missing key or a value of another type is a UserError naming the key,
  // the value found and the file. Integer getters accept any integer type (not BOOL) whose
  // value fits; get_float accepts FLOAT32 and FLOAT64; the array getters want an ARRAY of
  // STRING / of FLOAT32 or FLOAT64 / of integers.
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
  // or a copy of it lives). `info` must be one of this file's tensors().
  std::span<const uint8_t> tensor_bytes(const GgufTensorInfo& info) const;
  // Drops the tensor's pages from memory once a loader has decoded it into a copy
  // (MappedFile::release; nothing for parse()d bytes).
  void release(const GgufTensorInfo& info) const;

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

// True when `path` is a readable file that starts with the GGUF magic (the loader's test for
// "is this a GGUF file"); never throws.
bool is_gguf_file(const std::filesystem::path& path);

}  // namespace qlt::io
