#include "export/hf_tokenizer_files.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <variant>

#include "core/errors.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "tokenizer/bpe.h"
#include "tokenizer/conventions.h"
#include "tokenizer/gguf_vocab.h"
#include "tokenizer/sentencepiece_proto.h"
#include "tokenizer/utf8.h"

namespace qlt::exporter {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tokenizer::Conventions;

// llama.cpp's token types (tokenizer/gguf_vocab.h).
using namespace tokenizer::gguf_token_type;  // kUnknown, kControl, ...

// SentencePiece's escaped space.
constexpr const char* kSpaceMarker = "\xE2\x96\x81";  // U+2581 "▁"

// llama.cpp's Llama 3 regex (llama-vocab.cpp; the same as tokenizer/gguf_vocab.cpp): Llama 3's
// tokenizer.json pattern with its case-insensitive contractions spelt out.
constexpr std::string_view kLlama3Regex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

json byte_level(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", trim_offsets},
          {"use_regex", use_regex}};
}

// tokenizer.ggml.pre -> the `tokenizers` pre-tokenizer that splits as llama.cpp's regex list
// does, and whether the BPE model ignores merges (a piece that is a token stays whole).
struct BytePreTokenizer {
  json pre_tokenizer;
  bool ignore_merges = false;
};

constexpr std::string_view kSupportedPre =
    "\"llama3\", \"llama-v3\", \"llama-bpe\", \"smollm\", \"starcoder\", \"gpt-2\"";

BytePreTokenizer byte_pre_tokenizer(const io::GgufFile& f, const std::string& pre) {
  if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe") {
    return {{{"type", "Sequence"},
             {"pretokenizers", json::array({{{"type", "Split"},
                                             {"pattern", {{"Regex", kLlama3Regex}}},
                                             {"behavior", "Isolated"},
                                             {"invert", false}},
                                            byte_level(false, true, false)})}},
            true};
  }
  if (pre == "smollm" || pre == "starcoder") {
    // llama.cpp: \p{N} isolated, then GPT-2's regex (which ByteLevel's use_regex applies).
    return {{{"type", "Sequence"},
             {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                            byte_level(false, true, true)})}},
            false};
  }
  if (pre == "gpt-2") return {byte_level(false, true, true), false};
  user_error(
      "{}: tokenizer.ggml.pre is \"{}\", a pre-tokenizer that has no Hugging Face tokenizer.json "
      "equivalent here (supported: {}); the export cannot write the tokenizer files",
      f.origin(), abridged(pre, 60), kSupportedPre);
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = tokenizer::utf8_sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

void require_utf8(const io::GgufFile& f, std::string_view text, const std::string& what) {
  if (!valid_utf8(text)) {
    user_error(
        "{}: {} (\"{}\") is not valid UTF-8, which Hugging Face tokenizer files (JSON) cannot "
        "hold; the vocabulary cannot be written as tokenizer.json",
        f.origin(), what, abridged(tokenizer::to_valid_utf8(text), 60));
  }
}

// What the files are made of.
struct HfVocab {
  bool sentencepiece = false;
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  Conventions conventions;
  // "gpt2"
  std::string pre;
  std::vector<std::pair<std::string, std::string>> merges;
  // "llama"
  std::vector<double> scores;
  bool add_space_prefix = true;
};

HfVocab read_vocab(const io::GgufFile& f) {
  // Checks everything (types, lengths, ids, BOS/EOS flags) and applies llama.cpp's defaults.
  tokenizer::GgufVocabulary gguf = tokenizer::read_gguf_vocabulary(f);
  HfVocab v;
  v.conventions = std::move(gguf.conventions);
  if (auto* spec = std::get_if<tokenizer::BpeSpec>(&gguf.model)) {
    v.tokens = std::move(spec->tokens);
    v.types = std::move(spec->token_types);
    v.merges = std::move(spec->merges);
    v.pre = f.get_string("tokenizer.ggml.pre");
  } else {
    v.sentencepiece = true;
    v.types = std::move(std::get<tokenizer::SentencePieceGguf>(gguf.model).types);
    v.tokens = f.get_string_array("tokenizer.ggml.tokens");
    v.scores.assign(v.tokens.size(), 0.0);
    if (f.find("tokenizer.ggml.scores") != nullptr) {
      v.scores = f.get_float_array("tokenizer.ggml.scores");  // length checked by the reader
    }
    if (f.find("tokenizer.ggml.add_space_prefix") != nullptr) {
      v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix");
    }
  }
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    require_utf8(f, v.tokens[id], fmt::format("tokenizer.ggml.tokens[{}]", id));
  }
  return v;
}

bool is_added(int32_t type) { return type == kUnknown || type == kControl || type == kUserDefined; }

