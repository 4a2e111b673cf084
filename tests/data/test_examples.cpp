// Training examples: each format and template, exact token and label layouts on the bundled
// tiny tokenizer, truncation, and every documented error.
#include <catch2/catch.hpp>
#include <fstream>

#include "core/errors.h"
#include "data/examples.h"
#include "data/segments.h"
#include "data/templates.h"
#include "model/causal_lm_loss.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::data::DataOptions;
using qlt::data::read_examples;
using qlt::model::kIgnoreIndex;
using qlt::test::TempJsonl;
using qlt::test::tiny_tokenizer;
using Ids = std::vector<int64_t>;

DataOptions options(const std::string& format, bool train_on_inputs = false,
                    int64_t max_seq_len = 512, const std::string& chat_template = "llama2") {
  DataOptions o;
  o.format = format;
  o.train_on_inputs = train_on_inputs;
  o.max_seq_len = max_seq_len;
  o.chat_template = chat_template;
  return o;
}

Ids concat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// labels expected: ignore on [0, n_ignored), ids after; labels[0] always ignored.
Ids labels_from(const Ids& ids, size_t n_ignored) {
  Ids labels = ids;
  for (size_t i = 0; i < std::max<size_t>(n_ignored, 1); ++i) labels[i] = kIgnoreIndex;
  return labels;
}

qlt::data::Example only(const qlt::data::ExampleSet& set) {
  REQUIRE(set.examples.size() == 1);
  return set.examples[0];
}

}  // namespace

TEST_CASE("text format: [BOS] text [EOS], all but BOS trained", "[data][examples]") {
  TempJsonl f("{\"text\": \"In the beginning God created the heaven and the earth.\"}\n");
  auto ex = only(read_examples(f.path, tiny_tokenizer(), options("text")));
  Ids ids =
      tiny_tokenizer().encode("In the beginning God created the heaven and the earth.", true, true);
  CHECK(ex.ids == ids);
  CHECK(ex.labels == labels_from(ids, 1));
  CHECK(ex.ids.front() == tiny_tokenizer().bos_id());
  CHECK(ex.ids.back() == tiny_tokenizer().eos_id());
}

