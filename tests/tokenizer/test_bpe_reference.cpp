// Token ids equal to the references on the committed corpus (tests/fixtures/tokenizer_bpe/
// corpus.jsonl, >= 1,000 texts: Unicode, CJK, emoji, digits, white-space runs, code, special
// tokens typed in text, contractions, the empty string), and decode(encode(t)) == t:
//  - a Llama-3-style tokenizer.json (Split(Llama 3's regex) + ByteLevel, ignore_merges,
//    special and plain added tokens)               vs Hugging Face tokenizers
//  - the same vocabulary as GGUF vocabularies with pre "llama-bpe", "smollm", "gpt-2"
//                                                   vs llama.cpp (vocab_only)
//  - data/tiny-llama/tokenizer.model as a SentencePiece-type GGUF vocabulary
//                                                   vs llama.cpp
//  - SmolLM2-135M-Instruct's GGUF                   vs llama.cpp
//  - transformers' tokenizer.json conversion of that GGUF
//                                                   vs Hugging Face tokenizers
#include <catch2/catch.hpp>

#include "io/gguf.h"
#include "io/safetensors_test_util.h"
#include "tokenizer/bpe_test_util.h"

namespace {

namespace fs = std::filesystem;
using qlt::tokenizer::Tokenizer;
namespace bpe = qlt::test::bpe;

}  // namespace

TEST_CASE("tokenizer.json (Llama-3 style) gives Hugging Face's ids on the corpus", "[bpe]") {
  const auto tok = Tokenizer::load(bpe::bpe_dir() / "llama3_style");
  CHECK(tok.description() == "byte-level BPE (tokenizer.json)");
  bpe::require_reference_ids(tok, bpe::bpe_dir() / "expected_llama3_style.jsonl");
}

TEST_CASE("GGUF byte-level vocabularies give llama.cpp's ids on the corpus", "[bpe][gguf]") {
  for (const std::string pre : {"llama-bpe", "smollm", "gpt-2"}) {
    INFO("pre-tokenizer " << pre);
    const auto tok = Tokenizer::load(bpe::gguf_dir() / ("llama3_style_" + pre + ".gguf"));
    CHECK(tok.description() == "byte-level BPE (GGUF, pre-tokenizer " + pre + ")");
    bpe::require_reference_ids(tok, bpe::gguf_dir() / ("expected_llama3_style_" + pre + ".jsonl"));
  }
}

TEST_CASE("a SentencePiece-type GGUF vocabulary gives llama.cpp's ids on the corpus",
          "[bpe][gguf]") {
  const auto tok = Tokenizer::load(bpe::gguf_dir() / "tiny_llama_spm.gguf");
  CHECK(tok.description() == "sentencepiece (GGUF)");
  bpe::require_reference_ids(tok, bpe::gguf_dir() / "expected_tiny_llama_spm.jsonl");
}

TEST_CASE(
    "the SentencePiece GGUF vocabulary and tokenizer.model agree on text without special "
    "tokens",
    "[bpe][gguf]") {
  const auto gguf = Tokenizer::load(bpe::gguf_dir() / "tiny_llama_spm.gguf");
  const auto model = Tokenizer::load(fs::path(QLT_SOURCE_DIR) / "data/tiny-llama");
  REQUIRE(gguf.vocab_size() == model.vocab_size());
  size_t compared = 0;
  for (const std::string& text : bpe::corpus()) {
    if (text.find("<s>") != std::string::npos || text.find("</s>") != std::string::npos ||
        text.find("<unk>") != std::string::npos) {
      continue;  // special tokens: ids in GGUF (as llama.cpp), text in tokenizer.model
    }
    INFO(nlohmann::json(text).dump());
    CHECK(gguf.encode(text, false) == model.encode(text, false));
    ++compared;
  }
  CHECK(compared > 1000);
  for (int64_t id = 0; id < model.vocab_size(); ++id) {
    REQUIRE(gguf.id_to_piece(id) == model.id_to_piece(id));
  }
}

