#include "tokenizer/tokenizer_json.h"

#include <unordered_map>

#include "core/errors.h"
#include "tokenizer/json_fields.h"

namespace qlt::tokenizer {

namespace {

using nlohmann::json;

[[noreturn]] void unsupported(const JsonField& type, const std::string& what,
                              const std::string& supported) {
  type.fail(
      fmt::format("{} \"{}\" is not supported (supported: {}); this tokenizer cannot be "
                  "reproduced exactly, use a model with a byte-level BPE tokenizer "
                  "(Llama 3, SmolLM2, ...) or a SentencePiece tokenizer.model",
                  what, abridged(type.string(), 60), supported));
}

void read_model(const JsonField& model, BpeSpec& spec) {
  const JsonField type = model.at("type");
  if (type.string() != "BPE") unsupported(type, "the model type", "BPE");
  if (auto f = model.find_non_null("dropout")) {
    if (!f->value.is_number())
      f->fail("must be a number or null, found " + describe_json(f->value));
    if (f->value.get<double>() != 0.0) {
      f->fail("BPE dropout (random merges) is not supported; set it to null for inference");
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto f = model.find_non_null(key); f && !f->string().empty()) {
      f->fail("is not supported (only byte-level BPE without subword markers is)");
    }
  }
  if (auto f = model.find_non_null("fuse_unk")) spec.fuse_unk = f->boolean();
  if (auto f = model.find_non_null("byte_fallback")) spec.byte_fallback = f->boolean();
  if (auto f = model.find_non_null("ignore_merges")) spec.ignore_merges = f->boolean();

  const JsonField vocab = model.at("vocab");
  const json& entries = vocab.object();
  const size_t n = entries.size();
  if (n == 0) vocab.fail("is empty");
  spec.tokens.assign(n, std::string());
  std::vector<uint8_t> seen(n, 0);
  for (const auto& [token, id_value] : entries.items()) {
    const JsonField id_field{id_value, vocab.path + "[\"" + abridged(token, 60) + "\"]",
                             vocab.origin};
    const int64_t id = id_field.integer();
    if (id < 0 || static_cast<uint64_t>(id) >= n) {
      id_field.fail(
          fmt::format("id {} is out of range: the vocabulary has {} tokens, so the ids "
                      "must be 0 to {}",
                      id, n, n - 1));
    }
    if (seen[id]) {
      vocab.fail(fmt::format("\"{}\" and \"{}\" both have id {}", abridged(spec.tokens[id], 60),
                             abridged(token, 60), id));
    }
    seen[id] = 1;
    spec.tokens[id] = token;
  }
  spec.model_size = n;

  const JsonField merges = model.at("merges");
  const json& list = merges.array();
  spec.merges.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const JsonField m = merges.element(i);
    if (m.value.is_string()) {
      // "a b": exactly one space (Hugging Face's convert_merges_to_hashmap splits on ' ').
      const std::string s = m.string();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        m.fail("must be two tokens separated by one space (\"a b\"), found " +
               describe_json(m.value));
      }
      spec.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else {
      if (!m.value.is_array() || m.value.size() != 2) {
        m.fail("must be \"a b\" or a pair [\"a\", \"b\"], found " + describe_json(m.value));
      }
      spec.merges.emplace_back(m.element(0).string(), m.element(1).string());
    }
  }
  spec.merges_origin = merges.path;

  if (auto f = model.find_non_null("unk_token")) {
    const std::string unk = f->string();
    for (size_t id = 0; id < n; ++id) {
      if (spec.tokens[id] == unk) spec.unk = static_cast<int64_t>(id);
    }
    if (!spec.unk) f->fail("\"" + abridged(unk, 60) + "\" is not in model.vocab");
  }
}

void read_added_tokens(const JsonField& root, BpeSpec& spec) {
  const auto field = root.find_non_null("added_tokens");
  if (!field) return;
  const json& list = field->array();
  std::unordered_map<std::string, int64_t> vocab_id;
  for (size_t id = 0; id < spec.model_size; ++id) vocab_id.emplace(spec.tokens[id], id);
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < list.size(); ++i) {
    const JsonField t = field->element(i);
    AddedToken token;
    token.content = t.at("content").string();
    if (token.content.empty()) t.at("content").fail("is empty");
    token.id = t.at("id").integer();
    const auto flag = [&](const char* key, bool fallback) {
      const auto f = t.find_non_null(key);
      return f ? f->boolean() : fallback;
    };
    token.special = flag("special", false);
    token.single_word = flag("single_word", false);
    token.lstrip = flag("lstrip", false);
    token.rstrip = flag("rstrip", false);
    token.normalized = flag("normalized", !token.special);
    if (const auto [it, fresh] = seen.emplace(token.content, i); !fresh) {
      t.fail(fmt::format("\"{}\" is listed twice (also added_tokens[{}])",
                         abridged(token.content, 60), it->second));
    }
    const auto in_vocab = vocab_id.find(token.content);
    const int64_t expected =
        in_vocab != vocab_id.end() ? in_vocab->second : static_cast<int64_t>(spec.tokens.size());
    if (token.id != expected) {
      t.at("id").fail(fmt::format(
          "\"{}\" has id {}, but {} (Hugging Face tokenizers gives it id {}); the file is "
          "inconsistent",
          abridged(token.content, 60), token.id,
          in_vocab != vocab_id.end()
              ? "model.vocab gives it another id"
              : "tokens not in model.vocab take the ids after it, in the order listed",
          expected));
    }
    if (in_vocab == vocab_id.end()) spec.tokens.push_back(token.content);
    spec.added.push_back(std::move(token));
  }
}

