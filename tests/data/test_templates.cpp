// Chat templates (data/templates.h) against transformers' apply_chat_template
// (tests/fixtures/templates/cases.json, scripts/fixtures/make_template_fixtures.py): "auto"
// recognition of the models' own templates, the rendered text of every template and chat, the
// token ids on a SentencePiece, a Llama-3-style BPE and SmolLM2's GGUF vocabulary; and the BOS
// conventions of the tokenizers.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/errors.h"
#include "data/segments.h"
#include "data/templates.h"
#include "model/causal_lm_loss.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::data::ChatMessage;
using qlt::data::ChatTemplate;
using qlt::data::Segment;
using qlt::test::kFixtures;
using qlt::test::kSmolLm2Gguf;
using qlt::test::tiny_tokenizer;
using qlt::tokenizer::Tokenizer;

const nlohmann::json& template_cases() {
  static const nlohmann::json j = qlt::test::read_json(kFixtures / "templates/cases.json");
  return j;
}

const Tokenizer& llama3_bpe() {
  static auto t = Tokenizer::load(kFixtures / "tokenizer_bpe/llama3_style");
  return t;
}
// SmolLM2's GGUF vocabulary, or nullptr when the model file is absent (scripts/models/smollm2.sh
// fetches it); then the caller SKIPs, except under CI, where that is a failure.
const Tokenizer* smollm2_tokenizer() {
  static std::unique_ptr<Tokenizer> t =
      fs::exists(kSmolLm2Gguf) ? std::make_unique<Tokenizer>(Tokenizer::load(kSmolLm2Gguf))
                               : nullptr;
  if (!t && std::getenv("CI") != nullptr) FAIL("CI is set but " << kSmolLm2Gguf << " is missing");
  return t.get();
}

std::vector<ChatMessage> chat(size_t i) {
  std::vector<ChatMessage> out;
  for (const auto& m : template_cases()["chats"][i]) out.push_back({m["role"], m["content"]});
  return out;
}

ChatTemplate our_template(const std::string& fixture_name) {
  const auto& r = template_cases()["recognized"][fixture_name];
  return {r["name"], r["default_system"]};
}

// Training segments for a chat ending with an assistant message, else the generation prompt.
std::vector<Segment> segments_of(const ChatTemplate& t, const std::vector<ChatMessage>& messages,
                                 bool train_on_inputs = false) {
  return messages.back().role == "assistant"
             ? qlt::data::chat_segments(t, messages, train_on_inputs)
             : qlt::data::chat_prompt_segments(t, messages);
}

