// Bounded tokenization of over-long examples (data/examples.h, tokenize_truncated): the same
// ids, labels and truncation count as tokenizing the whole example and cutting it to
// max_seq_len, while the text past the budget is not tokenized.
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "data/examples.h"
#include "data/jsonl.h"
#include "data/segments.h"
#include "data/templates.h"
#include "model/causal_lm_loss.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using qlt::data::Example;
using qlt::data::Segment;
using qlt::test::kRoot;
using qlt::test::TempJsonl;
using qlt::test::tiny_tokenizer;

const std::vector<size_t> kBudgets = {2, 8, 16, 64, 256};

// The reference: tokenize the whole example, then cut.
Example cut(Example whole, size_t max_tokens) {
  if (whole.ids.size() > max_tokens) {
    whole.ids.resize(max_tokens);
    whole.labels.resize(max_tokens);
  }
  return whole;
}

// tokenize_truncated equals the whole tokenized and cut, for each budget; returns how many of
// the budgets cut the example.
int check_bounded(const std::vector<Segment>& segments, const std::vector<size_t>& budgets,
                  const std::string& where) {
  const Example whole = qlt::data::tokenize_segments(tiny_tokenizer(), segments);
  int cuts = 0;
  for (size_t budget : budgets) {
    INFO(where << ", max_seq_len " << budget << ", whole " << whole.ids.size() << " tokens");
    bool truncated = true;
    const Example bounded =
        qlt::data::tokenize_truncated(tiny_tokenizer(), segments, budget, truncated);
    const Example expected = cut(whole, budget);
    CHECK(bounded.ids == expected.ids);
    CHECK(bounded.labels == expected.labels);
    CHECK(truncated == (whole.ids.size() > budget));
    cuts += truncated;
  }
  return cuts;
}

std::vector<nlohmann::json> records(const fs::path& file) {
  std::vector<nlohmann::json> out;
  qlt::data::for_each_jsonl(file, [&](const nlohmann::json& o, int64_t) { out.push_back(o); });
  return out;
}

const std::vector<nlohmann::json>& kjv_eval() {
  static const auto r = records(kRoot / "data/kjv/eval.jsonl");
  return r;
}

std::string without_spaces(std::string text) {
  text.erase(std::remove(text.begin(), text.end(), ' '), text.end());
  return text;
}

qlt::data::DataOptions text_options(int64_t max_seq_len) {
  qlt::data::DataOptions o;
  o.format = "text";
  o.max_seq_len = max_seq_len;
  return o;
}

}  // namespace

TEST_CASE("bounded tokenization equals whole + cut on every kjv eval chapter (text format)",
          "[data][bounded]") {
  int cuts = 0, checks = 0;
  for (size_t i = 0; i < kjv_eval().size(); ++i) {
    const std::string text = kjv_eval()[i].at("text");
    cuts += check_bounded(qlt::data::text_segments(text), kBudgets,
                          "data/kjv/eval.jsonl:" + std::to_string(i + 1));
    checks += static_cast<int>(kBudgets.size());
  }
  // Nearly every chapter is longer than 256 tokens: the prefix path is what is checked.
  CHECK(cuts * 10 > checks * 9);
}

TEST_CASE("bounded tokenization equals whole + cut at every budget from 1 to 300",
          "[data][bounded]") {
  std::vector<size_t> budgets;
  for (size_t b = 1; b <= 300; ++b) budgets.push_back(b);
  for (size_t i : {0, 7, 23}) {
    const std::string text = kjv_eval()[i].at("text");
    check_bounded(qlt::data::text_segments(text), budgets,
                  "data/kjv/eval.jsonl:" + std::to_string(i + 1));
  }
}

TEST_CASE("bounded tokenization equals whole + cut on text without spaces (cut inside a word)",
          "[data][bounded]") {
  std::vector<size_t> budgets;
  for (size_t b = 1; b <= 400; b += 3) budgets.push_back(b);
  for (size_t i = 0; i < kjv_eval().size(); i += 4) {
    const std::string text = without_spaces(kjv_eval()[i].at("text"));
    check_bounded(qlt::data::text_segments(text), budgets,
                  "data/kjv/eval.jsonl:" + std::to_string(i + 1) + " without spaces");
    // Multi-byte characters (byte-fallback pieces for the tiny vocabulary) and no spaces.
    std::string accented;
    for (char ch : text)
      accented += ch == 'e' ? std::string("\u00e9") : ch == 'o' ? "\u4e2d" : std::string(1, ch);
    check_bounded(qlt::data::text_segments(accented), budgets,
                  "data/kjv/eval.jsonl:" + std::to_string(i + 1) + " accented, without spaces");
  }
}

