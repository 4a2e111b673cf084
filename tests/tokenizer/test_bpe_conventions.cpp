// Conventions from the model's files (BOS / EOS / pad ids, add_bos, chat template), the
// vocabulary accessors, decoding of byte-level pieces, and properties that hold for any input
// (ill-formed UTF-8, concurrent use, the string form of merges).
#include <catch2/catch.hpp>
#include <thread>

#include "core/errors.h"
#include "tokenizer/bpe_test_util.h"

namespace {

namespace fs = std::filesystem;
using qlt::tokenizer::Tokenizer;
namespace bpe = qlt::test::bpe;

const Tokenizer& llama3_style() {
  static const auto t = Tokenizer::load(bpe::bpe_dir() / "llama3_style");
  return t;
}

std::vector<int64_t> concat_ids(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("tokenizer.json: conventions from tokenizer_config.json and the post-processor",
          "[bpe]") {
  const auto& t = llama3_style();
  CHECK(t.vocab_size() == 2509);  // 2500 BPE tokens + 9 added tokens after them
  CHECK(t.bos_id() == 2500);      // bos_token "<|begin_of_text|>"
  CHECK(t.eos_id() == 2504);      // eos_token "<|eot_id|>"
  CHECK(t.unk_id() == -1);        // model.unk_token null
  CHECK_FALSE(t.pad_id().has_value());
  // No add_bos_token in tokenizer_config.json: the TemplateProcessing post-processor puts
  // <|begin_of_text|> before the text, so BOS is added; nothing after it.
  CHECK(t.add_bos_by_default());
  CHECK_FALSE(t.add_eos_by_default());
  CHECK(t.chat_template().find("<|start_header_id|>") != std::string::npos);
  CHECK(t.encode("Hi there", true) == concat_ids({2500}, t.encode("Hi there", false)));
  CHECK(t.encode("Hi", true, true) ==
        concat_ids(concat_ids({2500}, t.encode("Hi", false)), {2504}));
  CHECK(t.piece_to_id("<|eot_id|>") == 2504);
  CHECK(t.piece_to_id("<tool>") == 2507);
  CHECK_FALSE(t.piece_to_id("no such token").has_value());
  CHECK(t.id_to_piece(2500) == "<|begin_of_text|>");
  CHECK(t.is_special(2504));
  CHECK_FALSE(t.is_special(2507));  // "<tool>" is an added token, not a special one
  CHECK_FALSE(t.is_special(*t.piece_to_id("Ġthe")));
  REQUIRE(t.piece_to_id("Ġthe").has_value());
  CHECK(t.encode(" the the", false) == std::vector<int64_t>(2, *t.piece_to_id("Ġthe")));
  CHECK_THROWS_AS(t.id_to_piece(2509), qlt::UserError);
  CHECK_THROWS_AS(t.decode({-1}), qlt::UserError);
}

TEST_CASE("GGUF: conventions from the tokenizer.ggml keys", "[bpe][gguf]") {
  const auto llama = Tokenizer::load(bpe::gguf_dir() / "llama3_style_llama-bpe.gguf");
  CHECK(llama.bos_id() == 2500);
  CHECK(llama.eos_id() == 2504);
  CHECK(llama.unk_id() == -1);
  CHECK(llama.add_bos_by_default());  // tokenizer.ggml.add_bos_token = true
  CHECK(llama.chat_template() == llama3_style().chat_template());
  CHECK(llama.is_special(2504));        // control
  CHECK_FALSE(llama.is_special(2507));  // user-defined
  const auto smol = Tokenizer::load(bpe::gguf_dir() / "llama3_style_smollm.gguf");
  CHECK_FALSE(smol.add_bos_by_default());  // tokenizer.ggml.add_bos_token = false

  const auto spm = Tokenizer::load(bpe::gguf_dir() / "tiny_llama_spm.gguf");
  CHECK(spm.vocab_size() == 2048);
  CHECK(spm.bos_id() == 1);
  CHECK(spm.eos_id() == 2);
  CHECK(spm.unk_id() == 0);
  CHECK(spm.add_bos_by_default());
  CHECK_FALSE(spm.add_eos_by_default());
  CHECK(spm.chat_template().empty());
  CHECK(spm.encode("<s>Hi</s>", false).front() == 1);  // special tokens typed in text
  CHECK(spm.decode({1}) == "<s>");

  if (bpe::have_smollm2()) {
    const auto s = Tokenizer::load(bpe::smollm2_gguf());
    CHECK(s.bos_id() == 1);
    CHECK(s.eos_id() == 2);
    CHECK(s.unk_id() == 0);
    CHECK(s.pad_id() == 2);
    CHECK_FALSE(s.add_bos_by_default());
    CHECK_FALSE(s.add_eos_by_default());
    CHECK(s.chat_template().rfind("{% for message in messages %}", 0) == 0);
    CHECK(s.encode("<|im_start|>user\nHi<|im_end|>\n", false) ==
          std::vector<int64_t>{1, *s.piece_to_id("user"), *s.piece_to_id("Ċ"), *s.piece_to_id("Hi"),
                               2, *s.piece_to_id("Ċ")});
  }
}

TEST_CASE("tokenizer.model: conventions from tokenizer_config.json", "[bpe]") {
  const auto t = Tokenizer::load(fs::path(QLT_SOURCE_DIR) / "data/tiny-llama");
  CHECK(t.description() == "sentencepiece (tokenizer.model)");
  CHECK(t.add_bos_by_default());  // add_bos_token: true
  CHECK_FALSE(t.add_eos_by_default());
  CHECK_FALSE(t.pad_id().has_value());  // pad_token: null
  CHECK(t.chat_template().empty());
  CHECK(t.is_special(1));
  CHECK_FALSE(t.is_special(300));
  CHECK(t.piece_to_id("</s>") == 2);
  CHECK_FALSE(t.piece_to_id("no such piece").has_value());
  // Without a tokenizer_config.json: BOS added (LLaMA 2), when the model has one.
  const auto no_bos =
      Tokenizer::load_file(fs::path(QLT_SOURCE_DIR) / "tests/data/no_bos_tokenizer.model");
  CHECK(no_bos.bos_id() == -1);
  CHECK_FALSE(no_bos.add_bos_by_default());
}

TEST_CASE("decode joins the bytes of byte-level pieces before reading UTF-8", "[bpe]") {
  for (const fs::path& source :
       {bpe::bpe_dir() / "llama3_style", bpe::gguf_dir() / "llama3_style_gpt-2.gguf"}) {
    INFO(source.string());
    const auto t = Tokenizer::load(source);
    const std::string text = "a😀b 日本";
    const auto ids = t.encode(text, false);
    REQUIRE(ids.size() > 6);  // the emoji's 4 bytes are several tokens in a 2.5k vocabulary
    CHECK(t.decode(ids) == text);
    // Each token alone is a piece of a character: never invalid UTF-8, U+FFFD instead.
    std::string pieces;
    for (int64_t id : ids) pieces += t.decode({id});
    CHECK(pieces.find("\xEF\xBF\xBD") != std::string::npos);
    // An incomplete character at the end (generation in progress) -> one U+FFFD per
    // maximal ill-formed subsequence, as Hugging Face's from_utf8_lossy.
    const auto emoji = t.encode("😀", false);
    REQUIRE(emoji.size() >= 2);
    CHECK(t.decode({emoji.begin(), emoji.end() - 1}) == "\xEF\xBF\xBD");
  }
}

TEST_CASE("ill-formed UTF-8 is encoded byte by byte and decodes to U+FFFD", "[bpe]") {
  const std::string bad = "ok\xFF\xC0\x80z\xE6\x97";  // stray bytes, overlong, truncated
  for (const fs::path& source :
       {bpe::bpe_dir() / "llama3_style", bpe::gguf_dir() / "llama3_style_llama-bpe.gguf",
        bpe::gguf_dir() / "llama3_style_smollm.gguf", bpe::gguf_dir() / "tiny_llama_spm.gguf"}) {
    INFO(source.string());
    const auto t = Tokenizer::load(source);
    const auto ids = t.encode(bad, false);
    CHECK_FALSE(ids.empty());
    const std::string text = t.decode(ids);
    CHECK(text.rfind("ok", 0) == 0);
    CHECK(text.find('z') != std::string::npos);
    CHECK(text.find("\xEF\xBF\xBD") != std::string::npos);
  }
}

TEST_CASE("merges in the \"a b\" string form give the same ids as the pair form", "[bpe]") {
  std::ifstream in(bpe::bpe_dir() / "llama3_style/tokenizer.json");
  nlohmann::json json = nlohmann::json::parse(in);
  REQUIRE(json["model"]["merges"][0].is_array());
  for (auto& m : json["model"]["merges"])
    m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  const auto strings = Tokenizer::from_tokenizer_json(json.dump(), "string-merges tokenizer.json");
  for (const std::string& text : bpe::corpus()) {
    REQUIRE(strings.encode(text, false) == llama3_style().encode(text, false));
  }
}

TEST_CASE("encoding from several threads at once gives the same ids", "[bpe]") {
  const auto t = Tokenizer::load(bpe::gguf_dir() / "llama3_style_smollm.gguf");
  const auto& texts = bpe::corpus();
  std::vector<std::vector<int64_t>> expected;
  for (const auto& text : texts) expected.push_back(t.encode(text, false));
  const auto fresh = Tokenizer::load(bpe::gguf_dir() / "llama3_style_smollm.gguf");
  std::vector<size_t> wrong(4, 0);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < wrong.size(); ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = k; i < texts.size() * 2; i += 3) {
        if (fresh.encode(texts[i % texts.size()], false) != expected[i % texts.size()]) ++wrong[k];
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == std::vector<size_t>(wrong.size(), 0));
  CHECK(fresh.encoded_bytes() > 0);
}