// The text the segments stand for, as the template renders it: a template's bos_token and EOS
// as their texts, the tokenizer-convention BOS as nothing (tokenizer(text) adds it, not the
// template).
std::string text_of(const std::vector<Segment>& segments, const std::string& bos,
                    const std::string& eos) {
  std::string out;
  for (const auto& s : segments) {
    switch (s.kind) {
      case Segment::Kind::kBos:
        break;
      case Segment::Kind::kTemplateBos:
        out += bos;
        break;
      case Segment::Kind::kEos:
        out += eos;
        break;
      case Segment::Kind::kText:
        out += s.text;
        break;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("auto recognizes the llama2, llama3, ChatML and SmolLM2 templates", "[data][templates]") {
  for (const auto& [name, jinja] : template_cases()["templates"].items()) {
    INFO(name);
    const auto got = qlt::data::recognize_chat_template(jinja.get<std::string>());
    REQUIRE(got.has_value());
    CHECK(got->name == our_template(name).name);
    CHECK(got->default_system == our_template(name).default_system);
  }
}

TEST_CASE("auto refuses templates it cannot reproduce (Llama 3.1, Mistral, Zephyr, tools)",
          "[data][templates]") {
  for (const auto& [name, jinja] : template_cases()["refused"].items()) {
    INFO(name);
    CHECK_FALSE(qlt::data::recognize_chat_template(jinja.get<std::string>()).has_value());
  }
  CHECK_FALSE(qlt::data::recognize_chat_template("").has_value());
  CHECK_FALSE(qlt::data::recognize_chat_template("{{ messages }}").has_value());
}

TEST_CASE("every template renders transformers' text for every chat", "[data][templates]") {
  size_t checked = 0;
  for (const auto& r : template_cases()["rendered"]) {
    const std::string name = r["template"];
    const auto messages = chat(r["chat"]);
    INFO(name << ", chat " << r["chat"] << ", tokens of " << r["tokenizer"]);
    const auto segments = segments_of(our_template(name), messages);
    CHECK(text_of(segments, r["bos_token"], r["eos_token"]) == r["text"].get<std::string>());
    ++checked;
  }
  CHECK(checked == 60);
}

TEST_CASE("chat ids equal the reference on SentencePiece and Llama-3-style BPE vocabularies",
          "[data][templates]") {
  size_t checked = 0;
  for (const auto& r : template_cases()["ids"]) {
    const std::string tokenizer = r["tokenizer"];
    if (tokenizer == "smollm2") continue;  // next test
    const Tokenizer& tok = tokenizer == "tiny" ? tiny_tokenizer() : llama3_bpe();
    const std::string name = r["template"];
    INFO(name << " on " << tokenizer << ", chat " << r["chat"]);
    const auto ex =
        qlt::data::tokenize_segments(tok, segments_of(our_template(name), chat(r["chat"])));
    CHECK(ex.ids == r["ids"].get<std::vector<int64_t>>());
    ++checked;
  }
  CHECK(checked == 24);
}

TEST_CASE("SmolLM2's own ChatML template: ids equal llama.cpp's on its GGUF vocabulary",
          "[data][templates][smollm2]") {
  const Tokenizer* tok = smollm2_tokenizer();
  if (!tok) {
    WARN("SKIPPED: " << kSmolLm2Gguf << " is absent (scripts/models/smollm2.sh fetches it)");
    return;
  }
  CHECK_FALSE(tok->add_bos_by_default());
  const ChatTemplate t = qlt::data::resolve_chat_template("auto", *tok, kSmolLm2Gguf.string());
  CHECK(t.name == "chatml");
  CHECK(t.default_system == our_template("smollm2").default_system);
  size_t checked = 0;
  for (const auto& r : template_cases()["ids"]) {
    if (r["tokenizer"] != "smollm2") continue;
    INFO("chat " << r["chat"]);
    const auto ex = qlt::data::tokenize_segments(*tok, segments_of(t, chat(r["chat"])));
    CHECK(ex.ids == r["ids"].get<std::vector<int64_t>>());
    ++checked;
  }
  CHECK(checked == 6);
  // No BOS in the text format either (the GGUF says add_bos_token = false); EOS <|im_end|>.
  const auto ex = qlt::data::tokenize_segments(*tok, qlt::data::text_segments("Hello"));
  CHECK(ex.ids == std::vector<int64_t>{tok->encode("Hello", false)[0], tok->eos_id()});
  CHECK(tok->id_to_piece(tok->eos_id()) == "<|im_end|>");
}

TEST_CASE("llama3 labels: assistant content and <|eot_id|> trained, headers not",
          "[data][templates]") {
  const std::vector<ChatMessage> messages = {{"user", "Who?"}, {"assistant", " God. "}};
  const auto ex = qlt::data::tokenize_segments(
      llama3_bpe(), qlt::data::llama3_chat_segments(messages, /*train_on_inputs=*/false));
  std::vector<int64_t> trained;
  for (size_t i = 0; i < ex.ids.size(); ++i) {
    if (ex.labels[i] != qlt::model::kIgnoreIndex) trained.push_back(ex.ids[i]);
  }
  CHECK(llama3_bpe().decode(trained) == "God.<|eot_id|>");
  CHECK(ex.ids.front() == llama3_bpe().bos_id());
  CHECK(llama3_bpe().id_to_piece(ex.ids.back()) == "<|eot_id|>");
}

TEST_CASE("resolve_chat_template: names as given, auto from the model, errors name the choices",
          "[data][templates]") {
  CHECK(qlt::data::resolve_chat_template("chatml", tiny_tokenizer(), "m").name == "chatml");
  CHECK(qlt::data::resolve_chat_template("llama3", tiny_tokenizer(), "m").name == "llama3");
  const auto auto_llama3 =
      qlt::data::resolve_chat_template("auto", llama3_bpe(), "tests/fixtures/tokenizer_bpe");
  CHECK(auto_llama3.name == "llama3");
  CHECK(qlt::data::end_of_turn_text(auto_llama3) == "<|eot_id|>");
  CHECK_THROWS_WITH(qlt::data::resolve_chat_template("auto", tiny_tokenizer(), "data/tiny-llama"),
                    Contains("the model data/tiny-llama has no chat template") &&
                        Contains("llama2, llama3, chatml"));
  CHECK_THROWS_AS(qlt::data::resolve_chat_template("vicuna", tiny_tokenizer(), "m"),
                  qlt::UserError);
}

TEST_CASE("BOS conventions: the tokenizer's for text, the template's bos_token always",
          "[data][templates]") {
  // The tiny tokenizer adds BOS by default (tokenizer_config.json add_bos_token: true).
  REQUIRE(tiny_tokenizer().add_bos_by_default());
  const auto text =
      qlt::data::tokenize_segments(tiny_tokenizer(), qlt::data::text_segments("And God"));
  CHECK(text.ids == tiny_tokenizer().encode("And God", true, true));
  // A template's own bos_token is emitted whatever the tokenizer's default.
  const auto prompt = qlt::data::tokenize_segments(
      tiny_tokenizer(), qlt::data::chat_prompt_segments({"llama2", ""}, {{"user", "Who?"}}));
  CHECK(prompt.ids == tiny_tokenizer().encode("[INST] Who? [/INST]", true));
}

TEST_CASE("continuations: the sentinel for SentencePiece, the text as is for byte-level BPE",
          "[data][templates][segments]") {
  CHECK(qlt::data::tokenizer_marks_text_start(tiny_tokenizer()));
  CHECK_FALSE(qlt::data::tokenizer_marks_text_start(llama3_bpe()));
  // SentencePiece: mid-string "God" has no dummy prefix, so it differs from a fresh "God".
  CHECK(qlt::data::encode_continuation(tiny_tokenizer(), "God") !=
        tiny_tokenizer().encode("God", false));
  // BPE: the same ids, also where the sentinel newline would merge with the text.
  for (const std::string text : {"God", " God", "\n\nGod", "\n", "  \n x"}) {
    INFO(text);
    CHECK(qlt::data::encode_continuation(llama3_bpe(), text) == llama3_bpe().encode(text, false));
  }
  // A chat whose content starts with newlines tokenizes as the whole string does (a reply that
  // started with one would not: "\n" + "\nYes" across the trained boundary, segments.h).
  const std::vector<ChatMessage> messages = {{"user", "\n\nHi"}, {"assistant", "Yes"}};
  const auto ex = qlt::data::tokenize_segments(
      llama3_bpe(), qlt::data::chat_segments({"chatml", ""}, messages, false));
  CHECK(ex.ids == llama3_bpe().encode(
                      "<|im_start|>user\n\n\nHi<|im_end|>\n<|im_start|>assistant\nYes<|im_end|>\n",
                      llama3_bpe().add_bos_by_default()));
}
