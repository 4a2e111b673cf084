// safetensors reader (validating header parser + zero-copy tensors on a private mapping),
// writer, and the sharded Hugging Face checkpoint. Layout rules follow the reference Rust
// implementation (huggingface/safetensors, safetensors/src/tensor.rs: Metadata::validate).
#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "core/errors.h"
#include "core/json_reader.h"
#include "io/atomic_file.h"
#include "io/mapped_file.h"

namespace qlt::io {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;  // keeps header order, which breaks ties between tensors

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; a big-endian host would need byte swaps");

constexpr uint64_t kLengthBytes = 8;               // u64 little-endian header length prefix
constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // same cap as the reference (MAX_HEADER_SIZE)
constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::string_view kSingleFileName = "model.safetensors";
constexpr std::string_view kIndexFileName = "model.safetensors.index.json";
constexpr std::string_view kFixCorruptSafetensors =
    "the file is truncated, corrupt or not a safetensors file; re-download or re-export it";

struct DtypeName {
  std::string_view name;
  at::ScalarType type;
};

// Every safetensors dtype that has an at::ScalarType of the same bit layout in LibTorch 2.11.
// Not supported: F4 and F6_* (sub-byte; their shapes count packed elements differently).
constexpr DtypeName kDtypes[] = {
    {"BOOL", at::ScalarType::Bool},
    {"U8", at::ScalarType::Byte},
    {"I8", at::ScalarType::Char},
    {"U16", at::ScalarType::UInt16},
    {"I16", at::ScalarType::Short},
    {"U32", at::ScalarType::UInt32},
    {"I32", at::ScalarType::Int},
    {"U64", at::ScalarType::UInt64},
    {"I64", at::ScalarType::Long},
    {"F16", at::ScalarType::Half},
    {"BF16", at::ScalarType::BFloat16},
    {"F32", at::ScalarType::Float},
    {"F64", at::ScalarType::Double},
    {"C64", at::ScalarType::ComplexFloat},
    {"F8_E4M3", at::ScalarType::Float8_e4m3fn},
    {"F8_E5M2", at::ScalarType::Float8_e5m2},
    {"F8_E8M0", at::ScalarType::Float8_e8m0fnu},
};

const DtypeName* find_dtype(std::string_view name) {
  for (const auto& d : kDtypes) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

std::string supported_dtypes() {
  std::string out;
  for (const auto& d : kDtypes) out += (out.empty() ? "" : ", ") + std::string(d.name);
  return out;
}

// Every complaint about a file's header goes through here, so all share one shape:
// "bad safetensors file PATH: tensor 'NAME': WHAT; FIX".
[[noreturn]] void header_error(const fs::path& path, std::string_view tensor, std::string_view what,
                               std::string_view fix = kFixCorruptSafetensors) {
  if (tensor.empty()) user_error("bad safetensors file {}: {}; {}", path.string(), what, fix);
  user_error("bad safetensors file {}: tensor '{}': {}; {}", path.string(), tensor, what, fix);
}

// A non-negative JSON integer (nlohmann parses those as number_unsigned; negative ones as
// number_integer; anything beyond u64 as a float).
uint64_t read_u64(const fs::path& path, std::string_view tensor, const Json& j,
                  std::string_view what) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer()) {
    header_error(path, tensor, fmt::format("{} is negative ({})", what, j.get<int64_t>()));
  }
  header_error(path, tensor,
               fmt::format("{} must be a non-negative integer, not {}", what, j.dump()));
}

