// GGUF reader: parses and validates the header, metadata and tensor infos of a mapped file
// (layout in gguf.h; docs/gguf.md of the ggml repository). Nothing read from the file is used
// before it is checked: every count is bounded by the bytes left before anything is reserved,
// every length and offset by the file size, every product by overflow checks.
#include "io/gguf.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <numeric>

#include "core/errors.h"
#include "io/gguf_internal.h"
#include "io/mapped_file.h"

namespace qlt::io {
namespace {

namespace fs = std::filesystem;
using gguf_detail::kFixCorrupt;
using gguf_detail::quote_text;

static_assert(std::endian::native == std::endian::little,
              "GGUF files are little-endian; a big-endian host would need byte swaps");

constexpr std::string_view kMagic = "GGUF";
using gguf_detail::kDefaultAlignment;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
constexpr std::string_view kAlignmentKey = "general.alignment";
constexpr std::string_view kFixConvert =
    "convert the model again with a current llama.cpp (convert_hf_to_gguf.py)";

// The fewest bytes one value of `type` takes in the file: bounds an array's element count
// by the bytes left before anything is allocated for it.
uint64_t min_value_bytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::UINT8:
    case GgufValueType::INT8:
    case GgufValueType::BOOL:
      return 1;
    case GgufValueType::UINT16:
    case GgufValueType::INT16:
      return 2;
    case GgufValueType::UINT32:
    case GgufValueType::INT32:
    case GgufValueType::FLOAT32:
      return 4;
    case GgufValueType::UINT64:
    case GgufValueType::INT64:
    case GgufValueType::FLOAT64:
    case GgufValueType::STRING:  // u64 length
      return 8;
    case GgufValueType::ARRAY:  // u32 element type + u64 count
      return 12;
  }
  return 1;
}

constexpr uint64_t kMinKvBytes = 8 + 4 + 1;                  // empty key, type, one byte
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, 1 dim, type, offset

// Everything parse() learns, moved into the GgufFile at the end.
struct Parsed {
  uint32_t version = 0;
  uint64_t alignment = kDefaultAlignment;
  uint64_t data_offset = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::map<std::string, size_t> metadata_index;
  std::vector<GgufTensorInfo> tensors;
  std::map<std::string, size_t> tensor_index;
};

// Where a metadata value sits: the key and, inside (nested) arrays, the element indices.
struct ValuePath {
  const std::string& key;
  std::vector<uint64_t> indices;
  std::string text() const {
    std::string out = "key " + quote_text(key);
    for (size_t i = 0; i < indices.size(); ++i) {
      out += fmt::format("{}[{}]", i == 0 ? " element " : "", indices[i]);
    }
    return out;
  }
};

class Parser {
 public:
  Parser(std::span<const uint8_t> bytes, const std::string& origin)
      : bytes_(bytes), size_(bytes.size()), origin_(origin) {}

  Parsed run() {
    read_header();
    read_metadata();
    read_alignment();
    read_tensor_infos();
    place_tensor_data();
    return std::move(out_);
  }

 private:
  // "bad GGUF file F: WHERE (byte N): WHAT; FIX". `where` names the key or tensor.
  [[noreturn]] void fail(std::string_view where, uint64_t at, std::string_view what,
                         std::string_view fix = kFixCorrupt) const {
    user_error("bad GGUF file {}: {} (byte {}): {}; {}", origin_, where, at, what, fix);
  }

  uint64_t left() const { return size_ - pos_; }

  // The next `n` bytes exist; else a truncation error naming `where` and what was being read.
  template <typename Where>
  void need(uint64_t n, const Where& where, std::string_view what) const {
    if (n > left()) {
      fail(where(), pos_,
           fmt::format("the file ends there ({} bytes long) but {} takes {} bytes", size_, what, n),
           "the file is truncated; re-download it or convert the model again");
    }
  }

