// Hugging Face tokenizer files from a GGUF vocabulary (export/hf_tokenizer_files.h): for every
// GGUF fixture with a vocabulary the written folder loads back through our own loader
// (Tokenizer::load of a folder: tokenizer.json + tokenizer_config.json for byte-level BPE,
// tokenizer.model for SentencePiece) with the GGUF tokenizer's ids on the corpus of
// tests/fixtures/tokenizer_bpe/ (and, where committed, llama.cpp's ids), its conventions (BOS,
// EOS, pad, add_bos, chat template) and its pieces; the JSON says what transformers needs;
// an unsupported pre-tokenizer and a GGUF without vocabulary are UserErrors.
//
// With QLT_KEEP_HF_TOKENIZER_EXPORTS=<dir> each written folder is also left in <dir>/<name>/
// (name: the GGUF's file stem, "smollm2" for SmolLM2), for
// scripts/fixtures/check_hf_tokenizer_files.py, which loads them with transformers.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "core/errors.h"
#include "export/hf_tokenizer_files.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/safetensors_test_util.h"
#include "test_common.h"
#include "test_paths.h"
#include "tokenizer/bpe_test_util.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
namespace bpe = qlt::test::bpe;
using nlohmann::json;
using qlt::exporter::write_hf_tokenizer_from_gguf;
using qlt::test::kRoot;
using qlt::test::read_json;
using qlt::test::require_user_error;
using qlt::test::TempDir;
using qlt::tokenizer::Tokenizer;

// QLT_KEEP_HF_TOKENIZER_EXPORTS=<dir>: copies the folder's files to <dir>/<name>/, and writes
// the GGUF tokenizer's ids of the corpus to <dir>/<name>.qlt_ids.jsonl, one row per text:
// {"ids": without BOS/EOS, "with_special": with them as the GGUF says}.
void keep_hf_tokenizer_export(const fs::path& folder, const std::string& name,
                              const Tokenizer& gguf) {
  const char* dir = std::getenv("QLT_KEEP_HF_TOKENIZER_EXPORTS");
  if (dir == nullptr || *dir == '\0') return;
  const fs::path out = fs::path(dir) / name;
  fs::remove_all(out);
  fs::create_directories(out);
  for (const auto& entry : fs::directory_iterator(folder)) {
    fs::copy_file(entry.path(), out / entry.path().filename());
  }
  std::ofstream ids(fs::path(dir) / (name + ".qlt_ids.jsonl"));
  for (const std::string& text : bpe::corpus()) {
    ids << json{{"ids", gguf.encode(text, false)},
                {"with_special",
                 gguf.encode(text, gguf.add_bos_by_default(), gguf.add_eos_by_default())}}
               .dump()
        << "\n";
  }
  REQUIRE(ids.good());
}

bool has_special_token_text(const Tokenizer& tok, const std::string& text) {
  for (int64_t id = 0; id < tok.vocab_size(); ++id) {
    if (tok.is_special(id) && text.find(tok.id_to_piece(id)) != std::string::npos) return true;
  }
  return false;
}

struct WrittenHfFolder {
  std::vector<std::pair<std::string, int64_t>> files;
  std::set<std::string> names;
};

WrittenHfFolder write_hf_folder(const fs::path& gguf, const fs::path& dir) {
  WrittenHfFolder w{write_hf_tokenizer_from_gguf(gguf, dir), {}};
  for (const auto& [name, bytes] : w.files) {
    INFO(name);
    CHECK(fs::file_size(dir / name) == static_cast<uintmax_t>(bytes));
    w.names.insert(name);
  }
  size_t on_disk = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++on_disk;
  CHECK(on_disk == w.files.size());  // nothing else (no temporary files) left
  return w;
}