TEST_CASE("bounded tokenization equals whole + cut on every wordnet example (alpaca)",
          "[data][bounded]") {
  for (bool train_on_inputs : {false, true}) {
    const auto all = records(kRoot / "data/wordnet/train.jsonl");
    for (size_t i = 0; i < all.size(); ++i) {
      const auto& r = all[i];
      check_bounded(qlt::data::alpaca_segments(r.at("instruction"), r.at("input"), r.at("output"),
                                               train_on_inputs),
                    kBudgets, "data/wordnet/train.jsonl:" + std::to_string(i + 1));
    }
  }
}

TEST_CASE("bounded tokenization equals whole + cut on long chats and alpaca records",
          "[data][bounded]") {
  // Chapters as long turns: the budget ends in a prompt, a reply or between them.
  for (size_t i = 0; i + 3 < kjv_eval().size(); i += 3) {
    const std::string a = kjv_eval()[i].at("text"), b = kjv_eval()[i + 1].at("text"),
                      c = kjv_eval()[i + 2].at("text");
    const std::string where = "chapters " + std::to_string(i + 1) + "..";
    std::vector<qlt::data::ChatMessage> chat = {{"system", c.substr(0, 300)},
                                                {"user", a},
                                                {"assistant", b},
                                                {"user", "Go on."},
                                                {"assistant", c}};
    for (bool train_on_inputs : {false, true}) {
      check_bounded(qlt::data::llama2_chat_segments(chat, train_on_inputs),
                    {2, 8, 64, 256, 1024, 1500, 4096}, where + " llama2");
      check_bounded(qlt::data::chatml_segments(chat, train_on_inputs), {2, 8, 64, 256, 1024, 4096},
                    where + " chatml");
      check_bounded(qlt::data::alpaca_segments(a, b.substr(0, 500), c, train_on_inputs),
                    {2, 8, 64, 256, 1024, 4096}, where + " alpaca");
    }
  }
}

TEST_CASE(
    "bounded tokenization: an example that fits exactly is not truncated, one whose EOS "
    "alone is cut is",
    "[data][bounded]") {
  const std::string text = kjv_eval()[0].at("text");
  const auto whole = qlt::data::tokenize_segments(tiny_tokenizer(), qlt::data::text_segments(text));
  const int64_t n = static_cast<int64_t>(whole.ids.size());  // BOS + text + EOS
  TempJsonl f(nlohmann::json{{"text", text}}.dump() + "\n");

  auto fits = qlt::data::read_examples(f.path, tiny_tokenizer(), text_options(n));
  CHECK(fits.truncated == 0);
  REQUIRE(fits.examples.size() == 1);
  CHECK(fits.examples[0].ids == whole.ids);

  auto no_eos = qlt::data::read_examples(f.path, tiny_tokenizer(), text_options(n - 1));
  CHECK(no_eos.truncated == 1);
  REQUIRE(no_eos.examples.size() == 1);
  CHECK(no_eos.examples[0].ids == std::vector<int64_t>(whole.ids.begin(), whole.ids.end() - 1));
  CHECK(no_eos.examples[0].ids.back() != tiny_tokenizer().eos_id());
}

TEST_CASE("encode_first_tokens tokenizes a bounded prefix of a long text", "[data][bounded]") {
  std::string text;
  for (const auto& r : kjv_eval()) text += r.at("text").get<std::string>() + " ";
  const auto whole = tiny_tokenizer().encode(text, /*add_bos=*/false);
  for (bool fresh : {true, false}) {
    const auto whole_ids = fresh ? whole : qlt::data::encode_continuation(tiny_tokenizer(), text);
    for (size_t n : {1, 9, 257, 4097}) {
      INFO("fresh " << fresh << ", " << n << " tokens");
      const uint64_t before = tiny_tokenizer().encoded_bytes();
      const auto ids = qlt::data::encode_first_tokens(tiny_tokenizer(), text, fresh, n);
      const uint64_t bytes = tiny_tokenizer().encoded_bytes() - before;
      CHECK(ids == std::vector<int64_t>(whole_ids.begin(), whole_ids.begin() + n));
      // 8 bytes per token + 256 covers KJV English (~4.5 bytes per token) in one try.
      CHECK(bytes <= 8 * n + 256 + 2);  // + 2: the "\n" before a continuation, twice
    }
  }
}