// One header entry {"dtype": str, "shape": [u64...], "data_offsets": [begin, end]}, checked
// against itself and the data buffer size. Unknown extra keys are ignored (as the reference).
TensorInfo parse_entry(const fs::path& path, const std::string& name, const Json& entry,
                       uint64_t data_bytes) {
  if (!entry.is_object()) {
    header_error(path, name,
                 fmt::format("the entry must be a JSON object {{\"dtype\", \"shape\", "
                             "\"data_offsets\"}}, not {}",
                             entry.type_name()));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) header_error(path, name, fmt::format("\"{}\" is missing", key));
  }
  TensorInfo info;
  info.name = name;

  const Json& dtype = entry.at("dtype");
  if (!dtype.is_string()) {
    header_error(path, name, fmt::format("\"dtype\" must be a string, not {}", dtype.dump()));
  }
  info.dtype = dtype.get<std::string>();
  const DtypeName* known = find_dtype(info.dtype);
  if (known == nullptr) {
    header_error(path, name, fmt::format("dtype \"{}\" is not supported", info.dtype),
                 fmt::format("supported dtypes are {}; convert the tensor to one of them",
                             supported_dtypes()));
  }

  const Json& shape = entry.at("shape");
  if (!shape.is_array()) {
    header_error(path, name, fmt::format("\"shape\" must be an array, not {}", shape.dump()));
  }
  // numel = product of dims, kept <= INT64_MAX so that LibTorch can hold it.
  uint64_t numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    const uint64_t dim = read_u64(path, name, shape[i], fmt::format("shape[{}]", i));
    if (dim > static_cast<uint64_t>(INT64_MAX)) {
      header_error(path, name, fmt::format("shape[{}] = {} is too large", i, dim));
    }
    info.shape.push_back(static_cast<int64_t>(dim));
    overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
  }
  const uint64_t item = c10::elementSize(known->type);
  uint64_t nbytes = 0;
  if (overflow || numel > static_cast<uint64_t>(INT64_MAX) ||
      __builtin_mul_overflow(numel, item, &nbytes)) {
    header_error(path, name, fmt::format("shape {} has too many elements", shape.dump()));
  }

  const Json& offsets = entry.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) {
    header_error(
        path, name,
        fmt::format("\"data_offsets\" must be an array [begin, end], not {}", offsets.dump()));
  }
  info.begin = read_u64(path, name, offsets[0], "data_offsets[0] (begin)");
  info.end = read_u64(path, name, offsets[1], "data_offsets[1] (end)");
  if (info.begin > info.end) {
    header_error(path, name,
                 fmt::format("data_offsets [{}, {}] begin after they end", info.begin, info.end));
  }
  if (info.end > data_bytes) {
    header_error(path, name,
                 fmt::format("data_offsets [{}, {}] reach past the end of the {}-byte data buffer",
                             info.begin, info.end, data_bytes));
  }
  if (info.end - info.begin != nbytes) {
    header_error(
        path, name,
        fmt::format("shape {} of dtype {} needs {} bytes, but data_offsets [{}, {}] "
                    "hold {}",
                    shape.dump(), info.dtype, nbytes, info.begin, info.end, info.end - info.begin));
  }
  return info;
}

std::map<std::string, std::string> parse_metadata(const fs::path& path, const Json& j) {
  std::map<std::string, std::string> metadata;
  if (j.is_null()) return metadata;  // the reference's Option<HashMap> accepts null
  if (!j.is_object()) {
    header_error(
        path, "",
        fmt::format("\"__metadata__\" must be an object of strings, not {}", j.type_name()));
  }
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) {
      header_error(path, "",
                   fmt::format("\"__metadata__\" value of \"{}\" must be a string, not {}", key,
                               value.dump()));
    }
    metadata[key] = value.get<std::string>();
  }
  return metadata;
}

// Tensors sorted by (begin, end) must tile the data buffer exactly: no overlap (two tensors
// would alias one another's bytes), no gap, nothing after the last one. This is the
// reference's rule (InvalidOffset / MetadataIncompleteBuffer), so every file we accept, the
// Python library accepts too. Zero-size tensors sit anywhere on a boundary.
void check_coverage(const fs::path& path, std::vector<TensorInfo>& tensors, uint64_t data_bytes) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.begin < covered) {
      header_error(path, t.name,
                   fmt::format("data_offsets [{}, {}] overlap those of tensor '{}' [{}, {}]",
                               t.begin, t.end, previous->name, previous->begin, previous->end));
    }
    if (t.begin > covered) {
      header_error(path, t.name,
                   fmt::format("bytes [{}, {}) of the data buffer before it belong to no tensor",
                               covered, t.begin));
    }
    covered = t.end;
    previous = &t;
  }
  if (covered != data_bytes) {
    header_error(path, "",
                 fmt::format("the last {} bytes of the {}-byte data buffer belong to no tensor",
                             data_bytes - covered, data_bytes));
  }
}

