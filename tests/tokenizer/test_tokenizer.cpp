// SentencePiece tokenizer against ids from the reference tokenizers (sentencepiece and
// transformers' LlamaTokenizer), fixture tests/fixtures/tokenizer/cases.json.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "test_common.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::test::tiny_tokenizer;
using qlt::tokenizer::Tokenizer;

nlohmann::json load_tokenizer_cases() {
  std::ifstream in(qlt::test::kFixtures / "tokenizer/cases.json");
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("tokenizer special ids and pieces match the reference", "[tokenizer]") {
  auto cases = load_tokenizer_cases();
  CHECK(tiny_tokenizer().vocab_size() == cases["vocab_size"].get<int64_t>());
  CHECK(tiny_tokenizer().bos_id() == cases["bos_id"].get<int64_t>());
  CHECK(tiny_tokenizer().eos_id() == cases["eos_id"].get<int64_t>());
  CHECK(tiny_tokenizer().unk_id() == cases["unk_id"].get<int64_t>());
  for (const auto& [id, piece] : cases["pieces"].items()) {
    CHECK(tiny_tokenizer().id_to_piece(std::stoll(id)) == piece.get<std::string>());
  }
}

TEST_CASE("tokenizer encode/decode matches the reference on every case", "[tokenizer]") {
  auto cases = load_tokenizer_cases();
  REQUIRE(cases["cases"].size() >= 10);
  for (const auto& c : cases["cases"]) {
    const auto text = c["text"].get<std::string>();
    INFO("text: \"" << text << "\"");
    auto plain = c["ids_plain"].get<std::vector<int64_t>>();
    CHECK(tiny_tokenizer().encode(text, /*add_bos=*/false) == plain);
    auto with_bos = tiny_tokenizer().encode(text, /*add_bos=*/true);
    // LLaMA-2 convention: BOS prepended, no EOS. Text that spells "<s>" stays text here (as in
    // Meta's reference tokenizer); transformers' slow tokenizer would parse it as a special
    // token, which the fixture marks.
    if (c["hf_equals_bos_plus_plain"].get<bool>()) {
      CHECK(with_bos == c["ids_with_bos"].get<std::vector<int64_t>>());
    }
    CHECK(with_bos.front() == tiny_tokenizer().bos_id());
    CHECK(tiny_tokenizer().decode(plain) == c["decoded"].get<std::string>());
  }
}

TEST_CASE("tokenizer appends EOS only on request", "[tokenizer]") {
  auto ids = tiny_tokenizer().encode("In the beginning", true, true);
  CHECK(ids.front() == tiny_tokenizer().bos_id());
  CHECK(ids.back() == tiny_tokenizer().eos_id());
  CHECK(tiny_tokenizer().encode("", false).empty());
}

TEST_CASE("tokenizer errors name the file", "[tokenizer][errors]") {
  const fs::path dir = fs::temp_directory_path() / "qlt-tokenizer-errors";
  fs::create_directories(dir);
  SECTION("missing tokenizer.model") {
    fs::remove(dir / "tokenizer.model");
    REQUIRE_THROWS_WITH(Tokenizer::load(dir), Contains("tokenizer.model: not found"));
  }
  SECTION("a file that is not a SentencePiece model") {
    std::ofstream(dir / "tokenizer.model") << "{\"not\": \"a model\"}";
    REQUIRE_THROWS_WITH(Tokenizer::load(dir), Contains("not a SentencePiece model"));
  }
  SECTION("decoding an id outside the vocabulary") {
    REQUIRE_THROWS_AS(tiny_tokenizer().decode({1, 999999}), qlt::UserError);
  }
  fs::remove_all(dir);
}
