// Helpers for the safetensors tests: a scratch folder per test, and raw file bytes built by
// hand (so malformed files can be written exactly).
#pragma once

#include <ATen/ATen.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "core/errors.h"

namespace qlt::test {

// A fresh, empty folder under the system temp dir, removed (with contents) on destruction.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           ("qlt-st-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

// 8-byte little-endian length + header + data. `length` overrides the true header length.
inline std::string st_bytes(std::string_view header, std::string_view data = {},
                            std::optional<uint64_t> length = std::nullopt) {
  const uint64_t n = length.value_or(header.size());
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  out.append(header);
  out.append(data);
  return out;
}

inline void write_bytes(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs `f`, requires a UserError whose message contains every one of `parts`.
template <typename F>
void require_user_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const qlt::UserError& e) {
    const std::string what = e.what();
    INFO("message: " << what);
    for (const auto& part : parts) CHECK_THAT(what, Catch::Matchers::Contains(part));
    return;
  }
  FAIL("no UserError thrown");
}

// Same dtype, shape and bytes (NaN-safe, and works for dtypes without comparison kernels).
inline bool same_tensor(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  if (ca.nbytes() == 0) return true;  // memcmp on null pointers is UB even for 0 bytes
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

}  // namespace qlt::test