// The header JSON, parsed by the one JSON reader: nesting is bounded and a name that appears
// twice is an error (nlohmann alone would silently keep the last one, hiding a tensor).
Json parse_header_json(const fs::path& path, const char* begin, const char* end) {
  Json header;
  JsonError error;
  if (!try_parse_json(std::string_view(begin, static_cast<size_t>(end - begin)), header, error)) {
    header_error(
        path, "",
        fmt::format("the header is not valid JSON ({}{})",
                    error.line == 0 ? std::string() : fmt::format("column {}: ", error.column),
                    error.message));
  }
  if (!header.is_object()) {
    header_error(path, "",
                 fmt::format("the header must be a JSON object {{name: {{dtype, shape, "
                             "data_offsets}}}}, not {}",
                             header.type_name()));
  }
  return header;
}

bool is_plain_relative(const fs::path& p) {
  if (p.empty() || p.is_absolute()) return false;
  return std::none_of(p.begin(), p.end(), [](const fs::path& part) { return part == ".."; });
}

}  // namespace

// ---- dtypes --------------------------------------------------------------------------------

std::string safetensors_dtype(at::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (d.type == type) return std::string(d.name);
  }
  user_error("dtype {} cannot be stored in safetensors (supported: {}); convert the tensor first",
             c10::toString(type), supported_dtypes());
}

at::ScalarType scalar_type_of(const std::string& safetensors_dtype) {
  if (const DtypeName* d = find_dtype(safetensors_dtype)) return d->type;
  user_error("safetensors dtype \"{}\" is not supported (supported: {})", safetensors_dtype,
             supported_dtypes());
}

// ---- one file ------------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
  SafetensorsFile out;
  out.path_ = path;
  out.file_ = MappedFile::open(path);
  const uint8_t* data = out.file_->data();
  const uint64_t size = out.file_->size();

  if (size < kLengthBytes) {
    header_error(path, "",
                 fmt::format("it is {} bytes long, shorter than the 8-byte header length", size));
  }
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, data, kLengthBytes);  // little-endian u64 (static_assert above)
  if (header_bytes > kMaxHeaderBytes) {
    header_error(path, "",
                 fmt::format("the header length {} exceeds the {}-byte limit", header_bytes,
                             kMaxHeaderBytes));
  }
  if (header_bytes > size - kLengthBytes) {
    header_error(path, "",
                 fmt::format("the header length {} runs past the end of the {}-byte file",
                             header_bytes, size));
  }
  out.data_start_ = kLengthBytes + header_bytes;
  const uint64_t data_bytes = size - out.data_start_;

  const auto* text = reinterpret_cast<const char*>(data + kLengthBytes);
  const Json header = parse_header_json(path, text, text + header_bytes);
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      out.metadata_ = parse_metadata(path, value);
    } else {
      out.tensors_.push_back(parse_entry(path, key, value, data_bytes));
    }
  }
  check_coverage(path, out.tensors_, data_bytes);
  for (size_t i = 0; i < out.tensors_.size(); ++i) out.index_[out.tensors_[i].name] = i;
  return out;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) > 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) {
    user_error("tensor '{}' is not in {} (which holds {} tensors); check the name and the file",
               name, path_.string(), tensors_.size());
  }
  return tensors_[it->second];
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const at::ScalarType type = scalar_type_of(ti.dtype);
  const auto options = at::TensorOptions().dtype(type).device(at::kCPU);
  const uint64_t nbytes = ti.end - ti.begin;  // == numel * element size (checked in open)
  if (nbytes == 0) return at::empty(ti.shape, options);
  uint8_t* bytes = file_->data() + data_start_ + ti.begin;  // in bounds (checked in open)

  if (type == at::kBool) {
    // A bool byte other than 0/1 is undefined behaviour in C++ (and LibTorch kernels).
    const auto* bad = std::find_if(bytes, bytes + nbytes, [](uint8_t b) { return b > 1; });
    if (bad != bytes + nbytes) {
      header_error(path_, name,
                   fmt::format("BOOL byte {} of the tensor is {}, not 0 or 1", bad - bytes, *bad));
    }
  }
  const size_t item = c10::elementSize(type);
  if (reinterpret_cast<uintptr_t>(bytes) % item != 0) {
    // Misaligned for the element type (a writer packed e.g. an odd-length U8 tensor before
    // it): LibTorch kernels assume natural alignment, so copy.
    at::Tensor copy = at::empty(ti.shape, options);
    std::memcpy(copy.data_ptr(), bytes, nbytes);
    return copy;
  }
  // Zero-copy: the tensor's storage is the mapping itself; the deleter holds the mapping alive.
  return at::from_blob(
      bytes, ti.shape, [keep = file_](void*) {}, options);
}

