// Bad tokenizer files are UserErrors (exit 2) that name the file, the JSON path or GGUF key
// and the value: unsupported models, pre-tokenizers, normalizers, decoders and
// post-processors; merges that name unknown tokens; vocabulary ids out of range or twice;
// GGUF vocabularies of unknown type or pre-tokenizer, arrays of mismatched lengths.
#include <catch2/catch.hpp>

#include "core/errors.h"
#include "io/gguf_writer.h"
#include "io/safetensors_test_util.h"
#include "tokenizer/bpe_test_util.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::io::GgufValue;
using qlt::io::GgufValueType;
using qlt::tokenizer::Tokenizer;

// A small valid byte-level tokenizer.json: the 256 byte-level characters, "ab" and "Ġa".
json base_json() {
  json vocab = json::object();
  const std::string chars[] = {"a", "b", "c", "Ġ", "<", "|", ">"};
  int id = 0;
  for (const auto& c : chars) vocab[c] = id++;
  vocab["ab"] = id++;
  vocab["Ġa"] = id++;
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", json::array({{{"id", id},
                                         {"content", "<|x|>"},
                                         {"special", true},
                                         {"single_word", false},
                                         {"lstrip", false},
                                         {"rstrip", false},
                                         {"normalized", false}}})},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "ByteLevel"},
            {"add_prefix_space", false},
            {"trim_offsets", true},
            {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", json::array({"a b", json::array({"Ġ", "a"})})}}}};
}

Tokenizer load_tokenizer_json(const json& j) {
  return Tokenizer::from_tokenizer_json(j.dump(), "bad/tokenizer.json");
}

void require_tokenizer_json_error(const json& j, const std::vector<std::string>& parts) {
  INFO(j.dump().substr(0, 400));
  try {
    load_tokenizer_json(j);
    FAIL("no error");
  } catch (const qlt::UserError& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.rfind("bad/tokenizer.json: ", 0) == 0);
    for (const auto& part : parts) CHECK_THAT(what, Contains(part));
  }
}

}  // namespace

TEST_CASE("the small tokenizer.json of these tests loads and works", "[bpe][errors]") {
  const auto t = load_tokenizer_json(base_json());
  CHECK(t.encode("ab a<|x|>c", false) == std::vector<int64_t>{7, 8, 9, 2});
  CHECK(t.decode({7, 8, 9, 2}) == "ab a<|x|>c");
}

TEST_CASE("tokenizer.json: unsupported parts are named with their JSON path", "[bpe][errors]") {
  SECTION("model types") {
    for (const std::string type : {"WordPiece", "Unigram", "WordLevel"}) {
      auto j = base_json();
      j["model"]["type"] = type;
      require_tokenizer_json_error(
          j, {"model.type", "the model type \"" + type + "\" is not supported"});
    }
  }
  SECTION("pre-tokenizers") {
    auto j = base_json();
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}};
    require_tokenizer_json_error(j, {"pre_tokenizer.type", "\"Metaspace\" is not supported"});
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", json::array({{{"type", "Whitespace"}}})}};
    require_tokenizer_json_error(j, {"pre_tokenizer.pretokenizers[0].type", "\"Whitespace\""});
    j["pre_tokenizer"] = nullptr;
    require_tokenizer_json_error(j, {"no ByteLevel step"});
    j["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers", json::array({{{"type", "ByteLevel"}}, {{"type", "Digits"}}})}};
    require_tokenizer_json_error(j, {"pre_tokenizer.pretokenizers[1]", "after the ByteLevel"});
    j["pre_tokenizer"] = {{"type", "Split"},
                          {"pattern", {{"Regex", "(unclosed"}}},
                          {"behavior", "Isolated"},
                          {"invert", false}};
    require_tokenizer_json_error(j, {"pre_tokenizer.pattern.Regex", "(unclosed", "PCRE2"});
    j["pre_tokenizer"] = {{"type", "Split"},
                          {"pattern", {{"Regex", "a"}}},
                          {"behavior", "Sideways"},
                          {"invert", false}};
    require_tokenizer_json_error(j, {"pre_tokenizer.behavior", "\"Sideways\""});
  }
  SECTION("normalizers") {
    auto j = base_json();
    j["normalizer"] = {{"type", "NFC"}};
    require_tokenizer_json_error(j, {"normalizer.type", "\"NFC\" is not supported"});
    j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFKC"}}})}};
    require_tokenizer_json_error(j, {"normalizer.type", "\"Sequence\""});
  }
  SECTION("decoders and post-processors") {
    auto j = base_json();
    j["decoder"] = {{"type", "WordPiece"}};
    require_tokenizer_json_error(j, {"decoder.type", "\"WordPiece\""});
    j["decoder"] = nullptr;
    require_tokenizer_json_error(j, {"no ByteLevel decoder"});
    j = base_json();
    j["post_processor"] = {{"type", "BertProcessing"}};
    require_tokenizer_json_error(j, {"post_processor.type", "\"BertProcessing\""});
  }
  SECTION("model options") {
    auto j = base_json();
    j["model"]["dropout"] = 0.1;
    require_tokenizer_json_error(j, {"model.dropout", "dropout"});
    j = base_json();
    j["model"]["continuing_subword_prefix"] = "##";
    require_tokenizer_json_error(j, {"model.continuing_subword_prefix"});
    j = base_json();
    j["model"]["unk_token"] = "<unk>";
    require_tokenizer_json_error(j, {"model.unk_token", "\"<unk>\" is not in model.vocab"});
  }
}