  template <typename T, typename Where>
  T read(const Where& where, std::string_view what) {
    need(sizeof(T), where, what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  template <typename Where>
  std::string read_string(const Where& where, std::string_view what, uint64_t max_bytes) {
    const uint64_t at = pos_;
    const auto n = read<uint64_t>(where, "a string length (u64)");
    if (n > max_bytes) {
      fail(where(), at,
           fmt::format("{} is {} bytes long; at most {} are allowed", what, n, max_bytes));
    }
    if (n > left()) {
      fail(where(), at,
           fmt::format("{} claims {} bytes but only {} are left in the file ({} bytes long)", what,
                       n, left(), size_),
           "the file is truncated or corrupt; re-download it or convert the model again");
    }
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return s;
  }

  void count_values(uint64_t n, const ValuePath& path, uint64_t at) {
    if (n > kMaxMetadataValues - values_) {
      fail(path.text(), at,
           fmt::format("the metadata would hold more than {} values (arrays counted by element)",
                       kMaxMetadataValues),
           "no real model has that many; the file is corrupt, re-download it");
    }
    values_ += n;
  }

  // ---- header ------------------------------------------------------------------------------

  void read_header() {
    const auto where = [] { return std::string("the header"); };
    if (size_ < kMagic.size() || std::memcmp(bytes_.data(), kMagic.data(), kMagic.size()) != 0) {
      const std::string_view start(reinterpret_cast<const char*>(bytes_.data()),
                                   std::min<size_t>(size_, 4));
      // The magics of GGUF's predecessors (u32 'ggml', 'ggmf', 'ggjt' stored little-endian).
      if (start == "lmgg" || start == "fmgg" || start == "tjgg") {
        fail(where(), 0, "this is a GGML/GGMF/GGJT file, the format before GGUF",
             "convert it to GGUF with llama.cpp (convert_llama_ggml_to_gguf.py), or convert the "
             "original model again");
      }
      fail(where(), 0,
           fmt::format("the file ({} bytes) does not start with the magic \"GGUF\" (it starts "
                       "with {})",
                       size_, quote_text(start)),
           "it is not a GGUF file; point model.path at a .gguf file or a Hugging Face model "
           "folder");
    }
    pos_ = kMagic.size();
    const uint64_t version_at = pos_;
    const auto version = read<uint32_t>(where, "the version (u32)");
    if (version != 0 && (version & 0xFFFFu) == 0) {
      fail(where(), version_at,
           fmt::format("version field {:#010x} looks like a big-endian GGUF file", version),
           "qlora-train reads little-endian files only; convert it with the gguf package's "
           "gguf_convert_endian.py");
    }
    if (version == 1) {
      fail(where(), version_at, "GGUF version 1 (32-bit counts) is no longer supported",
           kFixConvert);
    }
    if (version != 2 && version != 3) {
      fail(where(), version_at,
           fmt::format("GGUF version {} is not supported (versions 2 and 3 are)", version),
           version > 3 ? "the file is newer than this qlora-train; convert the model with a "
                         "llama.cpp of the same age as qlora-train, or update qlora-train"
                       : kFixCorrupt);
    }
    out_.version = version;
    const uint64_t counts_at = pos_;
    n_tensors_ = read<uint64_t>(where, "the tensor count (u64)");
    n_kv_ = read<uint64_t>(where, "the metadata count (u64)");
    // Bounded before anything is reserved: each entry takes a minimum number of bytes.
    if (n_kv_ > left() / kMinKvBytes) {
      fail(where(), counts_at + 8,
           fmt::format("it claims {} metadata entries, but the {} bytes left hold at most {}",
                       n_kv_, left(), left() / kMinKvBytes));
    }
    if (n_tensors_ > left() / kMinTensorInfoBytes) {
      fail(where(), counts_at,
           fmt::format("it claims {} tensors, but the {} bytes left hold at most {} tensor infos",
                       n_tensors_, left(), left() / kMinTensorInfoBytes));
    }
  }

  // ---- metadata ----------------------------------------------------------------------------

  void read_metadata() {
    out_.metadata.reserve(n_kv_);
    key_offsets_.reserve(n_kv_);
    for (uint64_t i = 0; i < n_kv_; ++i) {
      const uint64_t at = pos_;
      const auto where_key = [&] {
        return i == 0 ? std::string("metadata entry #0")
                      : fmt::format("metadata entry #{} (after key {})", i,
                                    quote_text(out_.metadata.back().first));
      };
      std::string key = read_string(where_key, "the key", kMaxKeyBytes);
      if (const auto it = out_.metadata_index.find(key); it != out_.metadata_index.end()) {
        fail("key " + quote_text(key), at,
             fmt::format("the key appears twice (metadata entries #{} and #{})", it->second, i),
             "a GGUF file holds each key once; the tool that wrote it is broken: " +
                 std::string(kFixConvert));
      }
      ValuePath path{key, {}};
      const auto where = [&] { return path.text(); };
      const uint64_t type_at = pos_;
      const auto type_id = read<uint32_t>(where, "the value type (u32)");
      if (!is_gguf_value_type(type_id)) {
        fail(where(), type_at,
             fmt::format("unknown value type id {} (GGUF defines 0 to 12)", type_id));
      }
      count_values(1, path, at);
      GgufValue value = read_value(static_cast<GgufValueType>(type_id), path, 0);
      out_.metadata_index.emplace(key, out_.metadata.size());
      key_offsets_.push_back(at);
      out_.metadata.emplace_back(std::move(key), std::move(value));
    }
  }

  // One value of `type` at pos_. `depth` = arrays around it (0 for a key's own value).
  GgufValue read_value(GgufValueType type, ValuePath& path, int depth) {
    const auto where = [&] { return path.text(); };
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufValueType::UINT8:
        v.value = uint64_t{read<uint8_t>(where, "a UINT8")};
        break;
      case GgufValueType::INT8:
        v.value = int64_t{read<int8_t>(where, "an INT8")};
        break;
      case GgufValueType::UINT16:
        v.value = uint64_t{read<uint16_t>(where, "a UINT16")};
        break;
      case GgufValueType::INT16:
        v.value = int64_t{read<int16_t>(where, "an INT16")};
        break;
      case GgufValueType::UINT32:
        v.value = uint64_t{read<uint32_t>(where, "a UINT32")};
        break;
      case GgufValueType::INT32:
        v.value = int64_t{read<int32_t>(where, "an INT32")};
        break;
      case GgufValueType::UINT64:
        v.value = read<uint64_t>(where, "a UINT64");
        break;
      case GgufValueType::INT64:
        v.value = read<int64_t>(where, "an INT64");
        break;
      case GgufValueType::FLOAT32:
        v.value = double{read<float>(where, "a FLOAT32")};
        break;
      case GgufValueType::FLOAT64:
        v.value = read<double>(where, "a FLOAT64");
        break;
      case GgufValueType::BOOL: {
        const uint64_t at = pos_;
        const auto b = read<uint8_t>(where, "a BOOL");
        if (b > 1) fail(where(), at, fmt::format("a BOOL byte is {}, not 0 or 1", b));
        v.value = b == 1;
        break;
      }
      case GgufValueType::STRING:
        v.value = read_string(where, "the string", UINT64_MAX);
        break;
      case GgufValueType::ARRAY:
        v.value = read_array(path, depth + 1);
        break;
    }
    return v;
  }

  // An array at nesting `depth` (1 = the key's own value).
  GgufArray read_array(ValuePath& path, int depth) {
    const auto where = [&] { return path.text(); };
    const uint64_t at = pos_;
    const auto type_id = read<uint32_t>(where, "the array element type (u32)");
    if (!is_gguf_value_type(type_id)) {
      fail(where(), at,
           fmt::format("unknown array element type id {} (GGUF defines 0 to 12)", type_id));
    }
    GgufArray a;
    a.element_type = static_cast<GgufValueType>(type_id);
    if (a.element_type == GgufValueType::ARRAY && depth + 1 > kMaxArrayDepth) {
      fail(where(), at, fmt::format("arrays are nested deeper than {} levels", kMaxArrayDepth),
           "no real model nests arrays; the file is corrupt, re-download it");
    }
    const uint64_t count_at = pos_;
    const auto count = read<uint64_t>(where, "the array length (u64)");
    const uint64_t min_bytes = min_value_bytes(a.element_type);
    if (count > left() / min_bytes) {
      fail(where(), count_at,
           fmt::format("an array of {} {} (at least {} bytes each) does not fit in the {} bytes "
                       "left in the file",
                       count, gguf_value_type_name(a.element_type), min_bytes, left()),
           "the file is truncated or corrupt; re-download it or convert the model again");
    }
    count_values(count, path, count_at);
    a.items.reserve(count);
    path.indices.push_back(0);
    for (uint64_t j = 0; j < count; ++j) {
      path.indices.back() = j;
      a.items.push_back(read_value(a.element_type, path, depth));
    }
    path.indices.pop_back();
    return a;
  }

  void read_alignment() {
    const auto it = out_.metadata_index.find(std::string(kAlignmentKey));
    if (it == out_.metadata_index.end()) return;
    const GgufValue& v = out_.metadata[it->second].second;
    const std::string where = "key " + quote_text(kAlignmentKey);
    const uint64_t at = key_offsets_[it->second];
    if (v.type != GgufValueType::UINT32) {
      fail(where, at, fmt::format("it is {}, not a UINT32", describe(v)), kFixConvert);
    }
    const uint64_t a = std::get<uint64_t>(v.value);
    if (!std::has_single_bit(a)) {
      fail(where, at, fmt::format("the alignment {} is not a power of two", a), kFixConvert);
    }
    out_.alignment = a;
  }

  // ---- tensor infos ------------------------------------------------------------------------

  void read_tensor_infos() {
    out_.tensors.reserve(n_tensors_);
    info_offsets_.reserve(n_tensors_);
    for (uint64_t t = 0; t < n_tensors_; ++t) {
      const uint64_t at = pos_;
      const auto where_info = [&] {
        return t == 0 ? std::string("tensor info #0")
                      : fmt::format("tensor info #{} (after tensor {})", t,
                                    quote_text(out_.tensors.back().name));
      };
      GgufTensorInfo info;
      info.name = read_string(where_info, "the tensor name", UINT64_MAX);
      const std::string where_name = "tensor " + quote_text(info.name);
      const auto where = [&] { return where_name; };
      if (const auto it = out_.tensor_index.find(info.name); it != out_.tensor_index.end()) {
        fail(where_name, at,
             fmt::format("the name appears twice (tensor infos #{} and #{})", it->second, t),
             "a GGUF file holds each tensor once; the tool that wrote it is broken: " +
                 std::string(kFixConvert));
      }
      const uint64_t dims_at = pos_;
      const auto n_dims = read<uint32_t>(where, "the number of dimensions (u32)");
      if (n_dims == 0 || n_dims > kMaxDims) {
        fail(where_name, dims_at,
             fmt::format("it has {} dimensions; GGUF tensors have 1 to {}", n_dims, kMaxDims));
      }
      int64_t numel = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t dim_at = pos_;
        const auto dim = read<uint64_t>(where, "a dimension (u64)");
        if (dim == 0) {
          fail(where_name, dim_at,
               fmt::format("dimension {} (ne[{}]) is 0; every dimension must be at least 1", d, d));
        }
        if (dim > static_cast<uint64_t>(INT64_MAX)) {
          fail(where_name, dim_at,
               fmt::format("dimension {} (ne[{}]) is {} ({} as a signed 64-bit number)", d, d, dim,
                           static_cast<int64_t>(dim)));
        }
        info.dims.push_back(static_cast<int64_t>(dim));
        if (__builtin_mul_overflow(numel, static_cast<int64_t>(dim), &numel)) {
          fail(where_name, dims_at,
               fmt::format("the dimensions {} hold more than 2^63 - 1 elements",
                           fmt::join(info.dims, " x ")));
        }
      }
      const uint64_t type_at = pos_;
      const auto type_id = read<uint32_t>(where, "the ggml type (u32)");
      const auto traits = ggml_type_traits(type_id);
      if (!traits) {
        if (const auto removed = ggml_removed_type_name(type_id)) {
          fail(where_name, type_at,
               fmt::format("ggml type {} ({}) was removed from ggml and GGUF", type_id, *removed),
               kFixConvert);
        }
        fail(where_name, type_at, fmt::format("unknown ggml type id {}", type_id),
             "the file is corrupt, or needs a newer program than this qlora-train");
      }
      info.type = traits->type;
      if (info.dims[0] % traits->block_elements != 0) {
        fail(where_name, dims_at,
             fmt::format("its rows (ne[0]) of {} elements are not a multiple of the {} block "
                         "of {} elements",
                         info.dims[0], traits->name, traits->block_elements));
      }
      const uint64_t blocks = static_cast<uint64_t>(numel / traits->block_elements);
      if (__builtin_mul_overflow(blocks, static_cast<uint64_t>(traits->block_bytes),
                                 &info.nbytes)) {
        fail(where_name, dims_at,
             fmt::format("{} blocks of {} bytes overflow a 64-bit size", blocks,
                         traits->block_bytes));
      }
      const uint64_t offset_at = pos_;
      info.offset = read<uint64_t>(where, "the data offset (u64)");
      if (info.offset % out_.alignment != 0) {
        fail(where_name, offset_at,
             fmt::format("its data offset {} is not a multiple of the alignment {}", info.offset,
                         out_.alignment));
      }
      out_.tensor_index.emplace(info.name, out_.tensors.size());
      info_offsets_.push_back(at);
      out_.tensors.push_back(std::move(info));
    }
  }