TEST_CASE("SmolLM2's GGUF gives llama.cpp's ids on the corpus", "[bpe][gguf][smollm2]") {
  if (!bpe::have_smollm2()) return;
  const auto tok = Tokenizer::load(bpe::smollm2_gguf());
  CHECK(tok.vocab_size() == 49152);
  CHECK(tok.description() == "byte-level BPE (GGUF, pre-tokenizer smollm)");
  bpe::require_reference_ids(tok, bpe::gguf_dir() / "expected_smollm2_llama_cpp.jsonl");
}

TEST_CASE("transformers' tokenizer.json of SmolLM2's GGUF gives Hugging Face's ids",
          "[bpe][smollm2]") {
  if (!bpe::have_smollm2()) return;
  // The committed skeleton is the converted tokenizer.json without model.vocab and
  // model.merges, which the conversion takes from the GGUF as they are (the fixture script
  // checks that); put them back.
  const auto gguf = qlt::io::GgufFile::open(bpe::smollm2_gguf());
  std::ifstream in(bpe::gguf_dir() / "smollm2_converted/tokenizer.skeleton.json");
  nlohmann::json json = nlohmann::json::parse(in);
  nlohmann::json vocab = nlohmann::json::object();
  const auto tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  nlohmann::json merges = nlohmann::json::array();
  for (const std::string& m : gguf.get_string_array("tokenizer.ggml.merges")) {
    const size_t space = m.find(' ');
    merges.push_back({m.substr(0, space), m.substr(space + 1)});
  }
  json["model"]["vocab"] = std::move(vocab);
  json["model"]["merges"] = std::move(merges);
  qlt::test::TempDir dir;
  std::ofstream(dir / "tokenizer.json") << json.dump();
  fs::copy_file(bpe::gguf_dir() / "smollm2_converted/tokenizer_config.json",
                dir / "tokenizer_config.json");
  const auto tok = Tokenizer::load(dir.path);
  bpe::require_reference_ids(tok, bpe::gguf_dir() / "expected_smollm2_hf_converted.jsonl");
  // The conversion's tokenizer_config.json says add_bos_token: true with <|im_start|> as BOS,
  // although the GGUF says tokenizer.ggml.add_bos_token = false (README of the fixtures).
  CHECK(tok.add_bos_by_default());
  CHECK(tok.bos_id() == 1);
  CHECK(tok.encode("Hello", tok.add_bos_by_default()) == std::vector<int64_t>{1, 19556});
  const auto original = Tokenizer::load(bpe::smollm2_gguf());
  CHECK_FALSE(original.add_bos_by_default());
  CHECK(original.encode("Hello", original.add_bos_by_default()) == std::vector<int64_t>{19556});
}

TEST_CASE("the fuzz seeds (every supported tokenizer.json part) give Hugging Face's ids", "[bpe]") {
  // tests/fuzz/corpus/tokenizer_json/: Split with every behavior, invert and a String
  // pattern; Digits; byte_fallback, unk and the ByteFallback/Fuse/Replace decoders; added
  // tokens with lstrip/rstrip/single_word/normalized and a template with BOS and EOS.
  std::ifstream in(bpe::bpe_dir() / "fuzz_seed_ids.json");
  const auto expected = nlohmann::json::parse(in);
  REQUIRE(expected.size() == 6);
  for (const auto& [name, rows] : expected.items()) {
    const auto tok = Tokenizer::load_file(fs::path(QLT_SOURCE_DIR) /
                                          ("tests/fuzz/corpus/tokenizer_json/" + name + ".json"));
    for (const auto& row : rows) {
      const std::string text = row["text"];
      INFO(name << ": " << nlohmann::json(text).dump());
      const auto ids = tok.encode(text, false);
      CHECK(ids == row["ids"].get<std::vector<int64_t>>());
      CHECK(tok.encode(text, tok.add_bos_by_default(), tok.add_eos_by_default()) ==
            row["with_special"].get<std::vector<int64_t>>());
      CHECK(tok.decode(ids) == row["decoded"].get<std::string>());
    }
  }
}
