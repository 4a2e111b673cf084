// Shared by the [bpe] tests: the committed corpus and reference ids
// (tests/fixtures/tokenizer_bpe/, tests/fixtures/tokenizer_gguf/, written by
// scripts/fixtures/make_bpe_tokenizer_fixtures.py), and a comparison that reports the first
// texts whose ids differ.
#pragma once

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "test_common.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace qlt::test::bpe {

namespace fs = std::filesystem;

inline fs::path fixtures() { return kFixtures; }
inline fs::path bpe_dir() { return fixtures() / "tokenizer_bpe"; }
inline fs::path gguf_dir() { return fixtures() / "tokenizer_gguf"; }
inline fs::path smollm2_gguf() { return kSmolLm2Gguf; }

inline std::vector<nlohmann::json> read_jsonl(const fs::path& file) {
  std::ifstream in(file);
  REQUIRE(in.good());
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

inline const std::vector<std::string>& corpus() {
  static const std::vector<std::string> texts = [] {
    std::vector<std::string> t;
    for (const auto& row : read_jsonl(bpe_dir() / "corpus.jsonl")) t.push_back(row["text"]);
    return t;
  }();
  return texts;
}

struct Expected {
  std::vector<int64_t> ids;
  std::optional<std::string> decoded;  // when the reference does not decode back to the text
  // llama.cpp's rows of texts with code points assigned in Unicode 15 (see the fixture
  // script): llama.cpp's tables are Unicode 15.1, PCRE2 10.42's (Debian 12) are Unicode 14,
  // where these characters are unassigned, not letters or numbers, so the pieces may differ.
  bool unicode15 = false;
};

inline std::vector<Expected> read_expected(const fs::path& file) {
  std::vector<Expected> out;
  for (const auto& row : read_jsonl(file)) {
    Expected e{row["ids"].get<std::vector<int64_t>>(), std::nullopt};
    if (row.contains("decoded")) e.decoded = row["decoded"].get<std::string>();
    e.unicode15 = row.value("unicode15", false);
    out.push_back(std::move(e));
  }
  return out;
}

inline std::string show(const std::vector<int64_t>& ids) {
  std::ostringstream s;
  for (size_t i = 0; i < ids.size() && i < 40; ++i) s << (i ? " " : "") << ids[i];
  if (ids.size() > 40) s << " ... (" << ids.size() << " ids)";
  return s.str();
}

// Encodes every corpus text without BOS/EOS and requires the reference ids; then requires
// decode(ids) == the text (or the reference's decoding where it differs from the text).
// Texts marked unicode15 are only required to round-trip.
inline void require_reference_ids(const tokenizer::Tokenizer& tok, const fs::path& expected_file) {
  const auto& texts = corpus();
  const auto expected = read_expected(expected_file);
  REQUIRE(texts.size() >= 1000);
  REQUIRE(expected.size() == texts.size());
  size_t id_mismatches = 0, text_mismatches = 0, not_compared = 0;
  std::string report;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto ids = tok.encode(texts[i], /*add_bos=*/false);
    if (expected[i].unicode15) {
      ++not_compared;
      if (tok.decode(ids) != texts[i]) ++text_mismatches;
      continue;
    }
    if (ids != expected[i].ids) {
      if (++id_mismatches <= 5) {
        report += "\nline " + std::to_string(i + 1) + " " + nlohmann::json(texts[i]).dump() +
                  "\n  expected " + show(expected[i].ids) + "\n  got      " + show(ids);
      }
      continue;
    }
    const std::string want = expected[i].decoded.value_or(texts[i]);
    if (tok.decode(ids) != want) {
      if (++text_mismatches <= 5) {
        report += "\nline " + std::to_string(i + 1) + " decodes to " +
                  nlohmann::json(tok.decode(ids)).dump() + ", not " + nlohmann::json(want).dump();
      }
    }
  }
  INFO(expected_file.filename().string()
       << ": " << id_mismatches << " of " << texts.size() << " texts with other ids, "
       << text_mismatches << " decoded otherwise, " << not_compared
       << " not compared (Unicode 15 code points)" << report);
  CHECK(not_compared <= 3);
  CHECK(id_mismatches == 0);
  CHECK(text_mismatches == 0);
}

// SmolLM2's GGUF is fetched by scripts/models/smollm2.sh (scripts/test.sh does, so CI has it):
// without it the test says so and passes, except under CI (the environment variable CI set),
// where it fails.
inline bool have_smollm2() {
  if (fs::exists(smollm2_gguf())) return true;
  if (std::getenv("CI") != nullptr) {
    FAIL(smollm2_gguf().string() << " is missing, and CI is set: CI must fetch it "
                                    "(scripts/models/smollm2.sh)");
  }
  WARN("SKIPPED: " << smollm2_gguf().string()
                   << " is not there (fetch it with scripts/models/smollm2.sh)");
  return false;
}

}  // namespace qlt::test::bpe
