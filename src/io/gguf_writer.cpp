// GGUF writer (layout and rules in gguf_writer.h).
#include "io/gguf_writer.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <bit>
#include <cstring>

#include "core/errors.h"
#include "io/atomic_file.h"
#include "io/gguf_internal.h"

namespace qlt::io {
namespace {

using gguf_detail::quote_text;

constexpr uint32_t kVersion = 3;
using gguf_detail::kDefaultAlignment;
constexpr size_t kMaxNameBytes = 63;  // llama.cpp refuses names of GGML_MAX_NAME (64) or more

[[noreturn]] void bad_value(const std::string& key, std::string_view what) {
  user_error("cannot write GGUF metadata key {}: {}", quote_text(key), what);
}

// The value's held alternative and range fit its type (recursively for arrays).
void check_value(const std::string& key, const GgufValue& v, int depth) {
  const auto type_id = static_cast<uint32_t>(v.type);
  if (!is_gguf_value_type(type_id)) bad_value(key, fmt::format("unknown value type {}", type_id));
  const auto range = [&](auto lo, auto hi) {
    using T = decltype(lo);
    const T* x = std::get_if<T>(&v.value);
    if (x == nullptr) {
      bad_value(key, fmt::format("a {} must hold a {}", gguf_value_type_name(v.type),
                                 std::is_same_v<T, uint64_t> ? "uint64_t" : "int64_t"));
    }
    if (*x < lo || *x > hi) {
      bad_value(key, fmt::format("{} is out of the range of {}", *x, gguf_value_type_name(v.type)));
    }
  };
  const auto holds = [&](auto tag, std::string_view what) {
    if (!std::holds_alternative<decltype(tag)>(v.value)) {
      bad_value(key, fmt::format("a {} must hold a {}", gguf_value_type_name(v.type), what));
    }
  };
  switch (v.type) {
    case GgufValueType::UINT8:
      return range(uint64_t{0}, uint64_t{UINT8_MAX});
    case GgufValueType::UINT16:
      return range(uint64_t{0}, uint64_t{UINT16_MAX});
    case GgufValueType::UINT32:
      return range(uint64_t{0}, uint64_t{UINT32_MAX});
    case GgufValueType::UINT64:
      return range(uint64_t{0}, uint64_t{UINT64_MAX});
    case GgufValueType::INT8:
      return range(int64_t{INT8_MIN}, int64_t{INT8_MAX});
    case GgufValueType::INT16:
      return range(int64_t{INT16_MIN}, int64_t{INT16_MAX});
    case GgufValueType::INT32:
      return range(int64_t{INT32_MIN}, int64_t{INT32_MAX});
    case GgufValueType::INT64:
      return range(int64_t{INT64_MIN}, int64_t{INT64_MAX});
    case GgufValueType::FLOAT32:
    case GgufValueType::FLOAT64:
      return holds(double{}, "double");
    case GgufValueType::BOOL:
      return holds(bool{}, "bool");
    case GgufValueType::STRING:
      return holds(std::string{}, "std::string");
    case GgufValueType::ARRAY: {
      const auto* a = std::get_if<GgufArray>(&v.value);
      if (a == nullptr) bad_value(key, "an ARRAY must hold a GgufArray");
      if (depth + 1 > kMaxArrayDepth) {
        bad_value(key, fmt::format("arrays nested deeper than {} levels", kMaxArrayDepth));
      }
      for (size_t j = 0; j < a->items.size(); ++j) {
        if (a->items[j].type != a->element_type) {
          bad_value(key, fmt::format("element {} is {}, but the array holds {}", j,
                                     gguf_value_type_name(a->items[j].type),
                                     gguf_value_type_name(a->element_type)));
        }
        check_value(key, a->items[j], depth + 1);
      }
      return;
    }
  }
}

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian host (static_assert in gguf.cpp)
  out.append(b, sizeof(T));
}

void put_string(std::string& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.append(s);
}

// A value without its type id (the caller writes that where the format wants it).
void put_value(std::string& out, const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::UINT8:
      return put<uint8_t>(out, static_cast<uint8_t>(std::get<uint64_t>(v.value)));
    case GgufValueType::INT8:
      return put<int8_t>(out, static_cast<int8_t>(std::get<int64_t>(v.value)));
    case GgufValueType::UINT16:
      return put<uint16_t>(out, static_cast<uint16_t>(std::get<uint64_t>(v.value)));
    case GgufValueType::INT16:
      return put<int16_t>(out, static_cast<int16_t>(std::get<int64_t>(v.value)));
    case GgufValueType::UINT32:
      return put<uint32_t>(out, static_cast<uint32_t>(std::get<uint64_t>(v.value)));
    case GgufValueType::INT32:
      return put<int32_t>(out, static_cast<int32_t>(std::get<int64_t>(v.value)));
    case GgufValueType::UINT64:
      return put<uint64_t>(out, std::get<uint64_t>(v.value));
    case GgufValueType::INT64:
      return put<int64_t>(out, std::get<int64_t>(v.value));
    case GgufValueType::FLOAT32:
      return put<float>(out, static_cast<float>(std::get<double>(v.value)));
    case GgufValueType::FLOAT64:
      return put<double>(out, std::get<double>(v.value));
    case GgufValueType::BOOL:
      return put<uint8_t>(out, std::get<bool>(v.value) ? 1 : 0);
    case GgufValueType::STRING:
      return put_string(out, std::get<std::string>(v.value));
    case GgufValueType::ARRAY: {
      const auto& a = std::get<GgufArray>(v.value);
      put<uint32_t>(out, static_cast<uint32_t>(a.element_type));
      put<uint64_t>(out, a.items.size());
      for (const GgufValue& item : a.items) put_value(out, item);
      return;
    }
  }
}

