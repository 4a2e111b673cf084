// Fuzz target: a whole .safetensors file (8-byte little-endian header length, JSON header,
// data buffer) -> qlt::io::SafetensorsFile::open, then tensor() of every tensor it lists, so
// that dtypes, shapes and data_offsets are exercised, and every byte of each tensor is read
// (an out-of-bounds offset would then be an ASan report or a SEGV, not a silent success).
//
// Beyond "no crash, no exception other than UserError", an accepted file must satisfy what
// src/io/safetensors.h promises: tensors sorted by offset tile the data buffer exactly, each
// range holds numel * element size bytes, and tensor() returns the listed dtype and shape.
#include <c10/core/ScalarType.h>

#include <cstring>

#include "fuzz_util.h"
#include "io/safetensors.h"

namespace {

using qlt::fuzz::accepts;

const qlt::fuzz::ScratchDir& scratch() {
  static const qlt::fuzz::ScratchDir dir("safetensors_header");
  return dir;
}

void check_file(const qlt::io::SafetensorsFile& file, const uint8_t* data, size_t size) {
  uint64_t header_len = 0;
  QLT_FUZZ_REQUIRE(size >= 8, "accepted a file of %zu bytes", size);
  std::memcpy(&header_len, data, 8);
  QLT_FUZZ_REQUIRE(header_len <= size - 8, "header length %llu past the end",
                   static_cast<unsigned long long>(header_len));
  const uint64_t buffer = size - 8 - header_len;
  uint64_t expected_begin = 0;
  uint64_t checksum = 0;
  for (const auto& info : file.tensors()) {
    QLT_FUZZ_REQUIRE(info.begin <= info.end && info.end <= buffer,
                     "tensor %s: range [%llu, %llu) outside a buffer of %llu bytes",
                     info.name.c_str(), static_cast<unsigned long long>(info.begin),
                     static_cast<unsigned long long>(info.end),
                     static_cast<unsigned long long>(buffer));
    // Sorted by offset; zero-size tensors may sit anywhere that is a boundary.
    QLT_FUZZ_REQUIRE(
        info.begin == expected_begin || (info.begin == info.end && info.begin <= expected_begin),
        "tensor %s: begins at %llu, previous tensor ends at %llu", info.name.c_str(),
        static_cast<unsigned long long>(info.begin),
        static_cast<unsigned long long>(expected_begin));
    if (info.end > expected_begin) expected_begin = info.end;
    QLT_FUZZ_REQUIRE(file.contains(info.name) && &file.info(info.name) == &info,
                     "tensor %s: lookup by name disagrees with tensors()", info.name.c_str());

    const at::ScalarType type = qlt::io::scalar_type_of(info.dtype);  // accepted => known
    const at::Tensor t = file.tensor(info.name);  // UserError only for BOOL bytes not 0/1
    QLT_FUZZ_REQUIRE(t.scalar_type() == type && t.sizes().vec() == info.shape,
                     "tensor %s: tensor() disagrees with the header", info.name.c_str());
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * c10::elementSize(type);
    QLT_FUZZ_REQUIRE(nbytes == info.end - info.begin,
                     "tensor %s: %llu bytes of data, range of %llu", info.name.c_str(),
                     static_cast<unsigned long long>(nbytes),
                     static_cast<unsigned long long>(info.end - info.begin));
    if (nbytes > 0) {
      const at::Tensor c = t.contiguous();
      const auto* bytes = static_cast<const uint8_t*>(c.data_ptr());
      for (uint64_t i = 0; i < nbytes; ++i) checksum += bytes[i];
      // The mapping must hold the file's own bytes at the tensor's offset.
      QLT_FUZZ_REQUIRE(std::memcmp(bytes, data + 8 + header_len + info.begin, nbytes) == 0,
                       "tensor %s: data differs from the file bytes at its offset",
                       info.name.c_str());
    }
  }
  QLT_FUZZ_REQUIRE(expected_begin == buffer,
                   "tensors cover %llu bytes of a %llu-byte data buffer (gap or trailing bytes)",
                   static_cast<unsigned long long>(expected_begin),
                   static_cast<unsigned long long>(buffer));
  (void)checksum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlt::fuzz::quiet_once();
  const auto path = scratch() / "model.safetensors";
  qlt::fuzz::write_file(path, qlt::fuzz::as_text(data, size));
  accepts([&] {
    const auto file = qlt::io::SafetensorsFile::open(path);
    for (const auto& [key, value] : file.metadata()) (void)key.size(), (void)value.size();
    check_file(file, data, size);
  });
  return 0;
}