TEST_CASE("tokenizer.json: broken vocabularies and merges", "[bpe][errors]") {
  SECTION("a merge names a token that is not in the vocabulary") {
    auto j = base_json();
    j["model"]["merges"] = json::array({"a b", "a z"});
    require_tokenizer_json_error(
        j, {"model.merges[1]", "\"z\", which is not a token of the vocabulary"});
    j["model"]["merges"] = json::array({json::array({"b", "c"})});  // "bc" is not a token
    require_tokenizer_json_error(j, {"model.merges[0]", "\"bc\""});
  }
  SECTION("malformed merges") {
    auto j = base_json();
    j["model"]["merges"] = json::array({"ab"});
    require_tokenizer_json_error(j, {"model.merges[0]", "separated by one space"});
    j["model"]["merges"] = json::array({"a b c"});
    require_tokenizer_json_error(j, {"model.merges[0]"});
    j["model"]["merges"] = json::array({json::array({"a"})});
    require_tokenizer_json_error(j, {"model.merges[0]", "pair"});
    j["model"]["merges"] = json::array({42});
    require_tokenizer_json_error(j, {"model.merges[0]", "the number 42"});
  }
  SECTION("vocabulary ids out of range, negative or twice") {
    auto j = base_json();
    j["model"]["vocab"]["b"] = 99;
    require_tokenizer_json_error(j,
                                 {"model.vocab[\"b\"]", "id 99 is out of range", "must be 0 to 8"});
    j = base_json();
    j["model"]["vocab"]["b"] = -1;
    require_tokenizer_json_error(j, {"model.vocab[\"b\"]", "id -1 is out of range"});
    j = base_json();
    j["model"]["vocab"]["b"] = 0;
    require_tokenizer_json_error(j, {"model.vocab", "both have id 0"});
    j = base_json();
    j["model"]["vocab"]["b"] = "one";
    require_tokenizer_json_error(j, {"model.vocab[\"b\"]", "whole number"});
    j = base_json();
    j["model"]["vocab"] = json::object();
    require_tokenizer_json_error(j, {"model.vocab", "is empty"});
  }
  SECTION("added tokens with ids Hugging Face would not give them") {
    auto j = base_json();
    j["added_tokens"][0]["id"] = 50;
    require_tokenizer_json_error(j, {"added_tokens[0].id", "has id 50", "gives it id 9"});
    j = base_json();
    j["added_tokens"][0]["content"] = "ab";  // in the vocabulary, id 7
    require_tokenizer_json_error(j, {"added_tokens[0].id", "\"ab\" has id 9", "gives it id 7"});
    j = base_json();
    j["added_tokens"].push_back(j["added_tokens"][0]);
    j["added_tokens"][1]["id"] = 10;
    require_tokenizer_json_error(j, {"added_tokens[1]", "listed twice"});
    j = base_json();
    j["added_tokens"][0]["content"] = "";
    require_tokenizer_json_error(j, {"added_tokens[0].content", "is empty"});
  }
  SECTION("not an object / not JSON") {
    require_tokenizer_json_error(json::array(), {"must be an object"});
    CHECK_THROWS_AS(Tokenizer::from_tokenizer_json("{\"model\": ", "bad/tokenizer.json"),
                    qlt::UserError);
  }
}

