#include "tokenizer/gguf_vocab.h"

#include <unordered_map>

#include "core/errors.h"
#include "io/gguf.h"
#include "tokenizer/sentencepiece_proto.h"

namespace qlt::tokenizer {

namespace {

// llama.cpp's regexes (llama-vocab.cpp, llm_tokenizer_bpe): its "adapted" Llama 3 pattern
// (case-insensitive contractions spelt out, which is also what its hand-written matcher does)
// and GPT-2's pattern (without the final |\s+, which splits the same pieces).
constexpr std::string_view kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kGpt2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

struct PreTokenizerEntry {
  std::vector<std::string_view> names;
  std::vector<std::string_view> patterns;  // applied in turn, each an Isolated split
  bool ignore_merges = false;
  bool add_bos = false;  // llama.cpp's default when tokenizer.ggml.add_bos_token is absent
};

const std::vector<PreTokenizerEntry>& pre_tokenizers() {
  static const std::vector<PreTokenizerEntry> table = {
      {{"llama3", "llama-v3", "llama-bpe"}, {kLlama3}, true, true},
      {{"smollm", "starcoder"}, {"\\p{N}", kGpt2}, false, false},
      {{"gpt-2"}, {kGpt2}, false, false},
  };
  return table;
}

std::string supported_pre_names() {
  std::string names;
  for (const auto& e : pre_tokenizers()) {
    for (std::string_view n : e.names)
      names += (names.empty() ? "\"" : ", \"") + std::string(n) + "\"";
  }
  return names;
}

std::optional<int64_t> token_id(const io::GgufFile& f, const std::string& key, size_t n) {
  if (f.find(key) == nullptr) return std::nullopt;
  const uint64_t id = f.get_uint(key);
  if (id >= n) {
    user_error("{}: {} is {}, outside the vocabulary of {} tokens; convert the model again",
               f.origin(), key, id, n);
  }
  return static_cast<int64_t>(id);
}

std::optional<bool> flag(const io::GgufFile& f, const std::string& key) {
  if (f.find(key) == nullptr) return std::nullopt;
  return f.get_bool(key);
}

void check_length(const io::GgufFile& f, const std::string& key, size_t got, size_t n) {
  if (got != n) {
    user_error(
        "{}: {} has {} entries but tokenizer.ggml.tokens has {}; the arrays belong together "
        "(one entry per token): the vocabulary is damaged, convert the model again",
        f.origin(), key, got, n);
  }
}

BpeSpec bpe_spec(const io::GgufFile& f, const std::vector<std::string>& tokens,
                 const std::vector<int32_t>& types, bool& add_bos_default) {
  const std::string pre_key = "tokenizer.ggml.pre";
  if (f.find(pre_key) == nullptr) {
    user_error(
        "{}: {} is missing, so the pre-tokenizer of this byte-level vocabulary is unknown "
        "(supported: {}); convert the model again with a current llama.cpp",
        f.origin(), pre_key, supported_pre_names());
  }
  const std::string pre = f.get_string(pre_key);
  const PreTokenizerEntry* entry = nullptr;
  for (const auto& e : pre_tokenizers()) {
    for (std::string_view n : e.names) {
      if (n == pre) entry = &e;
    }
  }
  if (entry == nullptr) {
    user_error("{}: {} is \"{}\", a pre-tokenizer that is not supported (supported: {})",
               f.origin(), pre_key, abridged(pre, 60), supported_pre_names());
  }
  BpeSpec spec;
  spec.origin = f.origin();
  spec.tokens = tokens;
  spec.model_size = tokens.size();
  const std::string merges_key = "tokenizer.ggml.merges";
  const std::vector<std::string> merges = f.get_string_array(merges_key);
  spec.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    // llama.cpp splits at the first space after the first byte.
    const size_t space = merges[i].empty() ? std::string::npos : merges[i].find(' ', 1);
    if (space == std::string::npos) {
      user_error("{}: {}[{}] (\"{}\") is not two tokens separated by a space", f.origin(),
                 merges_key, i, abridged(merges[i], 60));
    }
    spec.merges.emplace_back(merges[i].substr(0, space), merges[i].substr(space + 1));
  }
  spec.merges_origin = merges_key;
  spec.later_duplicate_merge_wins = false;
  spec.ignore_merges = entry->ignore_merges;
  for (size_t i = 0; i < entry->patterns.size(); ++i) {
    spec.pre.steps.emplace_back(SplitStep{
        Regex::compile(entry->patterns[i], fmt::format("{}: {} \"{}\" (llama.cpp's pattern {})",
                                                       f.origin(), pre_key, pre, i)),
        SplitBehavior::kIsolated, false});
  }
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (types[id] == gguf_token_type::kUnknown || types[id] == gguf_token_type::kControl ||
        types[id] == gguf_token_type::kUserDefined) {
      spec.added.push_back({tokens[id], static_cast<int64_t>(id), types[id] != 4});
    }
  }
  spec.added_rule = AddedTokenRule::kLlamaCpp;
  spec.llama_cpp_decode = true;
  spec.token_types = types;
  add_bos_default = entry->add_bos;
  return spec;
}