json added_tokens(const HfVocab& v) {
  json out = json::array();
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    if (!is_added(v.types[id])) continue;
    out.push_back({{"id", id},
                   {"content", v.tokens[id]},
                   {"single_word", false},
                   {"lstrip", false},
                   {"rstrip", false},
                   {"normalized", false},
                   {"special", v.types[id] != kUserDefined}});
  }
  return out;
}

json vocab_json(const HfVocab& v) {
  json vocab = json::object();
  for (size_t id = 0; id < v.tokens.size(); ++id) vocab[v.tokens[id]] = id;
  return vocab;
}

// [bos] $A [eos] as the conventions say, LlamaTokenizerFast's update_post_processor's way
// (the second sequence of a pair with type id 1); null when neither is added.
json template_processing(const HfVocab& v) {
  const Conventions& c = v.conventions;
  if (!c.add_bos && !c.add_eos) return nullptr;
  json single = json::array(), pair = json::array(), specials = json::object();
  const auto special = [&](int64_t id, int type_id) {
    const std::string& token = v.tokens[id];
    specials[token] = {{"id", token}, {"ids", {id}}, {"tokens", {token}}};
    return json{{"SpecialToken", {{"id", token}, {"type_id", type_id}}}};
  };
  const auto sequence = [](const char* name, int type_id) {
    return json{{"Sequence", {{"id", name}, {"type_id", type_id}}}};
  };
  for (int part = 0; part < 2; ++part) {
    json& items = part == 0 ? single : pair;
    if (c.add_bos) items.push_back(special(*c.bos, 0));
    items.push_back(sequence("A", 0));
    if (c.add_eos) items.push_back(special(*c.eos, 0));
  }
  if (c.add_bos) pair.push_back(special(*c.bos, 1));
  pair.push_back(sequence("B", 1));
  if (c.add_eos) pair.push_back(special(*c.eos, 1));
  return {{"type", "TemplateProcessing"},
          {"single", single},
          {"pair", pair},
          {"special_tokens", specials}};
}

json bpe_model(const HfVocab& v, json merges, const json& unk_token, bool fuse_unk,
               bool byte_fallback, bool ignore_merges) {
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", unk_token},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", fuse_unk},
          {"byte_fallback", byte_fallback},
          {"ignore_merges", ignore_merges},
          {"vocab", vocab_json(v)},
          {"merges", std::move(merges)}};
}

json tokenizer_json_document(json added, json normalizer, json pre_tokenizer, json post_processor,
                             json decoder, json model) {
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", std::move(added)},
          {"normalizer", std::move(normalizer)},
          {"pre_tokenizer", std::move(pre_tokenizer)},
          {"post_processor", std::move(post_processor)},
          {"decoder", std::move(decoder)},
          {"model", std::move(model)}};
}

// Byte-level BPE ("gpt2").
json byte_level_tokenizer_json(const io::GgufFile& f, const HfVocab& v) {
  BytePreTokenizer pre = byte_pre_tokenizer(f, v.pre);
  std::unordered_set<std::string_view> tokens(v.tokens.begin(), v.tokens.end());
  std::unordered_set<std::string> seen;
  json merges = json::array();
  for (size_t i = 0; i < v.merges.size(); ++i) {
    const auto& [left, right] = v.merges[i];
    const std::string merged = left + right;
    for (const std::string* part : {&left, &right, &merged}) {
      if (!tokens.contains(*part)) {
        user_error(
            "{}: tokenizer.ggml.merges[{}] (\"{} {}\"): \"{}\" is not a token of the "
            "vocabulary; the merges do not belong to tokenizer.ggml.tokens",
            f.origin(), i, abridged(left, 40), abridged(right, 40), abridged(*part, 60));
      }
    }
    // A pair listed twice: llama.cpp keeps the first rank, Hugging Face the last; keep the first.
    if (!seen.insert(std::to_string(left.size()) + ':' + left + right).second) continue;
    merges.push_back({left, right});
  }
  json post = template_processing(v);
  json post_processor = byte_level(true, false, true);
  if (!post.is_null()) {
    post_processor = {{"type", "Sequence"},
                      {"processors", json::array({std::move(post_processor), std::move(post)})}};
  }
  return tokenizer_json_document(
      added_tokens(v), nullptr, std::move(pre.pre_tokenizer), std::move(post_processor),
      byte_level(true, true, true),
      bpe_model(v, std::move(merges), nullptr, false, false, pre.ignore_merges));
}