TEST_CASE("tokenizer_config.json: wrong values are named", "[bpe][errors]") {
  qlt::test::TempDir dir;
  std::ofstream(dir / "tokenizer.json") << base_json().dump();
  const auto config = [&](const json& j) {
    std::ofstream(dir / "tokenizer_config.json") << j.dump();
  };
  config({{"bos_token", "<s>"}});
  CHECK_THROWS_WITH(Tokenizer::load(dir.path),
                    Contains("tokenizer_config.json: bos_token \"<s>\" is not a token"));
  config({{"add_bos_token", "yes"}});
  CHECK_THROWS_WITH(Tokenizer::load(dir.path),
                    Contains("add_bos_token: must be true or false, found the string \"yes\""));
  config({{"add_bos_token", true}});
  CHECK_THROWS_WITH(Tokenizer::load(dir.path),
                    Contains("add_bos_token is true but there is no bos_token"));
  config({{"bos_token", {{"content", "<|x|>"}}},
          {"add_bos_token", true},
          {"pad_token", "c"},
          {"chat_template", json::array({{{"name", "tool_use"}, {"template", "T"}},
                                         {{"name", "default"}, {"template", "D"}}})}});
  const auto t = Tokenizer::load(dir.path);
  CHECK(t.bos_id() == 9);
  CHECK(t.pad_id() == 2);
  CHECK(t.add_bos_by_default());
  CHECK(t.chat_template() == "D");
  CHECK(t.encode("a", t.add_bos_by_default()) == std::vector<int64_t>{9, 0});
}

namespace {

// A GGUF vocabulary file from key/value pairs (a copy of a valid "gpt2" one, then changed).
struct GgufVocab {
  std::vector<std::pair<std::string, GgufValue>> kv;
  GgufVocab() {
    kv = {{"general.architecture", GgufValue::str("llama")},
          {"tokenizer.ggml.model", GgufValue::str("gpt2")},
          {"tokenizer.ggml.pre", GgufValue::str("gpt-2")},
          {"tokenizer.ggml.tokens", GgufValue::string_array({"a", "b", "ab", "Ġ", "<|x|>"})},
          {"tokenizer.ggml.token_type",
           GgufValue::array(GgufValueType::INT32,
                            {GgufValue::i32(1), GgufValue::i32(1), GgufValue::i32(1),
                             GgufValue::i32(1), GgufValue::i32(3)})},
          {"tokenizer.ggml.merges", GgufValue::string_array({"a b"})}};
  }
  void set(const std::string& key, GgufValue v) {
    for (auto& [k, value] : kv) {
      if (k == key) {
        value = std::move(v);
        return;
      }
    }
    kv.emplace_back(key, std::move(v));
  }
  void erase(const std::string& key) {
    std::erase_if(kv, [&](const auto& p) { return p.first == key; });
  }
  fs::path write(const qlt::test::TempDir& dir) const {
    qlt::io::GgufWriter w;
    for (const auto& [k, v] : kv) w.add(k, v);
    const fs::path path = dir / "vocab.gguf";
    w.write(path);
    return path;
  }
};

void require_gguf_error(const GgufVocab& g, const std::vector<std::string>& parts) {
  qlt::test::TempDir dir;
  const fs::path path = g.write(dir);
  try {
    Tokenizer::load(path);
    FAIL("no error");
  } catch (const qlt::UserError& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK_THAT(what, Contains(path.string()));
    for (const auto& part : parts) CHECK_THAT(what, Contains(part));
  }
}

}  // namespace

TEST_CASE("GGUF vocabularies: the small one of these tests loads and works",
          "[bpe][gguf][errors]") {
  qlt::test::TempDir dir;
  const auto t = Tokenizer::load(GgufVocab().write(dir));
  CHECK(t.encode("ab<|x|>a", false) == std::vector<int64_t>{2, 4, 0});
  CHECK(t.decode({2, 4, 0}) == "ab<|x|>a");
  CHECK(t.bos_id() == -1);
  CHECK_FALSE(t.add_bos_by_default());
}

