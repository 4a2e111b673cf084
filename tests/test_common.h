// Helpers shared by test files all over tests/: repository paths, a seeded CPU generator, file
// readers, the tiny-llama tokenizer, a scratch JSONL file and tensor error measures.
//
// tests/ is compiled as a unity build (tests/README.md): names at file scope must be unique
// across all test files, so a helper that several files need lives once here (or in one of the
// topical *_util.h headers), never as a copy per file.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace qlt::test {

// The repository root: tests/fixtures/, data/, configs/, models/.
inline const std::filesystem::path kRoot = QLT_SOURCE_DIR;
inline const std::filesystem::path kFixtures = kRoot / "tests/fixtures";
// The small llama (model and tokenizer) that most tests and configs/tiny/ use.
inline const std::filesystem::path kTinyLlama = kRoot / "data/tiny-llama";
// llama.cpp's F32 conversion of tests/fixtures/llama_gqa.
inline const std::filesystem::path kLlamaGqaF32Gguf = kFixtures / "gguf_llama/llama_gqa-f32.gguf";
// SmolLM2's GGUF, fetched by scripts/models/smollm2.sh (absent from a fresh checkout).
inline const std::filesystem::path kSmolLm2Gguf =
    kRoot / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

// A CPU generator seeded with `seed` (reproducible random tensors).
inline at::Generator seeded(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// A JSON file, parsed (the file must exist).
inline nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

// The whole file as text ("" when it cannot be read).
inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// data/tiny-llama's tokenizer, loaded once.
inline const tokenizer::Tokenizer& tiny_tokenizer() {
  static const auto tokenizer = tokenizer::Tokenizer::load(kTinyLlama);
  return tokenizer;
}

// A scratch .jsonl file holding `content` as given, removed on destruction.
struct TempJsonl {
  std::filesystem::path path;
  explicit TempJsonl(const std::string& content) {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("qlt-jsonl-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".jsonl");
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  }
  ~TempJsonl() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
  TempJsonl(const TempJsonl&) = delete;
  TempJsonl& operator=(const TempJsonl&) = delete;
};

inline double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

// A TCP port on 127.0.0.1 that nobody listens on now (the kernel's pick for port 0), for a
// test's process-group rendezvous (MASTER_PORT).
inline int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// max |got - want| / max |want|.
inline double relative_error(const at::Tensor& got, const at::Tensor& want) {
  return max_abs(got - want) / max_abs(want);
}

}  // namespace qlt::test