void SafetensorsFile::release(const std::string& name) const {
  const TensorInfo& ti = info(name);
  file_->release(data_start_ + ti.begin, ti.end - ti.begin);
}

// ---- the Hugging Face checkpoint directory -------------------------------------------------

SafetensorsCheckpoint SafetensorsCheckpoint::open(const fs::path& directory) {
  SafetensorsCheckpoint out;
  out.directory_ = directory;
  std::error_code ec;
  if (!fs::is_directory(directory, ec)) {
    user_error("model directory {} {}; point the model path at a Hugging Face model folder",
               directory.string(),
               fs::exists(directory, ec) ? "is not a directory" : "does not exist");
  }
  const fs::path single = directory / kSingleFileName;
  const fs::path index = directory / kIndexFileName;
  // Like transformers: a single model.safetensors wins over an index.
  if (fs::exists(single, ec)) {
    auto file = std::make_shared<SafetensorsFile>(SafetensorsFile::open(single));
    for (const TensorInfo& t : file->tensors()) out.weight_map_[t.name] = single;
    out.shards_[single] = std::move(file);
    return out;
  }
  if (!fs::exists(index, ec)) {
    const bool has_bin = fs::exists(directory / "pytorch_model.bin", ec) ||
                         fs::exists(directory / "pytorch_model.bin.index.json", ec);
    user_error("{} has neither {} nor {}; {}", directory.string(), kSingleFileName, kIndexFileName,
               has_bin ? "it holds a PyTorch .bin checkpoint: convert it to safetensors "
                         "(transformers: model.save_pretrained(dir, safe_serialization=True))"
                       : "point the model path at a Hugging Face model folder");
  }

  const auto bad_index = [&](const std::string& what) {
    user_error("bad checkpoint index {}: {}; re-download the checkpoint", index.string(), what);
  };
  const nlohmann::json json = read_json_file(index, "; re-download the checkpoint");
  if (!json.is_object() || !json.contains("weight_map")) {
    bad_index("it must be a JSON object with a \"weight_map\" {tensor: shard file}");
  }
  const nlohmann::json& weight_map = json.at("weight_map");
  if (!weight_map.is_object()) {
    bad_index(fmt::format("\"weight_map\" must be an object {{tensor: shard file}}, not {}",
                          weight_map.type_name()));
  }
  std::set<fs::path> checked;  // each shard once; the error names the first tensor mapped to it
  for (const auto& [name, shard] : weight_map.items()) {
    if (!shard.is_string() || !is_plain_relative(shard.get<std::string>())) {
      bad_index(fmt::format("weight_map[\"{}\"] must be a file name inside the folder, not {}",
                            name, shard.dump()));
    }
    const fs::path file = directory / shard.get<std::string>();
    out.weight_map_[name] = file;
    if (checked.insert(file).second && !fs::is_regular_file(file, ec)) {
      user_error(
          "{} maps tensor '{}' to {}, which does not exist; the download is incomplete: "
          "download the missing shard",
          index.string(), name, file.string());
    }
  }
  return out;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(weight_map_.size());
  for (const auto& kv : weight_map_) out.push_back(kv.first);
  return out;
}