// The folder's tokenizer and the GGUF's: same vocabulary, conventions and ids. Texts holding
// a special token's text are compared only when `specials_split` (tokenizer.model keeps them
// text, the GGUF tokenizer cuts them out as llama.cpp does). Returns the texts compared.
size_t require_same_tokenizer(const Tokenizer& folder, const Tokenizer& gguf, bool specials_split) {
  REQUIRE(folder.vocab_size() == gguf.vocab_size());
  CHECK(folder.bos_id() == gguf.bos_id());
  CHECK(folder.eos_id() == gguf.eos_id());
  CHECK(folder.unk_id() == gguf.unk_id());
  CHECK(folder.pad_id() == gguf.pad_id());
  CHECK(folder.add_bos_by_default() == gguf.add_bos_by_default());
  CHECK(folder.add_eos_by_default() == gguf.add_eos_by_default());
  CHECK(folder.chat_template() == gguf.chat_template());
  for (int64_t id = 0; id < gguf.vocab_size(); ++id) {
    INFO("id " << id);
    REQUIRE(folder.id_to_piece(id) == gguf.id_to_piece(id));
  }
  size_t compared = 0, differing = 0;
  std::string report;
  for (const std::string& text : bpe::corpus()) {
    if (!specials_split && has_special_token_text(gguf, text)) continue;
    ++compared;
    const auto a = folder.encode(text, folder.add_bos_by_default(), folder.add_eos_by_default());
    const auto b = gguf.encode(text, gguf.add_bos_by_default(), gguf.add_eos_by_default());
    if (a != b && ++differing <= 5) {
      report +=
          "\n" + json(text).dump() + "\n  folder " + bpe::show(a) + "\n  gguf   " + bpe::show(b);
    }
  }
  INFO(differing << " of " << compared << " texts with other ids" << report);
  CHECK(differing == 0);
  return compared;
}

struct HfTokenizerFixture {
  std::string name;  // folder name for QLT_KEEP_HF_TOKENIZER_EXPORTS
  fs::path gguf;
  fs::path expected;  // llama.cpp's ids, or empty
};

// Byte-level GGUF vocabularies: the folder's tokenizer.json gives llama.cpp's ids on the whole
// corpus, special tokens typed in the text included, and decodes back to the text.
void check_byte_level(const HfTokenizerFixture& f) {
  INFO(f.gguf.filename().string());
  TempDir dir;
  const WrittenHfFolder w = write_hf_folder(f.gguf, dir.path);
  CHECK(w.names == std::set<std::string>{"tokenizer.json", "tokenizer_config.json",
                                         "special_tokens_map.json", "generation_config.json"});
  const auto folder = Tokenizer::load(dir.path);
  CHECK(folder.description() == "byte-level BPE (tokenizer.json)");
  const auto gguf = Tokenizer::load(f.gguf);
  CHECK(require_same_tokenizer(folder, gguf, /*specials_split=*/true) == bpe::corpus().size());
  if (!f.expected.empty()) bpe::require_reference_ids(folder, f.expected);
  const json config = read_json(dir / "tokenizer_config.json");
  CHECK(config["tokenizer_class"] == "PreTrainedTokenizerFast");
  CHECK(config["clean_up_tokenization_spaces"] == false);
  keep_hf_tokenizer_export(dir.path, f.name, gguf);
}

}  // namespace

TEST_CASE("hf tokenizer files of byte-level GGUF vocabularies give llama.cpp's ids",
          "[hf_tokenizer]") {
  for (const std::string pre : {"llama-bpe", "smollm", "gpt-2"}) {
    check_byte_level({"llama3_style_" + pre, bpe::gguf_dir() / ("llama3_style_" + pre + ".gguf"),
                      bpe::gguf_dir() / ("expected_llama3_style_" + pre + ".jsonl")});
  }
}