TEST_CASE("alpaca prompt text is Stanford Alpaca's, both variants", "[data][examples]") {
  CHECK(qlt::data::alpaca_prompt("Name it.", "") ==
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nName it.\n\n### Response:");
  CHECK(qlt::data::alpaca_prompt("Name it.", "a dog") ==
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nName it.\n\n### Input:\na dog\n\n### Response:");
}

TEST_CASE("alpaca format: prompt untrained, output + EOS trained", "[data][examples]") {
  const std::string instruction = "Define the word.", input = "light",
                    output = "electromagnetic radiation that can produce a visual sensation";
  const auto prompt = qlt::data::alpaca_prompt(instruction, input);
  // Stanford's train.py tokenizes prompt + output as one string; segment-wise tokenization
  // must give the same ids, with the mask exactly at the prompt's end.
  const Ids whole = tiny_tokenizer().encode(prompt + output, true, true);
  const size_t prompt_len = tiny_tokenizer().encode(prompt, true).size();
  TempJsonl f(
      R"({"instruction": "Define the word.", "input": "light", "output": "electromagnetic radiation that can produce a visual sensation"})"
      "\n");
  SECTION("train_on_inputs false") {
    auto ex = only(read_examples(f.path, tiny_tokenizer(), options("alpaca", false)));
    CHECK(ex.ids == whole);
    CHECK(ex.labels == labels_from(whole, prompt_len));
    CHECK(qlt::data::trained_tokens(ex) == static_cast<int64_t>(whole.size() - prompt_len));
  }
  SECTION("train_on_inputs true") {
    auto ex = only(read_examples(f.path, tiny_tokenizer(), options("alpaca", true)));
    CHECK(ex.ids == whole);
    CHECK(ex.labels == labels_from(whole, 1));
  }
}

TEST_CASE("alpaca format: absent or empty input selects the no-input prompt", "[data][examples]") {
  TempJsonl f(
      "{\"instruction\": \"Say it.\", \"output\": \"Amen.\"}\n"
      "{\"instruction\": \"Say it.\", \"input\": \"\", \"output\": \"Amen.\"}\n");
  auto set = read_examples(f.path, tiny_tokenizer(), options("alpaca"));
  REQUIRE(set.examples.size() == 2);
  const auto prompt = qlt::data::alpaca_prompt("Say it.", "");
  CHECK(set.examples[0].ids == tiny_tokenizer().encode(prompt + "Amen.", true, true));
  CHECK(set.examples[1].ids == set.examples[0].ids);
  CHECK(set.records == 2);
  CHECK(set.trained_tokens == 2 * qlt::data::trained_tokens(set.examples[0]));
}

TEST_CASE("llama2 chat: Meta's chat_completion layout, system folded into turn 1",
          "[data][examples]") {
  TempJsonl f(
      R"({"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "  Who made light? "}, {"role": "assistant", "content": "God.\n"}, {"role": "user", "content": "When?"}, {"role": "assistant", "content": " In the beginning."}]})"
      "\n");
  // Meta's llama/generation.py: per (user, assistant) pair
  // encode(f"{B_INST} {user.strip()} {E_INST} {answer.strip()} ", bos=True, eos=True).
  // The system text is folded in BEFORE the strip, so the user's leading spaces stay.
  const std::string user1 =
      "[INST] <<SYS>>\nAnswer briefly.\n<</SYS>>\n\n  Who made light? [/INST]";
  const std::string user2 = "[INST] When? [/INST]";
  const Ids turn1 = tiny_tokenizer().encode(user1 + " God. ", true, true);
  const Ids turn2 = tiny_tokenizer().encode(user2 + " In the beginning. ", true, true);
  const Ids whole = concat({turn1, turn2});
  const size_t u1 = tiny_tokenizer().encode(user1, true).size(),
               u2 = tiny_tokenizer().encode(user2, true).size();
  SECTION("train_on_inputs false: assistant replies and their EOS") {
    auto ex = only(read_examples(f.path, tiny_tokenizer(), options("chat", false)));
    CHECK(ex.ids == whole);
    CHECK(ex.labels == concat({labels_from(turn1, u1), labels_from(turn2, u2)}));
    CHECK(ex.labels.back() == tiny_tokenizer().eos_id());
  }
  SECTION("train_on_inputs true: everything but each BOS") {
    auto ex = only(read_examples(f.path, tiny_tokenizer(), options("chat", true)));
    CHECK(ex.ids == whole);
    CHECK(ex.labels == concat({labels_from(turn1, 1), labels_from(turn2, 1)}));
  }
}

TEST_CASE("chatml chat: whole-string ids, assistant content and <|im_end|> trained",
          "[data][examples]") {
  TempJsonl f(
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who made light?"}, {"role": "assistant", "content": "God."}]})"
      "\n");
  const std::string before =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho made light?<|im_end|>\n"
      "<|im_start|>assistant\n";
  const std::string reply = "God.<|im_end|>", after = "\n";
  const Ids whole = tiny_tokenizer().encode(before + reply + after, true);
  const size_t start = tiny_tokenizer().encode(before, true).size();
  const size_t end = tiny_tokenizer().encode(before + reply, true).size();
  SECTION("train_on_inputs false") {
    auto ex = only(read_examples(f.path, tiny_tokenizer(), options("chat", false, 512, "chatml")));
    CHECK(ex.ids == whole);
    Ids labels(whole.size(), kIgnoreIndex);
    for (size_t i = start; i < end; ++i) labels[i] = whole[i];
    CHECK(ex.labels == labels);
    // The markers are plain text to this tokenizer: several ordinary pieces each.
    CHECK(tiny_tokenizer().encode("<|im_end|>", false).size() > 1);
  }
  SECTION("train_on_inputs true") {
    auto ex = only(read_examples(f.path, tiny_tokenizer(), options("chat", true, 512, "chatml")));
    CHECK(ex.ids == whole);
    CHECK(ex.labels == labels_from(whole, 1));
  }
}

