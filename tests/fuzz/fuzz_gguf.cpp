// Fuzz target: a whole GGUF file -> qlt::io::GgufFile::parse (from memory: the reader's whole
// logic; open() only adds the mapping), then every metadata value is walked (nested arrays
// included, every string byte read) and every tensor's bytes are read through tensor_bytes(),
// so an offset the reader let through outside the input is an ASan report.
//
// Beyond "no crash, no exception other than UserError", an accepted file must satisfy what
// src/io/gguf.h promises: version 2 or 3; a power-of-two alignment; the data section aligned
// and inside the header's bounds; each tensor 1 to 4 dims >= 1, ne[0] a multiple of its
// type's block, nbytes = numel / block * block bytes, an aligned offset, its bytes inside the
// input, no two tensors sharing a byte; lookups by key and name agree with the lists; and the
// typed getters answer (or refuse with a UserError) for every key.
#include <algorithm>
#include <cstring>
#include <variant>

#include "fuzz_util.h"
#include "io/gguf.h"

namespace {

using qlt::io::GgufArray;
using qlt::io::GgufFile;
using qlt::io::GgufValue;
using qlt::io::GgufValueType;

// Walks a value: counts its parts and reads every byte of its strings.
uint64_t walk(const GgufValue& v, int depth) {
  QLT_FUZZ_REQUIRE(depth <= qlt::io::kMaxArrayDepth, "array nesting %d", depth);
  uint64_t sum = static_cast<uint32_t>(v.type);
  if (const auto* s = std::get_if<std::string>(&v.value)) {
    QLT_FUZZ_REQUIRE(v.type == GgufValueType::STRING, "string held by type %u",
                     static_cast<unsigned>(v.type));
    for (const char c : *s) sum += static_cast<unsigned char>(c);
  } else if (const auto* a = std::get_if<GgufArray>(&v.value)) {
    QLT_FUZZ_REQUIRE(v.type == GgufValueType::ARRAY, "array held by type %u",
                     static_cast<unsigned>(v.type));
    for (const GgufValue& item : a->items) {
      QLT_FUZZ_REQUIRE(item.type == a->element_type, "array item of another type");
      sum += walk(item, depth + 1);
    }
  } else if (const auto* b = std::get_if<bool>(&v.value)) {
    QLT_FUZZ_REQUIRE(v.type == GgufValueType::BOOL, "bool held by type %u",
                     static_cast<unsigned>(v.type));
    sum += *b;
  }
  (void)qlt::io::describe(v);
  QLT_FUZZ_REQUIRE(v == v, "a value unequal to itself (floats compare by bits)");
  return sum;
}

// Each getter answers or refuses with a UserError (never another exception).
template <typename Get>
void try_get(Get&& get) {
  qlt::fuzz::accepts([&] { (void)get(); });
}

void check_file(const GgufFile& file, const uint8_t* data, size_t size) {
  QLT_FUZZ_REQUIRE(file.version() == 2 || file.version() == 3, "version %u", file.version());
  const uint64_t align = file.alignment();
  QLT_FUZZ_REQUIRE(align > 0 && (align & (align - 1)) == 0, "alignment %llu",
                   static_cast<unsigned long long>(align));
  QLT_FUZZ_REQUIRE(file.data_offset() % align == 0, "data section misaligned");
  QLT_FUZZ_REQUIRE(file.size() == size, "size %llu of %zu",
                   static_cast<unsigned long long>(file.size()), size);

  uint64_t sum = 0;
  for (const auto& entry : file.metadata()) {
    const std::string& key = entry.first;  // not a structured binding: clang 14 cannot capture it
    const GgufValue& value = entry.second;
    QLT_FUZZ_REQUIRE(file.find(key) == &value, "lookup of a key disagrees with metadata()");
    sum += walk(value, 0);
    try_get([&] { return file.get_string(key); });
    try_get([&] { return file.get_uint(key); });
    try_get([&] { return file.get_int(key); });
    try_get([&] { return file.get_float(key); });
    try_get([&] { return file.get_bool(key); });
    try_get([&] { return file.get_string_array(key); });
    try_get([&] { return file.get_float_array(key); });
    try_get([&] { return file.get_int_array(key); });
  }

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& t : file.tensors()) {
    QLT_FUZZ_REQUIRE(file.find_tensor(t.name) == &t, "lookup of tensor %s", t.name.c_str());
    QLT_FUZZ_REQUIRE(!t.dims.empty() && t.dims.size() <= 4, "tensor %s: %zu dims", t.name.c_str(),
                     t.dims.size());
    for (const int64_t d : t.dims) QLT_FUZZ_REQUIRE(d >= 1, "tensor %s: dim < 1", t.name.c_str());
    const auto traits = qlt::io::ggml_type_traits(static_cast<uint32_t>(t.type));
    QLT_FUZZ_REQUIRE(traits.has_value(), "tensor %s: unknown type", t.name.c_str());
    QLT_FUZZ_REQUIRE(t.dims[0] % traits->block_elements == 0, "tensor %s: partial block",
                     t.name.c_str());
    QLT_FUZZ_REQUIRE(t.nbytes == static_cast<uint64_t>(t.numel() / traits->block_elements) *
                                     static_cast<uint64_t>(traits->block_bytes),
                     "tensor %s: nbytes", t.name.c_str());
    QLT_FUZZ_REQUIRE(t.offset % align == 0, "tensor %s: misaligned", t.name.c_str());
    QLT_FUZZ_REQUIRE(file.data_offset() <= size && t.offset <= size - file.data_offset() &&
                         t.nbytes <= size - file.data_offset() - t.offset,
                     "tensor %s: outside the input", t.name.c_str());
    QLT_FUZZ_REQUIRE(t.torch_shape().size() == t.dims.size(), "torch_shape");
    const auto bytes = file.tensor_bytes(t);
    QLT_FUZZ_REQUIRE(bytes.size() == t.nbytes, "tensor %s: span size", t.name.c_str());
    for (const uint8_t b : bytes) sum += b;  // every byte read (ASan sees a stray span)
    QLT_FUZZ_REQUIRE(
        std::memcmp(bytes.data(), data + file.data_offset() + t.offset, bytes.size()) == 0,
        "tensor %s: bytes differ from the input at its offset", t.name.c_str());
    ranges.emplace_back(t.offset, t.offset + t.nbytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    QLT_FUZZ_REQUIRE(ranges[i].first >= ranges[i - 1].second, "tensors overlap");
  }
  (void)sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlt::fuzz::quiet_once();
  // libFuzzer hands over a heap buffer of exactly `size` bytes: ASan flags a read past it.
  qlt::fuzz::accepts([&] {
    const GgufFile file = GgufFile::parse({data, size}, "fuzz.gguf");
    check_file(file, data, size);
  });
  return 0;
}