TEST_CASE("hf tokenizer files of SmolLM2's GGUF give llama.cpp's ids", "[hf_tokenizer][smollm2]") {
  if (!bpe::have_smollm2()) return;
  check_byte_level(
      {"smollm2", bpe::smollm2_gguf(), bpe::gguf_dir() / "expected_smollm2_llama_cpp.jsonl"});
  TempDir dir;
  write_hf_tokenizer_from_gguf(bpe::smollm2_gguf(), dir.path);
  const json config = read_json(dir / "tokenizer_config.json");
  CHECK(config["add_bos_token"] == false);  // as the GGUF (transformers' conversion says true)
  CHECK(config["bos_token"] == "<|im_start|>");
  CHECK(config["eos_token"] == "<|im_end|>");
  CHECK(config["pad_token"] == "<|im_end|>");
  CHECK(config["unk_token"] == "<|endoftext|>");
  CHECK(config["model_max_length"] == 8192);
  CHECK(config["added_tokens_decoder"].size() == 17);
  const json tok = read_json(dir / "tokenizer.json");
  CHECK(tok["model"]["merges"].size() == 48900);
  CHECK(tok["post_processor"]["type"] == "ByteLevel");  // no BOS added
  CHECK(read_json(dir / "generation_config.json") ==
        json{{"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", 2}});
}

TEST_CASE("hf tokenizer files of a byte-level GGUF say what transformers needs", "[hf_tokenizer]") {
  TempDir dir;
  write_hf_tokenizer_from_gguf(bpe::gguf_dir() / "llama3_style_llama-bpe.gguf", dir.path);
  const json tok = read_json(dir / "tokenizer.json");
  CHECK(tok["model"]["type"] == "BPE");
  CHECK(tok["model"]["ignore_merges"] == true);
  CHECK(tok["model"]["vocab"].size() == 2509);
  CHECK(tok["model"]["vocab"]["<|begin_of_text|>"] == 2500);
  REQUIRE(tok["model"]["merges"].size() == 2244);
  CHECK(tok["model"]["merges"][0].is_array());
  CHECK(tok["pre_tokenizer"]["pretokenizers"][0]["type"] == "Split");
  CHECK(tok["pre_tokenizer"]["pretokenizers"][1]["type"] == "ByteLevel");
  CHECK(tok["decoder"]["type"] == "ByteLevel");
  // add_bos_token: BOS through the post-processor, as Llama 3's tokenizer.json.
  const json& post = tok["post_processor"];
  REQUIRE(post["type"] == "Sequence");
  CHECK(post["processors"][1]["type"] == "TemplateProcessing");
  CHECK(post["processors"][1]["single"][0]["SpecialToken"]["id"] == "<|begin_of_text|>");
  // Control tokens special, user-defined ones not; none strips or is single-word.
  size_t special = 0, plain = 0;
  for (const json& t : tok["added_tokens"]) {
    (t["special"] == true ? special : plain) += 1;
    CHECK(t["lstrip"] == false);
    CHECK(t["rstrip"] == false);
    CHECK(t["single_word"] == false);
    CHECK(t["normalized"] == false);
  }
  CHECK(special == 7);
  CHECK(plain == 2);
  const json config = read_json(dir / "tokenizer_config.json");
  CHECK(config["add_bos_token"] == true);
  CHECK(config["add_eos_token"] == false);
  CHECK(config["bos_token"] == "<|begin_of_text|>");
  CHECK(config["eos_token"] == "<|eot_id|>");
  CHECK(config["unk_token"].is_null());
  CHECK(config["added_tokens_decoder"]["2507"]["special"] == false);
  CHECK(config["chat_template"].get<std::string>().starts_with("{{- bos_token }}"));
  CHECK_FALSE(config.contains("model_max_length"));  // the fixture has no llama.context_length
  CHECK(read_json(dir / "special_tokens_map.json") == json{{"bos_token",
                                                            {{"content", "<|begin_of_text|>"},
                                                             {"lstrip", false},
                                                             {"normalized", false},
                                                             {"rstrip", false},
                                                             {"single_word", false}}},
                                                           {"eos_token",
                                                            {{"content", "<|eot_id|>"},
                                                             {"lstrip", false},
                                                             {"normalized", false},
                                                             {"rstrip", false},
                                                             {"single_word", false}}}});
  CHECK(read_json(dir / "generation_config.json") ==
        json{{"bos_token_id", 2500}, {"eos_token_id", 2504}});

  // smollm: the digits are isolated before GPT-2's regex; no BOS added.
  TempDir smollm;
  write_hf_tokenizer_from_gguf(bpe::gguf_dir() / "llama3_style_smollm.gguf", smollm.path);
  const json s = read_json(smollm / "tokenizer.json");
  CHECK(s["pre_tokenizer"]["pretokenizers"][0] ==
        json{{"type", "Digits"}, {"individual_digits", true}});
  CHECK(s["pre_tokenizer"]["pretokenizers"][1]["use_regex"] == true);
  CHECK(s["model"]["ignore_merges"] == false);
  CHECK(s["post_processor"]["type"] == "ByteLevel");
}