bool SafetensorsCheckpoint::contains(const std::string& name) const {
  return weight_map_.count(name) > 0;
}

fs::path SafetensorsCheckpoint::file_of(const std::string& name) const {
  const auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    user_error("tensor '{}' is not in the checkpoint {} ({} tensors); check the name", name,
               directory_.string(), weight_map_.size());
  }
  return it->second;
}

const SafetensorsFile& SafetensorsCheckpoint::shard(const fs::path& file) const {
  std::lock_guard<std::mutex> lock(*shards_mutex_);
  auto& slot = shards_[file];
  if (!slot) slot = std::make_shared<SafetensorsFile>(SafetensorsFile::open(file));
  return *slot;
}

const TensorInfo& SafetensorsCheckpoint::info(const std::string& name) const {
  const fs::path file = file_of(name);
  const SafetensorsFile& s = shard(file);
  if (!s.contains(name)) {
    user_error(
        "{} says tensor '{}' is in {}, but that file has no such tensor; the index and "
        "the shards do not match: re-download the checkpoint",
        (directory_ / kIndexFileName).string(), name, file.string());
  }
  return s.info(name);
}

void SafetensorsCheckpoint::release(const std::string& name) const {
  info(name);
  shard(file_of(name)).release(name);
}

at::Tensor SafetensorsCheckpoint::tensor(const std::string& name) const {
  info(name);  // the clear error for a tensor the index promises but the shard lacks
  return shard(file_of(name)).tensor(name);
}

// ---- writer --------------------------------------------------------------------------------

// The JSON header of a file being written: entries added in data order, with the checks of
// every writer (reserved and duplicate names, dtypes safetensors has). (Not in the anonymous
// namespace: SafetensorsStreamWriter::State holds one.)
class HeaderBuilder {
 public:
  HeaderBuilder(const fs::path& path, const std::map<std::string, std::string>& metadata)
      : path_(path) {
    if (!metadata.empty()) header_[std::string(kMetadataKey)] = metadata;
  }

  // Adds `t`'s entry at the current end of the data buffer; returns its byte count.
  uint64_t add(const std::string& name, const at::Tensor& t) {
    TORCH_CHECK(t.defined(), "safetensors writer: tensor '", name, "' is undefined");
    if (name == kMetadataKey) {
      user_error("cannot write {}: \"{}\" is reserved and cannot name a tensor", path_.string(),
                 kMetadataKey);
    }
    if (!names_.insert(name).second) {
      user_error("cannot write {}: two tensors are named '{}'; tensor names must be unique",
                 path_.string(), name);
    }
    std::string dtype;
    try {
      dtype = safetensors_dtype(t.scalar_type());
    } catch (const UserError& e) {
      user_error("cannot write {}: tensor '{}': {}", path_.string(), name, e.what());
    }
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header_[name] = {{"dtype", dtype},
                     {"shape", t.sizes().vec()},
                     {"data_offsets", {offset_, offset_ + nbytes}}};
    offset_ += nbytes;
    return nbytes;
  }

  // The header text padded with spaces (valid JSON whitespace) to a multiple of 8 bytes, so
  // the data buffer starts 8-byte aligned as the reference writer does (tensors are then
  // aligned whenever their offsets are); at least `min_bytes` long.
  std::string text(uint64_t min_bytes = 0) const {
    std::string text;
    try {
      text = header_.dump();
    } catch (const Json::type_error& e) {
      user_error("cannot write {}: a tensor name or metadata string is not valid UTF-8 ({})",
                 path_.string(), e.what());
    }
    if (text.size() < min_bytes) text.append(min_bytes - text.size(), ' ');
    text.append((kLengthBytes - text.size() % kLengthBytes) % kLengthBytes, ' ');
    return text;
  }

 private:
  const fs::path& path_;
  Json header_ = Json::object();
  std::set<std::string> names_;
  uint64_t offset_ = 0;
};