TEST_CASE("GGUF vocabularies: bad metadata is named by its key", "[bpe][gguf][errors]") {
  GgufVocab g;
  SECTION("unknown tokenizer model") {
    g.set("tokenizer.ggml.model", GgufValue::str("bert"));
    require_gguf_error(g, {"tokenizer.ggml.model is \"bert\"", "only \"gpt2\""});
  }
  SECTION("no vocabulary") {
    g.erase("tokenizer.ggml.model");
    require_gguf_error(g, {"tokenizer.ggml.model is missing"});
  }
  SECTION("unknown or missing pre-tokenizer") {
    g.set("tokenizer.ggml.pre", GgufValue::str("qwen2"));
    require_gguf_error(
        g, {"tokenizer.ggml.pre is \"qwen2\"", "not supported", "\"llama-bpe\", \"smollm\""});
    g.erase("tokenizer.ggml.pre");
    require_gguf_error(g, {"tokenizer.ggml.pre is missing"});
  }
  SECTION("arrays of mismatched length") {
    g.set("tokenizer.ggml.token_type",
          GgufValue::array(GgufValueType::INT32, {GgufValue::i32(1), GgufValue::i32(1)}));
    require_gguf_error(g,
                       {"tokenizer.ggml.token_type has 2 entries but tokenizer.ggml.tokens has 5"});
    g = GgufVocab();
    g.set("tokenizer.ggml.model", GgufValue::str("llama"));
    g.set("tokenizer.ggml.scores", GgufValue::array(GgufValueType::FLOAT32, {GgufValue::f32(0)}));
    require_gguf_error(g, {"tokenizer.ggml.scores has 1 entries but tokenizer.ggml.tokens has 5"});
  }
  SECTION("bad tokens") {
    g.set("tokenizer.ggml.tokens", GgufValue::string_array({"a", "b", "ab", "a", "<|x|>"}));
    require_gguf_error(g, {"tokenizer.ggml.tokens has \"a\" twice (ids 0 and 3)"});
    g.set("tokenizer.ggml.tokens", GgufValue::string_array({"a", "b", "ab", "", "<|x|>"}));
    require_gguf_error(g, {"tokenizer.ggml.tokens[3] is empty"});
    g.set("tokenizer.ggml.tokens", GgufValue::str("a"));
    require_gguf_error(g, {"tokenizer.ggml.tokens"});
  }
  SECTION("bad merges") {
    g.set("tokenizer.ggml.merges", GgufValue::string_array({"a b", "b q"}));
    require_gguf_error(g, {"tokenizer.ggml.merges[1]", "\"q\", which is not a token"});
    g.set("tokenizer.ggml.merges", GgufValue::string_array({"ab"}));
    require_gguf_error(g, {"tokenizer.ggml.merges[0] (\"ab\") is not two tokens"});
    g.erase("tokenizer.ggml.merges");
    require_gguf_error(g, {"tokenizer.ggml.merges"});
  }
  SECTION("bad token types and ids") {
    g.set("tokenizer.ggml.token_type",
          GgufValue::array(GgufValueType::INT32,
                           {GgufValue::i32(1), GgufValue::i32(1), GgufValue::i32(9),
                            GgufValue::i32(1), GgufValue::i32(3)}));
    require_gguf_error(g, {"tokenizer.ggml.token_type[2] is 9"});
    g = GgufVocab();
    g.set("tokenizer.ggml.bos_token_id", GgufValue::u32(5));
    require_gguf_error(g, {"tokenizer.ggml.bos_token_id is 5, outside the vocabulary of 5"});
    g = GgufVocab();
    g.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
    require_gguf_error(g, {"add_bos_token is true but there is no tokenizer.ggml.bos_token_id"});
    g = GgufVocab();
    g.set("tokenizer.ggml.eos_token_id", GgufValue::str("2"));
    require_gguf_error(g, {"tokenizer.ggml.eos_token_id"});
  }
  SECTION("a SentencePiece vocabulary the library refuses") {
    g.set("tokenizer.ggml.model", GgufValue::str("llama"));
    require_gguf_error(g, {"no token has type 2 (unknown)"});
    g.set("tokenizer.ggml.token_type",
          GgufValue::array(GgufValueType::INT32,
                           {GgufValue::i32(2), GgufValue::i32(1), GgufValue::i32(6),
                            GgufValue::i32(1), GgufValue::i32(3)}));
    require_gguf_error(g, {"not one the sentencepiece library accepts"});
  }
}