  // The data section starts at the next multiple of the alignment after the tensor infos;
  // every tensor's bytes must lie in the file, and no two tensors may share a byte.
  void place_tensor_data() {
    const uint64_t a = out_.alignment;
    out_.data_offset = pos_ + (a - pos_ % a) % a;  // pos_ <= size_, a <= 2^31: no overflow
    for (size_t t = 0; t < out_.tensors.size(); ++t) {
      const GgufTensorInfo& info = out_.tensors[t];
      const uint64_t data_bytes = out_.data_offset <= size_ ? size_ - out_.data_offset : 0;
      if (out_.data_offset > size_ || info.offset > data_bytes ||
          info.nbytes > data_bytes - info.offset) {
        uint64_t file_byte = 0;
        const bool past_u64 = __builtin_add_overflow(out_.data_offset, info.offset, &file_byte);
        fail("tensor " + quote_text(info.name), info_offsets_[t],
             fmt::format("its data ({} bytes of {} [{}] at data offset {}, file byte {}) "
                         "reaches past the end of the file ({} bytes; the data section starts "
                         "at byte {})",
                         info.nbytes, ggml_type_name(static_cast<uint32_t>(info.type)),
                         fmt::join(info.dims, ", "), info.offset,
                         past_u64 ? std::string("beyond 2^64") : std::to_string(file_byte), size_,
                         out_.data_offset),
             "the file is truncated or corrupt; re-download it or convert the model again");
      }
    }
    std::vector<size_t> order(out_.tensors.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
      return out_.tensors[x].offset < out_.tensors[y].offset;
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const GgufTensorInfo& prev = out_.tensors[order[k - 1]];
      const GgufTensorInfo& cur = out_.tensors[order[k]];
      if (cur.offset < prev.offset + prev.nbytes) {  // in the file: no overflow
        fail("tensor " + quote_text(cur.name), info_offsets_[order[k]],
             fmt::format("its data [{}, {}) overlaps that of tensor {} [{}, {}) (data offsets)",
                         cur.offset, cur.offset + cur.nbytes, quote_text(prev.name), prev.offset,
                         prev.offset + prev.nbytes));
      }
    }
  }