TEST_CASE("hf tokenizer files of SentencePiece GGUF vocabularies load back with their ids",
          "[hf_tokenizer]") {
  const std::vector<HfTokenizerFixture> fixtures = {
      {"tiny_llama_spm", bpe::gguf_dir() / "tiny_llama_spm.gguf",
       bpe::gguf_dir() / "expected_tiny_llama_spm.jsonl"},
      {"llama_gqa-f32", kRoot / "tests/fixtures/gguf_llama/llama_gqa-f32.gguf", ""},
  };
  for (const HfTokenizerFixture& f : fixtures) {
    INFO(f.gguf.filename().string());
    TempDir dir;
    const WrittenHfFolder w = write_hf_folder(f.gguf, dir.path);
    CHECK(w.names == std::set<std::string>{"tokenizer.json", "tokenizer.model",
                                           "tokenizer_config.json", "special_tokens_map.json",
                                           "generation_config.json"});
    // Our loader takes tokenizer.model (SentencePiece keeps special tokens typed in the text
    // as text there, so those texts are left out).
    const auto folder = Tokenizer::load(dir.path);
    CHECK(folder.description() == "sentencepiece (tokenizer.model)");
    const auto gguf = Tokenizer::load(f.gguf);
    CHECK(require_same_tokenizer(folder, gguf, /*specials_split=*/false) > 1000);
    if (!f.expected.empty()) {
      // And llama.cpp's ids on those texts.
      const auto expected = bpe::read_expected(f.expected);
      size_t compared = 0;
      for (size_t i = 0; i < bpe::corpus().size(); ++i) {
        const std::string& text = bpe::corpus()[i];
        if (has_special_token_text(gguf, text)) continue;
        INFO(json(text).dump());
        CHECK(folder.encode(text, false) == expected[i].ids);
        ++compared;
      }
      CHECK(compared > 1000);
    }

    const json tok = read_json(dir / "tokenizer.json");
    CHECK(tok["model"]["type"] == "BPE");
    CHECK(tok["model"]["byte_fallback"] == true);
    CHECK(tok["model"]["fuse_unk"] == true);
    CHECK(tok["model"]["unk_token"] == "<unk>");
    CHECK(tok["model"]["vocab"].size() == static_cast<size_t>(gguf.vocab_size()));
    CHECK(tok["model"]["merges"].size() > 0);
    CHECK(tok["normalizer"]["normalizers"][0] == json{{"type", "Prepend"}, {"prepend", "▁"}});
    CHECK(tok["normalizer"]["normalizers"][1]["type"] == "Replace");
    CHECK(tok["pre_tokenizer"].is_null());
    CHECK(tok["decoder"]["decoders"].size() == 4);
    CHECK(tok["post_processor"]["single"][0]["SpecialToken"]["id"] == "<s>");
    size_t added = 0;
    for (const json& t : tok["added_tokens"]) {
      CHECK(gguf.is_special(t["id"].get<int64_t>()));
      ++added;
    }
    CHECK(added >= 3);  // <unk>, <s>, </s>
    const json config = read_json(dir / "tokenizer_config.json");
    CHECK(config["tokenizer_class"] == "LlamaTokenizerFast");
    CHECK(config["legacy"] == true);
    CHECK(config["add_bos_token"] == true);
    CHECK(config["bos_token"] == "<s>");
    CHECK(config["eos_token"] == "</s>");
    CHECK(config["unk_token"] == "<unk>");
    CHECK(config["pad_token"].is_null());
    keep_hf_tokenizer_export(dir.path, f.name, gguf);
  }
}

