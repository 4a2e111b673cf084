// GGUF model writer (export/gguf_export.h). The layout of the metadata and the rules for the
// vocabulary follow llama.cpp's convert_hf_to_gguf.py (conversion/base.py TextModel and
// conversion/llama.py LlamaModel in llama.cpp at the version vendored by llama-cpp-python
// 0.3.36); the tensor bytes come from quant/ggml_quantize.h or, for INT4 group 32 under Q4_1,
// from the model's own blocks.
#include "export/gguf_export.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <numbers>
#include <stdexcept>
#include <variant>

#include "core/errors.h"
#include "core/json_reader.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "model/llama.h"
#include "model/llama_gguf.h"
#include "quant/ggml_dequantize.h"
#include "quant/ggml_quantize.h"
#include "quant/weight_format.h"
#include "tokenizer/gguf_vocab.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_json.h"

namespace qlt::exporter {
namespace {

namespace fs = std::filesystem;
using io::GgmlType;
using io::GgufValue;
using io::GgufValueType;

using namespace tokenizer::gguf_token_type;  // kNormal, kControl, ...

struct FileTypeRow {
  GgufFileType type;
  std::string_view name;
  uint32_t llama_ftype;  // llama.h enum llama_ftype (LLAMA_FTYPE_MOSTLY_*)
  GgmlType linear;
};
constexpr FileTypeRow kFileTypes[] = {
    {GgufFileType::kF16, "f16", 1, GgmlType::F16},
    {GgufFileType::kBF16, "bf16", 32, GgmlType::BF16},
    {GgufFileType::kQ8_0, "q8_0", 7, GgmlType::Q8_0},
    {GgufFileType::kQ4_0, "q4_0", 2, GgmlType::Q4_0},
    {GgufFileType::kQ4_1, "q4_1", 3, GgmlType::Q4_1},
};

const FileTypeRow& row_of(GgufFileType type) {
  for (const auto& r : kFileTypes)
    if (r.type == type) return r;
  throw std::logic_error(fmt::format("unknown GgufFileType {}", static_cast<int>(type)));
}

std::string type_name(GgmlType type) { return io::ggml_type_name(static_cast<uint32_t>(type)); }

bool is_block_type(GgmlType type) {
  return type == GgmlType::Q8_0 || type == GgmlType::Q4_0 || type == GgmlType::Q4_1;
}

// ---- tensors --------------------------------------------------------------------------------

struct Encoded {
  GgmlType type = GgmlType::F32;
  std::vector<uint8_t> bytes;
  std::string how;
  double max_abs = 0, relative = 0;
  double err_sq = 0, ref_sq = 0;  // ||Δ||², ||w||² (for the overall figure)
};

// `w` [rows, cols] fp32 CPU contiguous, encoded as `type`; the round trip measured.
Encoded encode_measured(GgmlType type, const at::Tensor& w, const std::string& name) {
  Encoded e;
  e.type = type;
  e.bytes = quant::ggml_quantize(type, w, name);
  const at::Tensor back = quant::ggml_dequantize(type, e.bytes, w.numel(), name).view(w.sizes());
  if (std::memcmp(back.const_data_ptr<float>(), w.const_data_ptr<float>(),
                  static_cast<size_t>(w.numel()) * sizeof(float)) == 0) {
    e.how = "exact";
    return e;
  }
  e.how = "re-quantized";
  const at::Tensor diff = back.to(at::kDouble) - w.to(at::kDouble);
  e.max_abs = diff.abs().max().item<double>();
  e.err_sq = diff.square().sum().item<double>();
  e.ref_sq = w.to(at::kDouble).square().sum().item<double>();
  e.relative = e.ref_sq > 0 ? std::sqrt(e.err_sq / e.ref_sq) : INFINITY;
  return e;
}

// The smallest type among `candidates` that holds `w` exactly (the last one, F32, always does).
GgmlType exact_type(const std::vector<GgmlType>& candidates, const at::Tensor& w,
                    const std::string& name) {
  for (GgmlType t : candidates) {
    if (is_block_type(t) && w.size(-1) % 32 != 0) continue;
    if (t == GgmlType::F32 || quant::ggml_holds_exactly(t, w, name)) return t;
  }
  throw std::logic_error("exact_type: no candidate type for " + name);
}

// Bytes of `numel` values of `type` (numel a multiple of its block).
uint64_t type_bytes(GgmlType type, int64_t numel) {
  const auto traits = io::ggml_type_traits(static_cast<uint32_t>(type));
  TORCH_CHECK(traits && numel % traits->block_elements == 0, "type_bytes: ", type_name(type));
  return static_cast<uint64_t>(numel / traits->block_elements) *
         static_cast<uint64_t>(traits->block_bytes);
}

std::vector<GgmlType> exact_candidates(GgufFileType type) {
  switch (type) {
    case GgufFileType::kF16:
      return {GgmlType::F16, GgmlType::BF16, GgmlType::F32};
    case GgufFileType::kBF16:
      return {GgmlType::BF16, GgmlType::F16, GgmlType::F32};
    default:
      return {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0,
              GgmlType::F16,  GgmlType::BF16, GgmlType::F32};
  }
}

// HF -> llama.cpp row order for q (n_heads) / k (n_kv_heads): the inverse of
// gguf_unpermute_rows (HF row r is GGUF row rows[r], so GGUF row rows[r] takes HF row r).
at::Tensor gguf_permute_rows(int64_t n_heads, int64_t head_dim) {
  return model::gguf_unpermute_rows(n_heads, head_dim).argsort();
}

// llama3 RoPE: the divisor of each frequency, as convert_hf_to_gguf.py's LlamaModel
// generate_extra_tensors computes it (here in double, then rounded to fp32).
std::vector<float> llama3_rope_factors(const model::LlamaConfig& c) {
  const auto& s = c.rope_scaling;
  const int64_t dim = c.head_dim;
  const double old_len = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_len / s.low_freq_factor;
  const double high_freq_wavelen = old_len / s.high_freq_factor;
  std::vector<float> factors;
  for (int64_t i = 0; i < dim; i += 2) {
    const double freq = 1.0 / std::pow(c.rope_theta, static_cast<double>(i) / dim);
    const double wavelen = 2 * std::numbers::pi / freq;
    double f = 1.0;
    if (wavelen < high_freq_wavelen) {
      f = 1.0;
    } else if (wavelen > low_freq_wavelen) {
      f = s.factor;
    } else {
      const double smooth =
          (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = 1.0 / ((1 - smooth) / s.factor + smooth);
    }
    factors.push_back(static_cast<float>(f));
  }
  return factors;
}

// ---- vocabulary -----------------------------------------------------------------------------

struct GgufVocab {
  std::vector<std::pair<std::string, GgufValue>> keys;  // tokenizer.* in file order
  std::string description;
  bool copied = false;  // a GGUF file's keys: the conventions are in them already
};

GgufValue float_array(const std::vector<float>& v) {
  std::vector<GgufValue> items;
  items.reserve(v.size());
  for (float x : v) items.push_back(GgufValue::f32(x));
  return GgufValue::array(GgufValueType::FLOAT32, std::move(items));
}
GgufValue int_array(const std::vector<int32_t>& v) {
  std::vector<GgufValue> items;
  items.reserve(v.size());
  for (int32_t x : v) items.push_back(GgufValue::i32(x));
  return GgufValue::array(GgufValueType::INT32, std::move(items));
}

// convert_hf_to_gguf.py's does_token_look_special.
bool looks_special(std::string_view t) {
  auto wrapped = [&](std::string_view open, std::string_view close) {
    return t.size() >= open.size() + close.size() && t.starts_with(open) && t.ends_with(close);
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || wrapped("<unused", ">");
}

// SentencePiece user-defined tokens: "▁" pre-normalized to " " (as the converter does).
std::string user_defined_text(std::string t) {
  const std::string sp = "\xE2\x96\x81";
  for (size_t p = t.find(sp); p != std::string::npos; p = t.find(sp, p + 1)) t.replace(p, 3, " ");
  return t;
}

std::optional<nlohmann::json> optional_json(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return std::nullopt;
  return read_json_file(file);
}

// convert_hf_to_gguf.py's _create_vocab_sentencepiece.
void sentencepiece_vocab(const fs::path& file, int64_t vocab_size, GgufVocab& v) {
  sentencepiece::SentencePieceProcessor sp;
  if (const auto status = sp.Load(file.string()); !status.ok()) {
    user_error("{}: the sentencepiece library cannot read it: {}", file.string(),
               status.ToString());
  }
  const int64_t n = sp.GetPieceSize();
  if (n > vocab_size) {
    user_error(
        "{}: the vocabulary has {} pieces but the model's embedding only {} rows; the "
        "tokenizer does not belong to this model",
        file.string(), n, vocab_size);
  }
  std::vector<std::string> tokens(static_cast<size_t>(vocab_size));
  std::vector<float> scores(static_cast<size_t>(vocab_size), -10000.0f);
  std::vector<int32_t> types(static_cast<size_t>(vocab_size), kUnused);
  for (int64_t i = 0; i < vocab_size; ++i) tokens[i] = fmt::format("[PAD{}]", i);
  for (int id = 0; id < n; ++id) {
    tokens[id] = sp.IdToPiece(id);
    scores[id] = sp.GetScore(id);
    types[id] = sp.IsUnknown(id)   ? kUnknown
                : sp.IsControl(id) ? kControl
                : sp.IsUnused(id)  ? kUnused
                : sp.IsByte(id)    ? kByte
                                   : kNormal;
  }
  const fs::path dir = file.parent_path();
  if (const auto added = optional_json(dir / "added_tokens.json")) {
    if (!added->is_object())
      user_error("{}: expected an object {{token: id}}", (dir / "added_tokens.json").string());
    for (const auto& [text, id_json] : added->items()) {
      if (!id_json.is_number_integer()) continue;
      const int64_t id = id_json.get<int64_t>();
      if (id < 0 || id >= vocab_size) continue;  // as the converter: ignored
      tokens[id] = text;
      scores[id] = -1000.0f;
      types[id] = kUserDefined;
    }
  }
  if (const auto config = optional_json(dir / "tokenizer_config.json")) {
    const auto it = config->find("added_tokens_decoder");
    if (it != config->end() && it->is_object()) {
      for (const auto& [key, data] : it->items()) {
        int64_t id = -1;
        try {
          id = std::stoll(key);
        } catch (const std::exception&) {
          continue;
        }
        if (id < 0 || id >= vocab_size || !data.is_object() || !data.contains("content") ||
            !data["content"].is_string())
          continue;
        std::string content = data["content"].get<std::string>();
        // Deviation from the converter: a piece SentencePiece itself marks unknown or control
        // (<unk>, <s>, </s>) keeps its type and score. The converter would make <unk> a
        // control token with score -1000; llama.cpp does not care, but a "llama" vocabulary
        // without an unknown-type token is refused by our reader (tokenizer/gguf_vocab.h).
        if (id < n && (types[id] == kUnknown || types[id] == kControl) && tokens[id] == content)
          continue;
        const bool special = data.value("special", false) || looks_special(content);
        if (special) {
          types[id] = kControl;
        } else {
          content = user_defined_text(content);
          types[id] = kUserDefined;
        }
        scores[id] = -1000.0f;
        tokens[id] = content;
      }
    }
  }
  v.keys.emplace_back("tokenizer.ggml.model", GgufValue::str("llama"));
  v.keys.emplace_back("tokenizer.ggml.pre", GgufValue::str("default"));
  v.keys.emplace_back("tokenizer.ggml.tokens", GgufValue::string_array(tokens));
  v.keys.emplace_back("tokenizer.ggml.scores", float_array(scores));
  v.keys.emplace_back("tokenizer.ggml.token_type", int_array(types));
  v.description = fmt::format("SentencePiece {} ({} pieces)", file.string(), n);
}

// The llama.cpp name of a tokenizer.json pre-tokenizer (the three our GGUF reader runs).
std::string bpe_pre_name(const nlohmann::json& root, const std::string& origin) {
  static const std::string kLlama3 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  std::vector<nlohmann::json> steps;
  const auto pre = root.find("pre_tokenizer");
  if (pre != root.end() && pre->is_object()) {
    if (pre->value("type", "") == "Sequence" && pre->contains("pretokenizers") &&
        (*pre)["pretokenizers"].is_array()) {
      for (const auto& s : (*pre)["pretokenizers"]) steps.push_back(s);
    } else {
      steps.push_back(*pre);
    }
  }
  auto type_of = [](const nlohmann::json& s) {
    return s.is_object() ? s.value("type", std::string()) : std::string();
  };
  auto byte_level = [&](const nlohmann::json& s, bool use_regex) {
    return type_of(s) == "ByteLevel" && !s.value("add_prefix_space", false) &&
           s.value("use_regex", true) == use_regex;
  };
  if (steps.size() == 2 && type_of(steps[0]) == "Split" && byte_level(steps[1], false)) {
    const auto& s = steps[0];
    const auto pattern = s.find("pattern");
    if (pattern != s.end() && pattern->is_object() && pattern->contains("Regex") &&
        (*pattern)["Regex"] == kLlama3 && s.value("behavior", "") == "Isolated" &&
        !s.value("invert", false))
      return "llama-bpe";
  }
  if (steps.size() == 2 && type_of(steps[0]) == "Digits" &&
      steps[0].value("individual_digits", false) && byte_level(steps[1], true))
    return "smollm";
  if (steps.size() == 1 && byte_level(steps[0], true)) return "gpt-2";
  std::string shape;
  for (const auto& s : steps) shape += (shape.empty() ? "" : ", ") + type_of(s);
  user_error(
      "{}: its pre_tokenizer ({}) is none that llama.cpp knows by name here (Llama 3's Split + "
      "ByteLevel = \"llama-bpe\", Digits + ByteLevel = \"smollm\", ByteLevel = \"gpt-2\"); "
      "llama.cpp would split the text differently, so the GGUF export refuses it",
      origin, shape.empty() ? "none" : shape);
}

// convert_hf_to_gguf.py's get_vocab_base + _set_vocab_gpt2.
void bpe_vocab(const fs::path& file, int64_t vocab_size, GgufVocab& v) {
  const nlohmann::json root = read_json_file(file);
  const tokenizer::TokenizerJson parsed = tokenizer::parse_tokenizer_json(root, file.string());
  const auto& spec = parsed.spec;
  const int64_t n = static_cast<int64_t>(spec.tokens.size());
  if (n > vocab_size) {
    user_error(
        "{}: the vocabulary has {} tokens but the model's embedding only {} rows; the "
        "tokenizer does not belong to this model",
        file.string(), n, vocab_size);
  }
  const std::string pre = bpe_pre_name(root, file.string());
  std::vector<std::string> tokens(static_cast<size_t>(vocab_size));
  std::vector<int32_t> types(static_cast<size_t>(vocab_size), kNormal);
  for (int64_t i = 0; i < vocab_size; ++i) {
    if (i < n) {
      tokens[i] = spec.tokens[i];
    } else {
      tokens[i] = fmt::format("[PAD{}]", i);
      types[i] = kUnused;
    }
  }
  for (const auto& a : spec.added) {
    if (a.id < 0 || a.id >= vocab_size) continue;
    tokens[a.id] = a.content;
    types[a.id] = a.special || looks_special(a.content) ? kControl : kUserDefined;
  }
  std::vector<std::string> merges;
  merges.reserve(spec.merges.size());
  for (const auto& [a, b] : spec.merges) merges.push_back(a + " " + b);
  v.keys.emplace_back("tokenizer.ggml.model", GgufValue::str("gpt2"));
  v.keys.emplace_back("tokenizer.ggml.pre", GgufValue::str(pre));
  v.keys.emplace_back("tokenizer.ggml.tokens", GgufValue::string_array(tokens));
  v.keys.emplace_back("tokenizer.ggml.token_type", int_array(types));
  v.keys.emplace_back("tokenizer.ggml.merges", GgufValue::string_array(merges));
  v.description = fmt::format("byte-level BPE {} ({} tokens, {} merges, pre-tokenizer {})",
                              file.string(), n, merges.size(), pre);
}

void gguf_vocab(const fs::path& file, int64_t vocab_size, GgufVocab& v) {
  const io::GgufFile f = io::GgufFile::open(file);
  for (const auto& [key, value] : f.metadata()) {
    if (key.starts_with("tokenizer.")) v.keys.emplace_back(key, value);
  }
  const auto* tokens = f.find("tokenizer.ggml.tokens");
  const auto* array = tokens ? std::get_if<io::GgufArray>(&tokens->value) : nullptr;
  if (array == nullptr || static_cast<int64_t>(array->items.size()) != vocab_size) {
    user_error(
        "{}: its vocabulary has {} tokens but the model's embedding has {} rows; the GGUF "
        "vocabulary is copied as it is, so they must agree",
        file.string(), array ? array->items.size() : 0, vocab_size);
  }
  v.copied = true;
  v.description = fmt::format("copied from {} ({} tokenizer.* keys)", file.string(), v.keys.size());
}

GgufVocab vocabulary(const tokenizer::Tokenizer& tok, int64_t vocab_size) {
  GgufVocab v;
  const fs::path& source = tok.source();
  if (io::is_gguf_file(source)) {
    gguf_vocab(source, vocab_size, v);
    return v;
  }
  if (source.extension() == ".json") {
    bpe_vocab(source, vocab_size, v);
  } else {
    sentencepiece_vocab(source, vocab_size, v);
  }
  // gguf.SpecialVocab's keys, from the conventions the tokenizer read from the model's files.
  auto id = [&](const char* key, int64_t value) {
    if (value >= 0 && value < vocab_size)
      v.keys.emplace_back(key, GgufValue::u32(static_cast<uint32_t>(value)));
  };
  id("tokenizer.ggml.bos_token_id", tok.bos_id());
  id("tokenizer.ggml.eos_token_id", tok.eos_id());
  id("tokenizer.ggml.unknown_token_id", tok.unk_id());
  if (const auto pad = tok.pad_id()) id("tokenizer.ggml.padding_token_id", *pad);
  v.keys.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::boolean(tok.add_bos_by_default()));
  v.keys.emplace_back("tokenizer.ggml.add_eos_token", GgufValue::boolean(tok.add_eos_by_default()));
  if (const auto config = optional_json(source.parent_path() / "tokenizer_config.json")) {
    const auto it = config->find("add_prefix_space");
    if (it != config->end() && it->is_boolean())
      v.keys.emplace_back("tokenizer.ggml.add_space_prefix", GgufValue::boolean(it->get<bool>()));
  }
  if (!tok.chat_template().empty())
    v.keys.emplace_back("tokenizer.chat_template", GgufValue::str(tok.chat_template()));
  return v;
}

std::string default_name(const fs::path& source) {
  if (source.empty()) return "qlora-train model";
  if (io::is_gguf_file(source)) {
    const io::GgufFile f = io::GgufFile::open(source);
    if (const auto* name = f.find("general.name"); name && name->type == GgufValueType::STRING)
      return std::get<std::string>(name->value);
    return source.stem().string();
  }
  const fs::path p = source.has_filename() ? source : source.parent_path();
  return p.filename().empty() ? std::string("qlora-train model") : p.filename().string();
}

}  // namespace

std::string_view gguf_file_type_name(GgufFileType type) { return row_of(type).name; }

std::optional<GgufFileType> parse_gguf_file_type(std::string_view name) {
  for (const auto& r : kFileTypes)
    if (r.name == name) return r.type;
  return std::nullopt;
}

uint32_t gguf_llama_ftype(GgufFileType type) { return row_of(type).llama_ftype; }
io::GgmlType gguf_linear_type(GgufFileType type) { return row_of(type).linear; }

GgufExportReport write_gguf_model(const fs::path& out, const model::LlamaModel& model,
                                  const tokenizer::Tokenizer& tokenizer, GgufFileType type,
                                  const GgufExportOptions& options) {
  const model::LlamaConfig& c = model.config;
  GgufExportReport report;
  report.path = out;
  report.file_type = type;

  // The vocabulary first: it is the likeliest bad input, and costs nothing to check.
  const GgufVocab vocab = vocabulary(tokenizer, c.vocab_size);
  report.vocabulary = vocab.description;

  io::GgufWriter w;
  auto u32 = [](int64_t v) { return GgufValue::u32(static_cast<uint32_t>(v)); };
  w.add("general.architecture", GgufValue::str("llama"));
  w.add("general.type", GgufValue::str("model"));
  w.add("general.name", GgufValue::str(options.model_name.empty() ? default_name(options.source)
                                                                  : options.model_name));
  w.add("llama.block_count", u32(c.num_hidden_layers));
  w.add("llama.context_length", u32(c.max_position_embeddings));
  w.add("llama.embedding_length", u32(c.hidden_size));
  w.add("llama.feed_forward_length", u32(c.intermediate_size));
  w.add("llama.attention.head_count", u32(c.num_attention_heads));
  w.add("llama.attention.head_count_kv", u32(c.num_key_value_heads));
  w.add("llama.rope.freq_base", GgufValue::f32(static_cast<float>(c.rope_theta)));
  w.add("llama.attention.layer_norm_rms_epsilon",
        GgufValue::f32(static_cast<float>(c.rms_norm_eps)));
  if (c.head_dim * c.num_attention_heads != c.hidden_size) {
    w.add("llama.attention.key_length", u32(c.head_dim));
    w.add("llama.attention.value_length", u32(c.head_dim));
  }
  w.add("general.file_type", GgufValue::u32(gguf_llama_ftype(type)));
  w.add("llama.vocab_size", u32(c.vocab_size));
  w.add("llama.rope.dimension_count", u32(c.head_dim));
  w.add("general.quantization_version", GgufValue::u32(2));  // GGML_QNT_VERSION
  for (const auto& [key, value] : vocab.keys) w.add(key, value);

  // Every tensor is declared now (name, type, dims: the header) and made when the writer
  // reaches it (io::GgufWriter::add_tensor_deferred): one tensor in memory at a time, and each
  // decoder linear merged only then (input.linears). report.tensors[k] gets what its producer
  // found (how, errors) when it runs.
  if (!options.linears.weight && model.has_adapters()) {
    user_error(
        "GGUF export of {}: the model still has adapters attached; merge them into the frozen "
        "weights first (model::merge_adapters, or pass their merge as options.linears: "
        "exporter::merged_linears), the GGUF file holds one weight per linear",
        out.string());
  }
  const LinearSource linears = options.linears.weight ? options.linears : stored_linears(model);
  double err_sq = 0, ref_sq = 0;
  auto declare = [&](const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                     std::function<Encoded()> make) {
    GgufTensorReport t;
    t.name = name;
    t.type = type;
    t.shape = shape;
    int64_t numel = 1;
    for (const int64_t d : shape) numel *= d;
    t.bytes = type_bytes(type, numel);
    const std::string tn = type_name(type);
    ++report.type_counts[tn];
    report.type_bytes[tn] += t.bytes;
    const size_t index = report.tensors.size();
    report.tensors.push_back(std::move(t));
    std::vector<int64_t> dims(shape.rbegin(), shape.rend());  // GGUF order: ne[0] first
    w.add_tensor_deferred(name, type, std::move(dims), [&, index, make = std::move(make)] {
      Encoded e = make();
      GgufTensorReport& r = report.tensors[index];
      TORCH_CHECK(e.type == r.type, r.name, ": made as ", type_name(e.type), ", declared ",
                  type_name(r.type));
      r.how = e.how;
      r.max_abs_error = e.max_abs;
      r.relative_error = e.relative;
      if (e.how == "re-quantized") {
        err_sq += e.err_sq;
        ref_sq += e.ref_sq;
      }
      return std::move(e.bytes);
    });
  };
  auto cpu_fp32 = [](const at::Tensor& t) { return t.to(at::kCPU, at::kFloat).contiguous(); };
  // A tensor the model holds (embeddings, norms, output), encoded as `type` when written.
  auto declare_held = [&](const std::string& name, const at::Tensor& held, GgmlType type,
                          bool must_be_exact) {
    declare(name, held.sizes().vec(), type, [=, &cpu_fp32] {
      Encoded e = encode_measured(type, cpu_fp32(held), name);
      TORCH_CHECK(!must_be_exact || e.how == "exact", name, ": ", type_name(type),
                  " was found exact but is not");
      return e;
    });
  };

  if (c.rope_scaling.llama3) {
    const std::vector<float> f = llama3_rope_factors(c);
    declare("rope_freqs.weight", {static_cast<int64_t>(f.size())}, GgmlType::F32, [f] {
      Encoded e;
      e.type = GgmlType::F32;
      e.bytes.resize(f.size() * sizeof(float));
      std::memcpy(e.bytes.data(), f.data(), e.bytes.size());
      e.how = "generated";
      return e;
    });
  }

  // Embeddings and output: the smallest type that holds them exactly (decided now, encoded when
  // written).
  const std::vector<GgmlType> exact_types = exact_candidates(type);
  declare_held("token_embd.weight", model.weights.embed_tokens,
               exact_type(exact_types, cpu_fp32(model.weights.embed_tokens), "token_embd.weight"),
               true);
  const GgmlType linear_type = gguf_linear_type(type);
  const at::Tensor q_perm = gguf_permute_rows(c.num_attention_heads, c.head_dim);
  const at::Tensor k_perm = gguf_permute_rows(c.num_key_value_heads, c.head_dim);
  static const char* const kLinearNames[model::kNumLlamaLinears] = {
      "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  // Whether the linears are INT4 group 32 blocks, which ARE Q4_1 (quant/int4.h): written as
  // stored (rows moved, nothing re-quantized).
  auto int4_g32 = [&](const quant::StoredWeight& model_stored) {
    if (linears.format) {
      const auto* o = std::get_if<quant::Int4Options>(&*linears.format);
      return o != nullptr && o->group_size == 32;
    }
    const auto* t = std::get_if<quant::Int4Tensor>(&model_stored);
    return t != nullptr && t->group_size == 32;
  };
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const model::LlamaLayerWeights& layer = model.weights.layers[static_cast<size_t>(i)];
    const std::string p = fmt::format("blk.{}.", i);
    declare_held(p + "attn_norm.weight", layer.input_layernorm, GgmlType::F32, false);
    for (int j = 0; j < model::kNumLlamaLinears; ++j) {
      const std::string name = p + kLinearNames[j] + ".weight";
      const quant::StoredWeight& model_stored = model::linear_weight(layer, j).stored;
      const std::vector<int64_t> shape = quant::stored_shape(model_stored);
      const at::Tensor perm = j == 0 ? q_perm : j == 1 ? k_perm : at::Tensor();
      if (linear_type == GgmlType::Q4_1 && int4_g32(model_stored)) {
        declare(name, shape, GgmlType::Q4_1, [&linears, i, j, perm, name] {
          quant::StoredWeight s = quant::to_device(linears.weight(i, j), at::kCPU);
          const auto* int4 = std::get_if<quant::Int4Tensor>(&s);
          TORCH_CHECK(int4 != nullptr && int4->group_size == 32, name, " is ", quant::describe(s),
                      ", not INT4 group 32");
          if (perm.defined()) s = quant::permute_rows(s, perm);
          const at::Tensor blocks = std::get<quant::Int4Tensor>(s).blocks.contiguous();
          Encoded e;
          e.type = GgmlType::Q4_1;
          e.bytes.assign(blocks.const_data_ptr<uint8_t>(),
                         blocks.const_data_ptr<uint8_t>() + blocks.numel());
          e.how = "as stored";
          return e;
        });
        continue;
      }
      // A row length the blocks do not divide: F16, as llama.cpp's converter falls back.
      const GgmlType t =
          is_block_type(linear_type) && shape.at(1) % 32 != 0 ? GgmlType::F16 : linear_type;
      declare(name, shape, t, [&linears, &cpu_fp32, i, j, perm, name, t] {
        at::Tensor wt = cpu_fp32(quant::dequantize(linears.weight(i, j), at::kFloat));
        if (perm.defined()) wt = wt.index_select(0, perm).contiguous();
        return encode_measured(t, wt, name);
      });
    }
    declare_held(p + "ffn_norm.weight", layer.post_attention_layernorm, GgmlType::F32, false);
  }
  declare_held("output_norm.weight", model.weights.norm, GgmlType::F32, false);
  if (!c.tie_word_embeddings) {
    declare_held("output.weight", model.weights.lm_head,
                 exact_type(exact_types, cpu_fp32(model.weights.lm_head), "output.weight"), true);
  }
  report.file_bytes = w.file_size();
  w.write(out);  // makes every tensor, in order
  for (const auto& t : report.tensors) {
    if (t.how == "as stored") ++report.as_stored;
    if (t.how == "exact") ++report.exact;
    if (t.how == "re-quantized") {
      ++report.requantized;
      report.max_abs_error = std::max(report.max_abs_error, t.max_abs_error);
      report.max_relative_error = std::max(report.max_relative_error, t.relative_error);
    }
  }
  report.overall_relative_error = ref_sq > 0 ? std::sqrt(err_sq / ref_sq) : 0;
  spdlog::info("{}", describe(report));
  return report;
}

std::string describe(const GgufExportReport& r) {
  std::string types;
  for (const auto& [name, count] : r.type_counts) {
    types += fmt::format("{}{} {} ({:.1f} MB)", types.empty() ? "" : ", ", count, name,
                         static_cast<double>(r.type_bytes.at(name)) / 1e6);
  }
  std::string s = fmt::format(
      "GGUF {} ({}): {:.1f} MB, {} tensors: {}; {} as stored, {} exact, {} re-quantized",
      r.path.string(), gguf_file_type_name(r.file_type), static_cast<double>(r.file_bytes) / 1e6,
      r.tensors.size(), types, r.as_stored, r.exact, r.requantized);
  if (r.requantized > 0) {
    s += fmt::format(
        " (re-quantization error: max |dw| {:.3g}, relative per tensor <= {:.3g}, overall "
        "{:.3g})",
        r.max_abs_error, r.max_relative_error, r.overall_relative_error);
  }
  s += fmt::format("; vocabulary {}", r.vocabulary);
  return s;
}

}  // namespace qlt::exporter