namespace {

// Host-contiguous bytes of `t` (conj / neg views materialized: contiguous() keeps them lazy).
at::Tensor host_bytes(const at::Tensor& t) {
  return t.detach().resolve_conj().resolve_neg().to(at::kCPU).contiguous();
}

// The most bytes a JSON string literal of `s` takes (nlohmann::json escapes '"', '\\' and
// control characters; other bytes, UTF-8 included, are written as they are).
uint64_t json_string_bound(const std::string& s) {
  uint64_t n = 2;
  for (const unsigned char c : s) n += c == '"' || c == '\\' ? 2 : c < 0x20 ? 6 : 1;
  return n;
}

}  // namespace

void save_safetensors(const fs::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Header first (from sizes alone), so that only one tensor at a time is copied to the host.
  HeaderBuilder header(path, metadata);
  for (const auto& [name, t] : tensors) header.add(name, t);
  const std::string text = header.text();
  const uint64_t header_bytes = text.size();

  AtomicFile out(path);
  out.write(&header_bytes, kLengthBytes);
  out.write(text.data(), text.size());
  for (const auto& [name, t] : tensors) {
    const at::Tensor host = host_bytes(t);
    if (host.numel() > 0) out.write(host.data_ptr(), host.nbytes());
  }
  out.commit();
}

uint64_t safetensors_header_capacity(const std::vector<std::string>& names,
                                     const std::map<std::string, std::string>& metadata,
                                     int max_dims) {
  // Per entry: "name":{"dtype":"F8_E4M3","shape":[d,...],"data_offsets":[b,e]}, with each
  // number at most 20 digits (uint64 / int64).
  constexpr uint64_t kNumber = 21;  // digits and a comma
  uint64_t n = 2;                   // { }
  for (const auto& name : names)
    n += json_string_bound(name) + 48 + kNumber * (static_cast<uint64_t>(max_dims) + 2);
  if (!metadata.empty()) {
    n += json_string_bound(std::string(kMetadataKey)) + 3;
    for (const auto& [k, v] : metadata) n += json_string_bound(k) + json_string_bound(v) + 2;
  }
  return n;
}

struct SafetensorsStreamWriter::State {
  fs::path path;
  uint64_t capacity;
  HeaderBuilder header;
  AtomicFile out;
  State(fs::path p, uint64_t cap, const std::map<std::string, std::string>& metadata)
      : path(std::move(p)), capacity(cap), header(path, metadata), out(path) {}
};

SafetensorsStreamWriter::SafetensorsStreamWriter(fs::path path, uint64_t header_capacity,
                                                 const std::map<std::string, std::string>& metadata)
    : state_(std::make_unique<State>(std::move(path), header_capacity, metadata)) {
  // The reserved header: its length prefix and spaces, overwritten by commit().
  const std::string reserved = state_->header.text(header_capacity);
  const uint64_t reserved_bytes = reserved.size();
  state_->capacity = reserved_bytes;
  state_->out.write(&reserved_bytes, kLengthBytes);
  state_->out.write(reserved.data(), reserved.size());
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() = default;

void SafetensorsStreamWriter::add(const std::string& name, const at::Tensor& t) {
  TORCH_CHECK(state_, "SafetensorsStreamWriter::add after commit");
  state_->header.add(name, t);
  const at::Tensor host = host_bytes(t);
  if (host.numel() > 0) state_->out.write(host.data_ptr(), host.nbytes());
}

void SafetensorsStreamWriter::commit() {
  TORCH_CHECK(state_, "SafetensorsStreamWriter::commit twice");
  const std::string text = state_->header.text(state_->capacity);
  TORCH_CHECK(text.size() == state_->capacity, "safetensors header of ", state_->path.string(),
              " needs ", text.size(), " bytes, ", state_->capacity,
              " were reserved (safetensors_header_capacity)");
  state_->out.write_at(kLengthBytes, text.data(), text.size());
  state_->out.commit();
  state_.reset();
}

}  // namespace qlt::io