// KJV chapters joined with spaces up to `bytes`.
std::string kjv_text(size_t bytes) {
  std::string text;
  for (size_t i = 0; text.size() < bytes; ++i)
    text += kjv_eval()[i % kjv_eval().size()].at("text").get<std::string>() + " ";
  text.resize(bytes);
  return text;
}

// The slow path: a 20 MB single-line example, tokenized whole and then cut, took 45 s
// and 2.3 GB RSS. Bounded, only about 2 KB of it is tokenized, for any length (figures: the
// benchmark at the end of this file). A JSONL line is now limited to kMaxJsonlLineBytes =
// 16 MiB, so the file holds a line just under that; the next test takes the full 20 MB.
TEST_CASE("a 16 MiB single-line example is truncated after tokenizing about 2 KB of it",
          "[data][bounded]") {
  const std::string text = kjv_text(qlt::data::kMaxJsonlLineBytes - (64 << 10));
  TempJsonl f(nlohmann::json{{"text", text}}.dump() + "\n");
  const uint64_t before = tiny_tokenizer().encoded_bytes();
  const auto set = qlt::data::read_examples(f.path, tiny_tokenizer(), text_options(256));
  const uint64_t bytes = tiny_tokenizer().encoded_bytes() - before;
  CHECK(set.truncated == 1);
  REQUIRE(set.examples.size() == 1);
  CHECK(set.examples[0].ids.size() == 256);
  CHECK(bytes <= 8 * 257 + 256);  // one prefix: 8 bytes per wanted token + 256
  // The same ids as the first 256 of [BOS] + tokens of a prefix ending at a word boundary.
  const std::string head = text.substr(0, text.find(' ', 20000));
  auto expected = tiny_tokenizer().encode(head, /*add_bos=*/true);
  expected.resize(256);
  CHECK(set.examples[0].ids == expected);
}

TEST_CASE("a 20 MB text segment is cut after tokenizing about 2 KB of it", "[data][bounded]") {
  const std::string text = kjv_text(20u << 20);
  for (const auto& segments : {qlt::data::text_segments(text),
                               qlt::data::alpaca_segments("Summarize.", text, "A book.", false)}) {
    const uint64_t before = tiny_tokenizer().encoded_bytes();
    bool truncated = false;
    const auto ex = qlt::data::tokenize_truncated(tiny_tokenizer(), segments, 256, truncated);
    const uint64_t bytes = tiny_tokenizer().encoded_bytes() - before;
    CHECK(truncated);
    CHECK(ex.ids.size() == 256);
    CHECK(bytes <= 8 * 257 + 256 + 2);
  }
}

// Benchmark (hidden): OMP_NUM_THREADS=1 build/tests/qlt_tests "[.bounded_bench]" -s
// Figures (2-core dev machine, Debian libsentencepiece): tokenize_truncated of the 20 MB
// example 0.046 s; read_examples of a 16 MiB line 0.23 s (mostly JSON parsing); the whole
// 20 MB tokenized, as read_examples did before, 43.8 s (peak RSS 1.9 GB).
TEST_CASE("benchmark: a 20 MB example, tokenized whole versus bounded", "[.bounded_bench]") {
  const auto seconds_of = [](const std::function<void()>& f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const std::string text = kjv_text(20u << 20);
  bool truncated = false;
  const double bounded = seconds_of([&] {
    qlt::data::tokenize_truncated(tiny_tokenizer(), qlt::data::text_segments(text), 256, truncated);
  });
  const std::string line = kjv_text(qlt::data::kMaxJsonlLineBytes - (64 << 10));
  TempJsonl f(nlohmann::json{{"text", line}}.dump() + "\n");
  const double file =
      seconds_of([&] { qlt::data::read_examples(f.path, tiny_tokenizer(), text_options(256)); });
  size_t n = 0;
  const double whole = seconds_of([&] { n = tiny_tokenizer().encode(text, true, true).size(); });
  WARN("20 MB example: tokenize_truncated "
       << bounded << " s; read_examples of a " << line.size() << "-byte line " << file
       << " s; the whole 20 MB tokenized (as before) " << whole << " s, " << n << " tokens");
}