TEST_CASE("chatml chat: two turns, each reply trained up to its <|im_end|>", "[data][examples]") {
  TempJsonl f(
      R"({"messages": [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "God."}, {"role": "user", "content": "When?"}, {"role": "assistant", "content": "In the beginning."}]})"
      "\n");
  const std::vector<std::string> parts = {
      "<|im_start|>user\nWho?<|im_end|>\n<|im_start|>assistant\n", "God.<|im_end|>",
      "\n<|im_start|>user\nWhen?<|im_end|>\n<|im_start|>assistant\n", "In the beginning.<|im_end|>",
      "\n"};
  std::string text;
  Ids bounds = {0};  // token offsets of the part ends, from prefixes of the whole string
  for (const auto& p : parts) {
    text += p;
    bounds.push_back(int64_t(tiny_tokenizer().encode(text, true).size()));
  }
  const Ids whole = tiny_tokenizer().encode(text, true);
  auto ex = only(read_examples(f.path, tiny_tokenizer(), options("chat", false, 512, "chatml")));
  CHECK(ex.ids == whole);
  Ids labels(whole.size(), kIgnoreIndex);
  for (size_t part : {1, 3}) {
    for (auto i = bounds[part]; i < bounds[part + 1]; ++i) labels[size_t(i)] = whole[size_t(i)];
  }
  CHECK(ex.labels == labels);
}

TEST_CASE("a tokenizer without BOS: no BOS id, the first token still unlabelled",
          "[data][examples]") {
  auto no_bos = qlt::tokenizer::Tokenizer::load_file(fs::path(QLT_SOURCE_DIR) /
                                                     "tests/data/no_bos_tokenizer.model");
  REQUIRE(no_bos.bos_id() == -1);
  TempJsonl f("{\"text\": \"And the earth\"}\n");
  auto ex = only(read_examples(f.path, no_bos, options("text")));
  const Ids ids = no_bos.encode("And the earth", false, true);
  CHECK(ex.ids == ids);
  CHECK(ex.labels == labels_from(ids, 1));
}

TEST_CASE("python_strip removes Python's whitespace, including Unicode spaces",
          "[data][examples]") {
  using qlt::data::python_strip;
  CHECK(python_strip(" \t\n a b \r\f\v") == "a b");
  CHECK(python_strip("\xc2\xa0x\xe3\x80\x80") == "x");  // U+00A0, U+3000
  CHECK(python_strip("\x1c\x1fy") == "y");
  CHECK(python_strip("  ") == "");
  CHECK(python_strip("\xc3\xa9") == "\xc3\xa9");  // é stays
}

TEST_CASE("truncation keeps the first max_seq_len tokens; untrainable examples are dropped",
          "[data][examples]") {
  const std::string line =
      R"({"instruction": "Define the word.", "input": "light", "output": "electromagnetic radiation that can produce a visual sensation"})";
  const auto prompt = qlt::data::alpaca_prompt("Define the word.", "light");
  const Ids whole = tiny_tokenizer().encode(
      prompt + "electromagnetic radiation that can produce a visual sensation", true, true);
  const auto prompt_len = static_cast<int64_t>(tiny_tokenizer().encode(prompt, true).size());
  SECTION("cut inside the output") {
    TempJsonl f(line + "\n");
    auto set = read_examples(f.path, tiny_tokenizer(), options("alpaca", false, prompt_len + 3));
    auto ex = only(set);
    CHECK(ex.ids == Ids(whole.begin(), whole.begin() + prompt_len + 3));
    CHECK(qlt::data::trained_tokens(ex) == 3);
    CHECK(set.truncated == 1);
    CHECK(set.dropped == 0);
  }
  SECTION("cut inside the prompt: dropped, counted; the others kept") {
    TempJsonl f(line + "\n{\"instruction\": \"x\", \"output\": \"y\"}\n");
    const auto short_len = static_cast<int64_t>(
        tiny_tokenizer().encode(qlt::data::alpaca_prompt("x", "") + "y", true, true).size());
    REQUIRE(short_len < prompt_len);
    auto set = read_examples(f.path, tiny_tokenizer(), options("alpaca", false, short_len));
    CHECK(set.records == 2);
    CHECK(set.dropped == 1);
    CHECK(set.truncated == 1);
    REQUIRE(set.examples.size() == 1);
    CHECK(set.examples[0].ids.size() == static_cast<size_t>(short_len));
  }
  SECTION("no example left: error naming the file") {
    TempJsonl f(line + "\n");
    REQUIRE_THROWS_WITH(
        read_examples(f.path, tiny_tokenizer(), options("alpaca", false, prompt_len)),
        Contains("dataset " + f.path.string() + ": no example has a token") &&
            Contains("raise data.max_seq_len"));
  }
}