uint64_t padded(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

}  // namespace

void GgufWriter::add(const std::string& key, GgufValue value) {
  if (key.empty() || key.size() > kMaxKeyBytes) {
    user_error("cannot write GGUF metadata key {}: a key has 1 to {} bytes, this one {}",
               quote_text(key), kMaxKeyBytes, key.size());
  }
  if (keys_.count(key) != 0) {
    user_error("cannot write GGUF metadata key {}: it was added twice", quote_text(key));
  }
  check_value(key, value, 0);
  if (key == "general.alignment") {
    const auto* a = std::get_if<uint64_t>(&value.value);
    if (value.type != GgufValueType::UINT32 || !std::has_single_bit(*a)) {
      bad_value(key, fmt::format("it must be a UINT32 power of two, not {}", describe(value)));
    }
  }
  keys_.emplace(key, metadata_.size());
  metadata_.emplace_back(key, std::move(value));
}

uint64_t GgufWriter::check_tensor(const std::string& name, GgmlType type,
                                  const std::vector<int64_t>& dims) const {
  const auto bad = [&](const std::string& what) {
    user_error("cannot write GGUF tensor {}: {}", quote_text(name), what);
  };
  if (name.empty() || name.size() > kMaxNameBytes) {
    bad(fmt::format("a tensor name has 1 to {} bytes (llama.cpp's limit), this one {}",
                    kMaxNameBytes, name.size()));
  }
  if (names_.count(name) != 0) bad("it was added twice");
  const auto traits = ggml_type_traits(static_cast<uint32_t>(type));
  if (!traits) bad(fmt::format("unknown ggml type {}", static_cast<uint32_t>(type)));
  if (dims.empty() || dims.size() > 4) bad(fmt::format("{} dims; GGUF has 1 to 4", dims.size()));
  int64_t numel = 1;
  for (const int64_t d : dims) {
    if (d < 1 || __builtin_mul_overflow(numel, d, &numel)) {
      bad(fmt::format("dims [{}]: each must be >= 1 and their product fit int64",
                      fmt::join(dims, ", ")));
    }
  }
  if (dims[0] % traits->block_elements != 0) {
    bad(fmt::format("ne[0] = {} is not a multiple of the {} block of {} elements", dims[0],
                    traits->name, traits->block_elements));
  }
  // numel < 2^63 and block_bytes <= 2^8 per element at most: no overflow in 128 bits.
  const auto want = static_cast<unsigned __int128>(numel / traits->block_elements) *
                    static_cast<uint64_t>(traits->block_bytes);
  return static_cast<uint64_t>(want);
}