// transformers' GGUFTokenizerSkeleton: merges from the scores of a vocabulary without merges.
// For each token in id order, every split into two tokens (at character boundaries), sorted
// by (score of the left, score of the right) descending; then all of them sorted (stably) by
// the score of the merged token, descending. NaN scores count as -inf.
std::vector<std::pair<std::string, std::string>> sentencepiece_merges(const HfVocab& v) {
  std::unordered_map<std::string_view, size_t> id_of;
  id_of.reserve(v.tokens.size());
  for (size_t id = 0; id < v.tokens.size(); ++id) id_of.emplace(v.tokens[id], id);
  const auto score = [&](size_t id) {
    const double s = v.scores[id];
    return std::isnan(s) ? -std::numeric_limits<double>::infinity() : s;
  };
  struct Merge {
    size_t left, right, merged;
  };
  std::vector<Merge> merges, local;
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    const std::string_view token = v.tokens[id];
    local.clear();
    for (size_t k = tokenizer::utf8_step(token, 0); k < token.size();
         k += tokenizer::utf8_step(token, k)) {
      const auto l = id_of.find(token.substr(0, k));
      const auto r = id_of.find(token.substr(k));
      if (l != id_of.end() && r != id_of.end()) local.push_back({l->second, r->second, id});
    }
    std::stable_sort(local.begin(), local.end(), [&](const Merge& a, const Merge& b) {
      if (score(a.left) != score(b.left)) return score(a.left) > score(b.left);
      return score(a.right) > score(b.right);
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [&](const Merge& a, const Merge& b) {
    return score(a.merged) > score(b.merged);
  });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const Merge& m : merges) out.emplace_back(v.tokens[m.left], v.tokens[m.right]);
  return out;
}

// The unknown token of a SentencePiece vocabulary: the conventions' (GGUF key or llama.cpp's
// default 0), else the first piece of type unknown (the reader requires one).
int64_t sentencepiece_unk(const HfVocab& v) {
  if (v.conventions.unk) return *v.conventions.unk;
  for (size_t id = 0; id < v.types.size(); ++id) {
    if (v.types[id] == kUnknown) return static_cast<int64_t>(id);
  }
  return 0;
}

// SentencePiece ("llama"), as transformers' GGUFLlamaConverter (legacy LLaMA scheme).
json sentencepiece_tokenizer_json(const HfVocab& v) {
  json merges = json::array();
  for (auto& [left, right] : sentencepiece_merges(v)) merges.push_back({left, right});
  json normalizers = json::array();
  if (v.add_space_prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", kSpaceMarker}});
  normalizers.push_back(
      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpaceMarker}});
  json decoders = json::array(
      {{{"type", "ByteFallback"}},
       {{"type", "Fuse"}},
       {{"type", "Replace"}, {"pattern", {{"String", kSpaceMarker}}}, {"content", " "}}});
  if (v.add_space_prefix) {
    decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  }
  return tokenizer_json_document(
      added_tokens(v), {{"type", "Sequence"}, {"normalizers", std::move(normalizers)}}, nullptr,
      template_processing(v), {{"type", "Sequence"}, {"decoders", std::move(decoders)}},
      bpe_model(v, std::move(merges), v.tokens[sentencepiece_unk(v)], true, true, false));
}

// tokenizer.model: the model our GGUF reader runs (gguf_vocab.cpp), with the specials named.
std::string sentencepiece_model(const HfVocab& v) {
  tokenizer::SentencePieceModelSpec spec;
  spec.pieces.reserve(v.tokens.size());
  bool have_unk = false;
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    const int32_t type = v.types[id] == 0 ? 1 : v.types[id];
    spec.pieces.push_back({v.tokens[id], static_cast<float>(v.scores[id]), type});
    if (type == kByte) spec.byte_fallback = true;
    if (type == kUnknown && !have_unk) {
      spec.unk_id = static_cast<int32_t>(id);
      have_unk = true;
    }
  }
  spec.add_dummy_prefix = v.add_space_prefix;
  spec.remove_extra_whitespaces = false;  // as llama.cpp's SentencePiece tokenizer
  const Conventions& c = v.conventions;
  spec.bos_id = c.bos ? static_cast<int32_t>(*c.bos) : -1;
  spec.eos_id = c.eos ? static_cast<int32_t>(*c.eos) : -1;
  spec.pad_id = c.pad ? static_cast<int32_t>(*c.pad) : -1;
  spec.name_special_pieces = true;
  return tokenizer::serialize_sentencepiece_model(spec);
}

// tokenizer.chat_template, and the named tokenizer.chat_template.<name> ones.
json chat_templates(const io::GgufFile& f, const Conventions& c) {
  const std::string prefix = "tokenizer.chat_template.";
  json named = json::array();
  for (const auto& [key, value] : f.metadata()) {
    if (!key.starts_with(prefix) || key.size() == prefix.size()) continue;
    const std::string text = f.get_string(key);
    require_utf8(f, key, "a metadata key");
    require_utf8(f, text, key);
    named.push_back({{"name", key.substr(prefix.size())}, {"template", text}});
  }
  if (!c.chat_template.empty()) require_utf8(f, c.chat_template, "tokenizer.chat_template");
  if (named.empty()) return c.chat_template.empty() ? json(nullptr) : json(c.chat_template);
  if (!c.chat_template.empty()) {
    named.insert(named.begin(), json{{"name", "default"}, {"template", c.chat_template}});
  }
  return named;
}

