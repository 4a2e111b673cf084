// Encoding speed on 1 MB of text (the corpus repeated): a benchmark, hidden from the default
// run (tag [.bench]); prints MB/s with a cold and a warm word cache. Run:
//   build/tests/qlt_tests "[bpe_bench]" -s
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>

#include "tokenizer/bpe_test_util.h"

namespace {

namespace fs = std::filesystem;
using qlt::tokenizer::Tokenizer;
namespace bpe = qlt::test::bpe;

std::string megabyte() {
  std::string text;
  while (text.size() < (1u << 20)) {
    for (const auto& t : bpe::corpus()) text += t + "\n";
  }
  text.resize(1u << 20);
  while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();
  return text;
}

// `round_trip`: whether decode(encode(text)) == text (not where <mask> swallows spaces).
void time_encode(const char* name, const fs::path& source, bool round_trip = true) {
  const auto tok = Tokenizer::load(source);
  const std::string text = megabyte();
  for (const char* pass : {"cold", "warm"}) {
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok.encode(text, false);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%-38s %s: %.3f s for %.2f MB -> %zu ids (%.1f MB/s)\n", name, pass, s,
                text.size() / 1e6, ids.size(), text.size() / 1e6 / s);
    if (round_trip) CHECK(tok.decode(ids) == text);
  }
}

}  // namespace

TEST_CASE("encoding 1 MB of text", "[.bench][bpe_bench]") {
  time_encode("tokenizer.json (Llama-3 style, 2.5k)", bpe::bpe_dir() / "llama3_style", false);
  time_encode("GGUF smollm pre (2.5k)", bpe::gguf_dir() / "llama3_style_smollm.gguf");
  time_encode("GGUF SentencePiece (tiny-llama, 2k)", bpe::gguf_dir() / "tiny_llama_spm.gguf");
  time_encode("tokenizer.model (tiny-llama, 2k)", fs::path(QLT_SOURCE_DIR) / "data/tiny-llama");
  if (fs::exists(bpe::smollm2_gguf())) time_encode("SmolLM2 GGUF (49k)", bpe::smollm2_gguf());
}