TEST_CASE("example errors name file, line and the fix", "[data][examples][errors]") {
  auto fails = [](const std::string& content, const DataOptions& o, const std::string& what) {
    TempJsonl f(content);
    REQUIRE_THROWS_AS(read_examples(f.path, tiny_tokenizer(), o), qlt::UserError);
    REQUIRE_THROWS_WITH(read_examples(f.path, tiny_tokenizer(), o), Contains(what));
  };
  const auto chat = options("chat");
  SECTION("malformed JSON") {
    TempJsonl f("{\"text\": \"a\"}\n{\"text\": \n");
    REQUIRE_THROWS_WITH(read_examples(f.path, tiny_tokenizer(), options("text")),
                        Contains(f.path.string() + ":2: not valid JSON"));
  }
  SECTION("text: missing or non-string field") {
    fails("{\"txt\": \"a\"}\n", options("text"),
          ":1: format \"text\" needs a string field \"text\"");
    fails("{\"text\": [1]}\n", options("text"), "\"text\" (got array)");
  }
  SECTION("alpaca: missing or non-string fields") {
    fails("{\"output\": \"a\"}\n", options("alpaca"),
          ":1: format \"alpaca\" needs a string field \"instruction\"");
    fails("{\"instruction\": \"a\", \"output\": 3}\n", options("alpaca"),
          "string field \"output\" (got number)");
    fails("{\"instruction\": \"a\", \"input\": null, \"output\": \"b\"}\n", options("alpaca"),
          "string field \"input\" (got null)");
  }
  SECTION("chat: messages missing, not objects, fields not strings") {
    fails("{\"text\": \"a\"}\n", chat, ":1: format \"chat\" needs an array field \"messages\"");
    fails("{\"messages\": [\"hi\"]}\n", chat, ":1: messages[0] must be an object");
    fails(R"({"messages": [{"role": "user", "content": 1}]})"
          "\n",
          chat, "messages[0] must be an object with string fields");
  }
  SECTION("chat: unknown role") {
    fails(R"({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]})"
          "\n",
          chat, ":1: messages[1].role \"bot\" is unknown; use system, user or assistant");
  }
  SECTION("chat: roles not alternating") {
    fails(
        R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]})"
        "\n",
        options("chat", false, 512, "chatml"),
        ":1: messages[1] has role \"user\" where \"assistant\" is expected");
    fails(R"({"messages": [{"role": "assistant", "content": "a"}]})"
          "\n",
          chat, "messages[0] has role \"assistant\" where \"user\" is expected");
    fails(
        R"({"messages": [{"role": "system", "content": "a"}, {"role": "system", "content": "b"}]})"
        "\n",
        chat, "messages[1] has role \"system\" where \"user\" is expected");
  }
  SECTION("chat: not ending with an assistant turn, or empty") {
    fails(
        R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]})"
        "\n",
        chat, ":1: the last message must have role \"assistant\"");
    fails(R"({"messages": [{"role": "system", "content": "a"}]})"
          "\n",
          chat, "the last message must have role \"assistant\"");
    fails("{\"messages\": []}\n", chat, ":1: \"messages\" is empty");
  }
  SECTION("unknown template (format, max_seq_len: refused by the config, test_config.cpp)") {
    fails("{\"text\": \"a\"}\n", options("chat", false, 512, "vicuna"),
          "data.chat_template \"vicuna\" is unknown");
  }
  SECTION("a tokenizer that merges a newline with the next text") {
    // newline_merge_tokenizer.model has the piece "\nA" (tests/data/make_test_tokenizers.py): an
    // output starting with "A" cannot be tokenized on its own.
    auto merging = qlt::tokenizer::Tokenizer::load_file(fs::path(QLT_SOURCE_DIR) /
                                                        "tests/data/newline_merge_tokenizer.model");
    TempJsonl f(
        "{\"instruction\": \"x\", \"output\": \"the end\"}\n"
        "{\"instruction\": \"x\", \"output\": \"And so\"}\n");
    REQUIRE_THROWS_WITH(read_examples(f.path, merging, options("alpaca")),
                        Contains(f.path.string() + ":2: the tokenizer merges a newline") &&
                            Contains("use data.format \"text\""));
    // The text format needs no segment boundaries and works with it.
    TempJsonl t("{\"text\": \"And so\"}\n");
    CHECK(read_examples(t.path, merging, options("text")).examples.size() == 1);
  }
  SECTION("empty file, missing file") {
    fails("\n \n", options("text"), "holds no examples");
    REQUIRE_THROWS_WITH(read_examples("/no/such.jsonl", tiny_tokenizer(), options("text")),
                        Contains("dataset /no/such.jsonl does not exist"));
  }
}