std::optional<uint64_t> context_length(const io::GgufFile& f) {
  if (f.find("general.architecture") == nullptr) return std::nullopt;
  const std::string key = f.get_string("general.architecture") + ".context_length";
  if (f.find(key) == nullptr) return std::nullopt;
  return f.get_uint(key);
}

json special_token_content(const HfVocab& v, const std::optional<int64_t>& id) {
  return id ? json(v.tokens[*id]) : json(nullptr);
}

json tokenizer_config(const io::GgufFile& f, const HfVocab& v) {
  const Conventions& c = v.conventions;
  json decoder = json::object();
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    if (!is_added(v.types[id])) continue;
    decoder[std::to_string(id)] = {
        {"content", v.tokens[id]}, {"lstrip", false},
        {"normalized", false},     {"rstrip", false},
        {"single_word", false},    {"special", v.types[id] != kUserDefined}};
  }
  json config = {
      {"add_bos_token", c.add_bos},
      {"add_eos_token", c.add_eos},
      {"added_tokens_decoder", std::move(decoder)},
      // Written as null when absent: LlamaTokenizerFast would otherwise assume "<s>" etc.
      {"bos_token", special_token_content(v, c.bos)},
      {"eos_token", special_token_content(v, c.eos)},
      {"unk_token", special_token_content(v, c.unk)},
      {"pad_token", special_token_content(v, c.pad)},
      {"clean_up_tokenization_spaces", false},
      {"model_input_names", json::array({"input_ids", "attention_mask"})},
      {"tokenizer_class", v.sentencepiece ? "LlamaTokenizerFast" : "PreTrainedTokenizerFast"},
  };
  // legacy: the normalizer of tokenizer.json as it is (no "from_slow" rebuild, no warning).
  if (v.sentencepiece) config["legacy"] = true;
  if (const auto n = context_length(f)) config["model_max_length"] = *n;
  if (json t = chat_templates(f, c); !t.is_null()) config["chat_template"] = std::move(t);
  return config;
}

json special_tokens_map(const HfVocab& v) {
  const Conventions& c = v.conventions;
  json map = json::object();
  const auto add = [&](const char* key, const std::optional<int64_t>& id) {
    if (!id) return;
    map[key] = {{"content", v.tokens[*id]},
                {"lstrip", false},
                {"normalized", false},
                {"rstrip", false},
                {"single_word", false}};
  };
  add("bos_token", c.bos);
  add("eos_token", c.eos);
  add("unk_token", c.unk);
  add("pad_token", c.pad);
  return map;
}

json generation_config(const HfVocab& v) {
  const Conventions& c = v.conventions;
  json config = json::object();
  if (c.bos) config["bos_token_id"] = *c.bos;
  if (c.eos) config["eos_token_id"] = *c.eos;
  if (c.pad) config["pad_token_id"] = *c.pad;
  return config;
}

std::string dump(const io::GgufFile& f, const json& document, const char* name) {
  try {
    return document.dump(2) + "\n";
  } catch (const json::exception& e) {  // invalid UTF-8 is checked before; a safety net
    user_error("{}: cannot write {}: {}", f.origin(), name, e.what());
  }
}

}  // namespace

std::vector<HfTokenizerFile> hf_tokenizer_files_from_gguf(const io::GgufFile& f) {
  const HfVocab v = read_vocab(f);
  std::vector<HfTokenizerFile> files;
  const auto add_json = [&](const char* name, const json& document) {
    files.push_back({name, dump(f, document, name)});
  };
  add_json("tokenizer.json",
           v.sentencepiece ? sentencepiece_tokenizer_json(v) : byte_level_tokenizer_json(f, v));
  if (v.sentencepiece) files.push_back({"tokenizer.model", sentencepiece_model(v)});
  add_json("tokenizer_config.json", tokenizer_config(f, v));
  add_json("special_tokens_map.json", special_tokens_map(v));
  if (v.conventions.bos || v.conventions.eos) {
    add_json("generation_config.json", generation_config(v));
  }
  return files;
}

std::vector<std::pair<std::string, int64_t>> write_hf_tokenizer_from_gguf(
    const fs::path& gguf_source, const fs::path& dir) {
  const io::GgufFile f = io::GgufFile::open(gguf_source);
  std::vector<std::pair<std::string, int64_t>> written;
  for (const HfTokenizerFile& file : hf_tokenizer_files_from_gguf(f)) {
    io::write_file_atomically(dir / file.name, file.bytes);
    written.emplace_back(file.name, static_cast<int64_t>(file.bytes.size()));
  }
  return written;
}

}  // namespace qlt::exporter