SentencePieceGguf sentencepiece_model(const io::GgufFile& f, const std::vector<std::string>& tokens,
                                      const std::vector<int32_t>& types) {
  std::vector<double> scores(tokens.size(), 0.0);
  const std::string scores_key = "tokenizer.ggml.scores";
  if (f.find(scores_key) != nullptr) {
    scores = f.get_float_array(scores_key);
    check_length(f, scores_key, scores.size(), tokens.size());
  }
  SentencePieceModelSpec spec;
  spec.pieces.reserve(tokens.size());
  bool have_unk = false;
  for (size_t id = 0; id < tokens.size(); ++id) {
    // Undefined (0) tokens take part in merges in llama.cpp like normal ones.
    const int32_t type = types[id] == 0 ? 1 : types[id];
    spec.pieces.push_back({tokens[id], static_cast<float>(scores[id]), type});
    if (type == gguf_token_type::kByte) spec.byte_fallback = true;
    if (type == 2 && !have_unk) {
      spec.unk_id = static_cast<int32_t>(id);
      have_unk = true;
    }
  }
  if (!have_unk) {
    user_error(
        "{}: no token has type 2 (unknown) in tokenizer.ggml.token_type; a SentencePiece "
        "vocabulary needs one (<unk>)",
        f.origin());
  }
  if (const auto v = flag(f, "tokenizer.ggml.add_space_prefix")) spec.add_dummy_prefix = *v;
  if (const auto v = flag(f, "tokenizer.ggml.remove_extra_whitespaces")) {
    spec.remove_extra_whitespaces = *v;
  }
  return {serialize_sentencepiece_model(spec), types};
}

}  // namespace

GgufVocabulary read_gguf_vocabulary(const io::GgufFile& f) {
  const std::string model_key = "tokenizer.ggml.model";
  if (f.find(model_key) == nullptr) {
    user_error("{}: has no vocabulary ({} is missing); use a GGUF file of a whole model",
               f.origin(), model_key);
  }
  const std::string model = f.get_string(model_key);
  if (model != "gpt2" && model != "llama") {
    user_error(
        "{}: {} is \"{}\": only \"gpt2\" (byte-level BPE) and \"llama\" (SentencePiece) "
        "vocabularies are supported",
        f.origin(), model_key, abridged(model, 60));
  }
  const std::string tokens_key = "tokenizer.ggml.tokens";
  const std::vector<std::string> tokens = f.get_string_array(tokens_key);
  if (tokens.empty()) user_error("{}: {} is empty", f.origin(), tokens_key);
  if (tokens.size() > static_cast<size_t>(INT32_MAX)) {
    user_error("{}: {} has {} tokens, more than a token id can hold", f.origin(), tokens_key,
               tokens.size());
  }
  std::unordered_map<std::string_view, size_t> seen;
  seen.reserve(tokens.size());
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (tokens[id].empty()) user_error("{}: {}[{}] is empty", f.origin(), tokens_key, id);
    if (const auto [it, fresh] = seen.emplace(tokens[id], id); !fresh) {
      user_error("{}: {} has \"{}\" twice (ids {} and {})", f.origin(), tokens_key,
                 abridged(tokens[id], 60), it->second, id);
    }
  }
  const std::string types_key = "tokenizer.ggml.token_type";
  std::vector<int32_t> types(tokens.size(), 1);
  if (f.find(types_key) != nullptr) {
    const std::vector<int64_t> raw = f.get_int_array(types_key);
    check_length(f, types_key, raw.size(), tokens.size());
    for (size_t id = 0; id < raw.size(); ++id) {
      if (raw[id] < 0 || raw[id] > 6) {
        user_error(
            "{}: {}[{}] is {}, not a token type (0 undefined, 1 normal, 2 unknown, "
            "3 control, 4 user-defined, 5 unused, 6 byte)",
            f.origin(), types_key, id, raw[id]);
      }
      types[id] = static_cast<int32_t>(raw[id]);
    }
  }

  GgufVocabulary out;
  Conventions& c = out.conventions;
  const size_t n = tokens.size();
  bool add_bos_default = true;
  if (model == "gpt2") {
    out.model = bpe_spec(f, tokens, types, add_bos_default);
  } else {
    out.model = sentencepiece_model(f, tokens, types);
    // llama.cpp's defaults for SentencePiece vocabularies (when in range).
    if (n > 1) c.bos = 1;
    if (n > 2) c.eos = 2;
    c.unk = 0;
  }
  if (auto id = token_id(f, "tokenizer.ggml.bos_token_id", n)) c.bos = id;
  if (auto id = token_id(f, "tokenizer.ggml.eos_token_id", n)) c.eos = id;
  if (auto id = token_id(f, "tokenizer.ggml.unknown_token_id", n)) c.unk = id;
  if (auto id = token_id(f, "tokenizer.ggml.padding_token_id", n)) c.pad = id;
  c.add_bos = flag(f, "tokenizer.ggml.add_bos_token").value_or(add_bos_default);
  c.add_eos = flag(f, "tokenizer.ggml.add_eos_token").value_or(false);
  if (c.add_bos && !c.bos) {
    user_error(
        "{}: tokenizer.ggml.add_bos_token is true but there is no "
        "tokenizer.ggml.bos_token_id",
        f.origin());
  }
  if (c.add_eos && !c.eos) {
    user_error(
        "{}: tokenizer.ggml.add_eos_token is true but there is no "
        "tokenizer.ggml.eos_token_id",
        f.origin());
  }
  if (f.find("tokenizer.chat_template") != nullptr) {
    c.chat_template = f.get_string("tokenizer.chat_template");
  }
  return out;
}

}  // namespace qlt::tokenizer