TEST_CASE("the SentencePiece merges are built from the scores as transformers builds them",
          "[hf_tokenizer]") {
  // transformers' GGUFTokenizerSkeleton on tiny_llama_spm.gguf: 2,509 merges; the first are
  // those of the best-scored pieces.
  TempDir dir;
  write_hf_tokenizer_from_gguf(bpe::gguf_dir() / "tiny_llama_spm.gguf", dir.path);
  const json tok = read_json(dir / "tokenizer.json");
  const json& merges = tok["model"]["merges"];
  CHECK(merges.size() == 2509);
  const auto gguf = qlt::io::GgufFile::open(bpe::gguf_dir() / "tiny_llama_spm.gguf");
  const auto tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  const auto scores = gguf.get_float_array("tokenizer.ggml.scores");
  std::unordered_map<std::string, double> score;
  for (size_t i = 0; i < tokens.size(); ++i) score[tokens[i]] = scores[i];
  double previous = std::numeric_limits<double>::infinity();
  for (const json& m : merges) {
    const std::string merged = m[0].get<std::string>() + m[1].get<std::string>();
    REQUIRE(score.contains(merged));
    REQUIRE(score[merged] <= previous);
    previous = score[merged];
  }
}

TEST_CASE("hf tokenizer files: named chat templates, model_max_length", "[hf_tokenizer]") {
  TempDir dir;
  const auto source = qlt::io::GgufFile::open(bpe::gguf_dir() / "llama3_style_smollm.gguf");
  qlt::io::GgufWriter w;
  for (const auto& [key, value] : source.metadata()) w.add(key, value);
  w.add("llama.context_length", qlt::io::GgufValue::u32(4096));
  w.add("tokenizer.chat_template.tool_use", qlt::io::GgufValue::str("{{ tools }}"));
  const fs::path gguf = dir / "named.gguf";
  w.write(gguf);
  const fs::path out = dir / "out";
  fs::create_directories(out);
  write_hf_tokenizer_from_gguf(gguf, out);
  const json config = read_json(out / "tokenizer_config.json");
  CHECK(config["model_max_length"] == 4096);
  REQUIRE(config["chat_template"].is_array());
  REQUIRE(config["chat_template"].size() == 2);
  CHECK(config["chat_template"][0]["name"] == "default");
  CHECK(config["chat_template"][0]["template"] == source.get_string("tokenizer.chat_template"));
  CHECK(config["chat_template"][1] == json{{"name", "tool_use"}, {"template", "{{ tools }}"}});
  // Our loader takes the "default" one.
  CHECK(Tokenizer::load(out).chat_template() == source.get_string("tokenizer.chat_template"));
}

TEST_CASE("hf tokenizer files: an unknown pre-tokenizer or no vocabulary is a UserError",
          "[hf_tokenizer]") {
  TempDir dir;
  const auto source = qlt::io::GgufFile::open(bpe::gguf_dir() / "llama3_style_smollm.gguf");
  qlt::io::GgufWriter w;
  for (const auto& [key, value] : source.metadata()) {
    w.add(key, key == "tokenizer.ggml.pre" ? qlt::io::GgufValue::str("qwen2") : value);
  }
  const fs::path gguf = dir / "qwen2.gguf";
  w.write(gguf);
  const fs::path out = dir / "out";
  fs::create_directories(out);
  require_user_error([&] { write_hf_tokenizer_from_gguf(gguf, out); },
                     {gguf.string(), "tokenizer.ggml.pre", "\"qwen2\"", "not supported"});
  CHECK(fs::is_empty(out));

  qlt::io::GgufWriter bare;
  bare.add("general.architecture", qlt::io::GgufValue::str("llama"));
  const fs::path no_vocab = dir / "bare.gguf";
  bare.write(no_vocab);
  require_user_error([&] { write_hf_tokenizer_from_gguf(no_vocab, out); },
                     {no_vocab.string(), "no vocabulary", "tokenizer.ggml.model"});
  CHECK(fs::is_empty(out));
}