namespace {
[[noreturn]] void wrong_byte_count(const std::string& name, GgmlType type,
                                   const std::vector<int64_t>& dims, uint64_t want, size_t given) {
  user_error("cannot write GGUF tensor {}: dims [{}] of {} need {} bytes, {} were given",
             quote_text(name), fmt::join(dims, ", "), ggml_type_name(static_cast<uint32_t>(type)),
             want, given);
}
}  // namespace

void GgufWriter::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> dims,
                            std::vector<uint8_t> bytes) {
  const uint64_t want = check_tensor(name, type, dims);
  if (want != bytes.size()) wrong_byte_count(name, type, dims, want, bytes.size());
  names_.emplace(name, tensors_.size());
  tensors_.push_back({name, type, std::move(dims), want, std::move(bytes), {}, {}});
}

void GgufWriter::add_tensor_view(const std::string& name, GgmlType type, std::vector<int64_t> dims,
                                 std::span<const uint8_t> bytes) {
  const uint64_t want = check_tensor(name, type, dims);
  if (want != bytes.size()) wrong_byte_count(name, type, dims, want, bytes.size());
  names_.emplace(name, tensors_.size());
  tensors_.push_back({name, type, std::move(dims), want, {}, bytes, {}});
}

void GgufWriter::add_tensor_deferred(const std::string& name, GgmlType type,
                                     std::vector<int64_t> dims, TensorProducer produce) {
  TORCH_CHECK(produce, "GgufWriter::add_tensor_deferred: no producer for ", name);
  const uint64_t want = check_tensor(name, type, dims);
  names_.emplace(name, tensors_.size());
  tensors_.push_back({name, type, std::move(dims), want, {}, {}, std::move(produce)});
}

uint64_t GgufWriter::alignment() const {
  const auto it = keys_.find("general.alignment");
  return it == keys_.end() ? kDefaultAlignment
                           : std::get<uint64_t>(metadata_[it->second].second.value);
}

std::string GgufWriter::header_bytes() const {
  const uint64_t align = alignment();
  std::string out = "GGUF";
  put<uint32_t>(out, kVersion);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    put_string(out, key);
    put<uint32_t>(out, static_cast<uint32_t>(value.type));
    put_value(out, value);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (const int64_t d : t.dims) put<uint64_t>(out, static_cast<uint64_t>(d));
    put<uint32_t>(out, static_cast<uint32_t>(t.type));
    put<uint64_t>(out, offset);
    offset += padded(t.nbytes, align);
  }
  return out;
}

uint64_t GgufWriter::file_size() const {
  const uint64_t align = alignment();
  uint64_t n = padded(header_bytes().size(), align);
  for (const Tensor& t : tensors_) n += padded(t.nbytes, align);
  return n;
}

// Header, padding, then each tensor and its padding, in pieces to `sink(data, size)`.
template <typename Sink>
void GgufWriter::emit(Sink&& sink) const {
  const uint64_t align = alignment();
  const std::string zeros(align, '\0');
  const std::string header = header_bytes();
  sink(header.data(), header.size());
  sink(zeros.data(), padded(header.size(), align) - header.size());
  for (const Tensor& t : tensors_) {
    if (t.produce) {  // made now, dropped at the end of this iteration
      const std::vector<uint8_t> bytes = t.produce();
      TORCH_CHECK(bytes.size() == t.nbytes, "GGUF tensor ", t.name, ": its producer made ",
                  bytes.size(), " bytes, ", t.nbytes, " expected");
      sink(bytes.data(), bytes.size());
    } else {
      const auto data = t.data();
      sink(data.data(), data.size());
    }
    sink(zeros.data(), padded(t.nbytes, align) - t.nbytes);
  }
}

std::string GgufWriter::to_bytes() const {
  std::string out;
  emit([&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
  return out;
}

void GgufWriter::write(const std::filesystem::path& path) const {
  AtomicFile out(path);
  emit([&](const void* p, size_t n) {
    if (n > 0) out.write(p, n);
  });
  out.commit();
}

}  // namespace qlt::io