void read_normalizer(const JsonField& root) {
  const auto n = root.find_non_null("normalizer");
  if (!n) return;
  const JsonField type = n->at("type");
  if (type.string() == "Sequence" && n->at("normalizers").array().empty()) return;
  unsupported(type, "the normalizer", "none");
}

void read_pre_tokenizer(const JsonField& node, BpeSpec& spec, bool& byte_level) {
  const JsonField type = node.at("type");
  const std::string t = type.string();
  if (byte_level) {
    node.fail(
        "comes after the ByteLevel pre-tokenizer, which is not supported (ByteLevel must be "
        "the last step)");
  }
  if (t == "Sequence") {
    const JsonField list = node.at("pretokenizers");
    for (size_t i = 0; i < list.array().size(); ++i)
      read_pre_tokenizer(list.element(i), spec, byte_level);
  } else if (t == "ByteLevel") {
    const auto f = node.find_non_null("add_prefix_space");
    const auto r = node.find_non_null("use_regex");
    if (f ? f->boolean() : true) spec.pre.steps.emplace_back(PrefixSpaceStep{});
    if (r ? r->boolean() : true) {
      spec.pre.steps.emplace_back(SplitStep{
          Regex::compile(kGpt2Pattern, spec.origin + ": " + node.path + " (GPT-2's pattern)"),
          SplitBehavior::kIsolated, false});
    }
    byte_level = true;
  } else if (t == "Split") {
    const JsonField pattern = node.at("pattern");
    std::optional<Regex> regex;
    if (auto r = pattern.find("Regex")) {
      regex = Regex::compile(r->string(), spec.origin + ": " + r->path);
    } else if (auto s = pattern.find("String")) {
      regex = Regex::compile(s->string(), spec.origin + ": " + s->path, /*literal=*/true);
    } else {
      pattern.fail("must be {\"Regex\": ...} or {\"String\": ...}");
    }
    const JsonField behavior = node.at("behavior");
    static const std::pair<const char*, SplitBehavior> kBehaviors[] = {
        {"Removed", SplitBehavior::kRemoved},
        {"Isolated", SplitBehavior::kIsolated},
        {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
        {"MergedWithNext", SplitBehavior::kMergedWithNext},
        {"Contiguous", SplitBehavior::kContiguous}};
    std::optional<SplitBehavior> b;
    for (const auto& [name, value] : kBehaviors) {
      if (behavior.string() == name) b = value;
    }
    if (!b) {
      unsupported(behavior, "the split behavior",
                  "Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
    }
    const auto invert = node.find_non_null("invert");
    spec.pre.steps.emplace_back(SplitStep{std::move(*regex), *b, invert && invert->boolean()});
  } else if (t == "Digits") {
    const auto f = node.find_non_null("individual_digits");
    spec.pre.steps.emplace_back(SplitStep{
        Regex::compile("\\p{N}", spec.origin + ": " + node.path + " (\\p{N})"),
        f && f->boolean() ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false});
  } else {
    unsupported(type, "the pre-tokenizer", "ByteLevel, Split, Digits, Sequence");
  }
}

// The special token of a TemplateProcessing item, by its name in "special_tokens".
int64_t template_token(const JsonField& processor, const JsonField& item, const BpeSpec& spec) {
  const std::string name = item.at("id").string();
  const JsonField entry = processor.at("special_tokens").at(name);
  const JsonField ids = entry.at("ids");
  if (ids.array().size() != 1) {
    ids.fail("must hold exactly one id (a template token of several ids is not supported)");
  }
  const int64_t id = ids.element(0).integer();
  if (id < 0 || id >= static_cast<int64_t>(spec.tokens.size())) {
    ids.element(0).fail(
        fmt::format("id {} is outside the vocabulary [0, {})", id, spec.tokens.size()));
  }
  return id;
}

void read_post_processor(const JsonField& node, const BpeSpec& spec, TokenizerJson& out) {
  const JsonField type = node.at("type");
  const std::string t = type.string();
  if (t == "Sequence") {
    const JsonField list = node.at("processors");
    for (size_t i = 0; i < list.array().size(); ++i)
      read_post_processor(list.element(i), spec, out);
  } else if (t == "TemplateProcessing") {
    const JsonField single = node.at("single");
    std::vector<int64_t> before, after;
    bool seen_text = false;
    for (size_t i = 0; i < single.array().size(); ++i) {
      const JsonField item = single.element(i);
      if (auto s = item.find("SpecialToken")) {
        (seen_text ? after : before).push_back(template_token(node, *s, spec));
      } else if (auto a = item.find("Sequence")) {
        if (seen_text) a->fail("a second sequence in \"single\" is not supported");
        seen_text = true;
      } else {
        item.fail("must be {\"SpecialToken\": ...} or {\"Sequence\": ...}");
      }
    }
    if (!seen_text || before.size() > 1 || after.size() > 1) {
      single.fail(
          "is not supported: only [special] $A [special] templates with at most one "
          "special token on each side are");
    }
    if (!before.empty()) out.template_bos = before[0];
    if (!after.empty()) out.template_eos = after[0];
  } else if (t != "ByteLevel") {
    unsupported(type, "the post-processor", "ByteLevel, TemplateProcessing, Sequence");
  }
}

void read_decoder(const JsonField& node, BpeSpec& spec) {
  const JsonField type = node.at("type");
  const std::string t = type.string();
  if (t == "Sequence") {
    const JsonField list = node.at("decoders");
    for (size_t i = 0; i < list.array().size(); ++i) read_decoder(list.element(i), spec);
  } else if (t == "ByteLevel") {
    spec.decoder.emplace_back(DecodeByteLevel{});
  } else if (t == "ByteFallback") {
    spec.decoder.emplace_back(DecodeByteFallback{});
  } else if (t == "Fuse") {
    spec.decoder.emplace_back(DecodeFuse{});
  } else if (t == "Replace") {
    const JsonField pattern = node.at("pattern");
    const auto s = pattern.find("String");
    if (!s) pattern.fail("only a {\"String\": ...} pattern is supported in a Replace decoder");
    DecodeReplace r{s->string(), node.at("content").string()};
    if (r.pattern.empty()) s->fail("is empty");
    spec.decoder.emplace_back(std::move(r));
  } else {
    unsupported(type, "the decoder", "ByteLevel, ByteFallback, Fuse, Replace, Sequence");
  }
}

}  // namespace

TokenizerJson parse_tokenizer_json(const json& json_root, const std::string& origin) {
  const JsonField root{json_root, "", origin};
  root.object();
  TokenizerJson out;
  BpeSpec& spec = out.spec;
  spec.origin = origin;
  read_model(root.at("model"), spec);
  read_added_tokens(root, spec);
  read_normalizer(root);
  bool byte_level = false;
  if (auto pre = root.find_non_null("pre_tokenizer")) read_pre_tokenizer(*pre, spec, byte_level);
  if (!byte_level) {
    root.fail(
        "the pre_tokenizer has no ByteLevel step: only byte-level BPE tokenizers (GPT-2 "
        "scheme: Llama 3, SmolLM2, ...) are supported from tokenizer.json");
  }
  if (auto post = root.find_non_null("post_processor")) read_post_processor(*post, spec, out);
  const auto decoder = root.find_non_null("decoder");
  if (decoder) read_decoder(*decoder, spec);
  bool decodes_bytes = false;
  for (const auto& step : spec.decoder)
    decodes_bytes |= std::holds_alternative<DecodeByteLevel>(step);
  if (!decodes_bytes) {
    (decoder ? *decoder : root)
        .fail(
            "has no ByteLevel decoder, so ids could not be turned back into text; a byte-level "
            "BPE tokenizer.json has decoder {\"type\": \"ByteLevel\"}");
  }
  return out;
}

}  // namespace qlt::tokenizer
