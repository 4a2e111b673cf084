// The committed demo dataset data/wordnet: counts, disjoint lemmas, and that it fits the
// tiny model's max_seq_len with the Alpaca template (figures in data/wordnet/README.md).
#include <catch2/catch.hpp>
#include <set>

#include "data/examples.h"
#include "data/jsonl.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kWordnetDir = qlt::test::kRoot / "data/wordnet";

std::set<std::string> lemmas(const fs::path& file) {
  std::set<std::string> out;
  qlt::data::for_each_jsonl(file, [&](const nlohmann::json& o, int64_t) {
    CHECK(o.at("instruction") == "Define the word.");
    out.insert(o.at("input").get<std::string>());
  });
  return out;
}

}  // namespace

TEST_CASE("wordnet demo data: 3000 train + 200 eval records, disjoint lemmas, < 1 MB each",
          "[data][wordnet]") {
  auto train = lemmas(kWordnetDir / "train.jsonl"), eval = lemmas(kWordnetDir / "eval.jsonl");
  CHECK(train.size() == 3000);
  CHECK(eval.size() == 200);
  for (const auto& w : eval) CHECK(train.count(w) == 0);
  CHECK(fs::file_size(kWordnetDir / "train.jsonl") < 1000000);
  CHECK(fs::file_size(kWordnetDir / "eval.jsonl") < 1000000);
}

TEST_CASE("wordnet demo data fits max_seq_len 128 with the Alpaca template", "[data][wordnet]") {
  auto tok = qlt::tokenizer::Tokenizer::load(fs::path(QLT_SOURCE_DIR) / "data/tiny-llama");
  qlt::data::DataOptions o;
  o.format = "alpaca";
  o.max_seq_len = 128;
  for (const char* name : {"train.jsonl", "eval.jsonl"}) {
    auto set = qlt::data::read_examples(kWordnetDir / name, tok, o);
    INFO(name);
    CHECK(set.dropped == 0);
    CHECK(set.truncated * 20 < set.records);  // under 5% cut at 128 (measured: ~2%)
  }
  o.max_seq_len = 144;  // longest example: 137 tokens
  CHECK(qlt::data::read_examples(kWordnetDir / "train.jsonl", tok, o).truncated == 0);
  CHECK(qlt::data::read_examples(kWordnetDir / "eval.jsonl", tok, o).truncated == 0);
}
