// Eval datasets: JSONL reading errors, windowing and padding.
#include <catch2/catch.hpp>
#include <fstream>

#include "core/errors.h"
#include "data/text_dataset.h"
#include "model/causal_lm_loss.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::test::TempJsonl;
using qlt::test::tiny_tokenizer;

}  // namespace

TEST_CASE("text JSONL: documents in order, blank lines skipped", "[data]") {
  TempJsonl f("{\"text\": \"a\"}\n\n{\"text\": \"b\", \"extra\": 1}\n");
  auto docs = qlt::data::read_documents(f.path, "text");
  CHECK(docs == std::vector<std::string>{"a", "b"});
}

TEST_CASE("text JSONL errors name file and line", "[data][errors]") {
  SECTION("invalid JSON") {
    TempJsonl f("{\"text\": \"a\"}\n{oops\n");
    REQUIRE_THROWS_WITH(qlt::data::read_documents(f.path, "text"),
                        Contains(f.path.string() + ":2: not valid JSON"));
  }
  SECTION("not an object") {
    TempJsonl f("[1, 2]\n");
    REQUIRE_THROWS_WITH(qlt::data::read_documents(f.path, "text"),
                        Contains(":1: expected a JSON object"));
  }
  SECTION("text missing or not a string") {
    TempJsonl f("{\"text\": \"a\"}\n{\"text\": 5}\n");
    REQUIRE_THROWS_WITH(qlt::data::read_documents(f.path, "text"),
                        Contains(":2: format \"text\" needs a string field \"text\""));
  }
  SECTION("empty file") {
    TempJsonl f("\n\n");
    REQUIRE_THROWS_WITH(qlt::data::read_documents(f.path, "text"), Contains("holds no documents"));
  }
  SECTION("missing file") {
    REQUIRE_THROWS_WITH(qlt::data::read_documents("/no/such.jsonl", "text"),
                        Contains("dataset /no/such.jsonl does not exist"));
  }
  SECTION("unknown format") {
    TempJsonl f("{\"text\": \"a\"}\n");
    REQUIRE_THROWS_AS(qlt::data::read_documents(f.path, "csv"), qlt::UserError);
  }
}

TEST_CASE("eval windows: BOS + tokens + EOS cut into max_seq_len pieces", "[data]") {
  const auto& tok = tiny_tokenizer();
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "And God said, Let there be light. ";
  auto ids = tok.encode(long_text, true, true);
  REQUIRE(ids.size() > 64);
  auto windows = qlt::data::make_eval_windows({long_text}, tok, 64);
  size_t total = 0;
  for (size_t i = 0; i < windows.size(); ++i) {
    CHECK(windows[i].size() <= 64);
    if (i + 1 < windows.size()) CHECK(windows[i].size() == 64);
    total += windows[i].size();
  }
  // Only a trailing one-token window may be dropped.
  CHECK(ids.size() - total <= 1);
  CHECK(windows.front().front() == tok.bos_id());
  CHECK(windows.front() == std::vector<int64_t>(ids.begin(), ids.begin() + 64));
}

TEST_CASE("collate right-pads with ignored labels", "[data]") {
  std::vector<std::vector<int64_t>> windows = {{1, 5, 6}, {1, 7}, {1, 8, 9, 10}};
  auto batch = qlt::data::collate(windows, 0, 2, /*pad_id=*/2);
  REQUIRE(batch.input_ids.sizes() == at::IntArrayRef({2, 3}));
  CHECK(batch.input_ids[1][2].item<int64_t>() == 2);
  CHECK(batch.labels[1][2].item<int64_t>() == qlt::model::kIgnoreIndex);
  CHECK(batch.labels[0][2].item<int64_t>() == 6);
}