  std::span<const uint8_t> bytes_;
  uint64_t size_;
  const std::string& origin_;
  uint64_t pos_ = 0;
  uint64_t n_tensors_ = 0, n_kv_ = 0;
  uint64_t values_ = 0;  // metadata values so far, array elements included
  std::vector<uint64_t> key_offsets_, info_offsets_;  // file offsets, for messages
  Parsed out_;
};

}  // namespace

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (const int64_t d : dims) n *= d;  // checked against overflow when read
  return n;
}

std::vector<int64_t> GgufTensorInfo::torch_shape() const { return {dims.rbegin(), dims.rend()}; }

GgufFile GgufFile::parse(std::span<const uint8_t> bytes, const std::string& origin) {
  Parsed p = Parser(bytes, origin).run();
  GgufFile f;
  f.bytes_ = bytes;
  f.origin_ = origin;
  f.version_ = p.version;
  f.alignment_ = p.alignment;
  f.data_offset_ = p.data_offset;
  f.metadata_ = std::move(p.metadata);
  f.metadata_index_ = std::move(p.metadata_index);
  f.tensors_ = std::move(p.tensors);
  f.tensor_index_ = std::move(p.tensor_index);
  return f;
}

GgufFile GgufFile::open(const fs::path& path) {
  auto file = MappedFile::open(path);
  GgufFile f = parse({file->data(), file->size()}, path.string());
  f.file_ = std::move(file);
  return f;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  if (const GgufTensorInfo* info = find_tensor(name)) return *info;
  user_error(
      "GGUF file {} has no tensor {} (it holds {} tensors); the file is incomplete or holds "
      "another architecture: convert the model again with a current llama.cpp",
      origin_, quote_text(name), tensors_.size());
}

std::span<const uint8_t> GgufFile::tensor_bytes(const GgufTensorInfo& info) const {
  return bytes_.subspan(data_offset_ + info.offset, info.nbytes);  // in bounds: checked at parse
}

void GgufFile::release(const GgufTensorInfo& info) const {
  if (file_) file_->release(data_offset_ + info.offset, info.nbytes);
}

bool is_gguf_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string_view(magic, 4) == kMagic;
}

}  // namespace qlt::io
