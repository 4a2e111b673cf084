#include "model/llama_gguf.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/errors.h"
#include "quant/ggml_dequantize.h"
#include "quant/int4.h"

namespace qlt::model {
namespace {

// llama.cpp's per-layer tensor names (src/llama-arch.cpp, LLM_ARCH_LLAMA) and ours.
struct NamePair {
  const char* gguf;  // after "blk.{i}."
  const char* hf;    // after "model.layers.{i}."
};
constexpr NamePair kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};
constexpr NamePair kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// Splits "<prefix><int>.<rest>" (no sign, no leading zeros beyond "0"); false otherwise.
bool split_layer(const std::string& name, const std::string& prefix, int64_t& layer,
                 std::string& rest) {
  if (!name.starts_with(prefix)) return false;
  size_t i = prefix.size(), j = i;
  while (j < name.size() && j - i < 9 && name[j] >= '0' && name[j] <= '9') ++j;
  if (j == i || j >= name.size() || name[j] != '.' || (name[i] == '0' && j - i > 1)) return false;
  layer = std::stoll(name.substr(i, j - i));
  rest = name.substr(j + 1);
  return true;
}

std::string shape_string(const std::vector<int64_t>& shape) { return fmt::format("{}", shape); }

}  // namespace

std::string hf_name_of_gguf_tensor(const std::string& gguf_name) {
  for (const auto& p : kGlobalNames)
    if (gguf_name == p.gguf) return p.hf;
  int64_t layer = 0;
  std::string rest;
  if (!split_layer(gguf_name, "blk.", layer, rest)) return {};
  for (const auto& p : kLayerNames)
    if (rest == p.gguf) return fmt::format("model.layers.{}.{}", layer, p.hf);
  return {};
}

std::string gguf_name_of_hf_tensor(const std::string& hf_name) {
  for (const auto& p : kGlobalNames)
    if (hf_name == p.hf) return p.gguf;
  int64_t layer = 0;
  std::string rest;
  if (!split_layer(hf_name, "model.layers.", layer, rest)) return {};
  for (const auto& p : kLayerNames)
    if (rest == p.hf) return fmt::format("blk.{}.{}", layer, p.gguf);
  return {};
}

at::Tensor gguf_unpermute_rows(int64_t n_heads, int64_t head_dim) {
  // convert_hf_to_gguf.py: w.reshape(n_head, 2, d/2, in).swapaxes(1, 2): GGUF row
  // (h, j, t) = h*d + 2j + t holds HF row (h, t, j) = h*d + t*d/2 + j.
  const int64_t half = head_dim / 2;
  auto rows = at::empty({n_heads * head_dim}, at::kLong);
  auto* r = rows.data_ptr<int64_t>();
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t j = 0; j < half; ++j) r[h * head_dim + t * half + j] = h * head_dim + 2 * j + t;
  return rows;
}

LlamaConfig llama_config_from_gguf(const io::GgufFile& file) {
  const std::string& origin = file.origin();
  if (!file.find("general.architecture")) {
    user_error(
        "{}: GGUF metadata has no general.architecture; it is not a model file llama.cpp "
        "could load either",
        origin);
  }
  const std::string arch = file.get_string("general.architecture");
  if (arch != "llama") {
    user_error(
        "{}: general.architecture is \"{}\"; qlora-train loads LLaMA-family models "
        "(architecture \"llama\": LLaMA 1-3, SmolLM2, Mistral 7B, TinyLlama, ...)",
        origin, arch);
  }
  auto uint_key = [&](const std::string& key) {
    const uint64_t v = file.get_uint(key);
    if (v == 0 || v > (uint64_t{1} << 40)) user_error("{}: {} is {}, out of range", origin, key, v);
    return static_cast<int64_t>(v);
  };
  // The same fields as a config.json, so that llama_config_from_json applies one set of checks
  // (heads dividing, head_dim even, ...); errors name this file's metadata.
  nlohmann::json j;
  j["model_type"] = "llama";
  j["hidden_size"] = uint_key("llama.embedding_length");
  j["intermediate_size"] = uint_key("llama.feed_forward_length");
  j["num_hidden_layers"] = uint_key("llama.block_count");
  j["num_attention_heads"] = uint_key("llama.attention.head_count");
  if (file.find("llama.attention.head_count_kv"))
    j["num_key_value_heads"] = uint_key("llama.attention.head_count_kv");
  if (file.find("llama.attention.key_length")) {
    j["head_dim"] = uint_key("llama.attention.key_length");
    if (file.find("llama.attention.value_length") &&
        uint_key("llama.attention.value_length") != j["head_dim"].get<int64_t>())
      user_error(
          "{}: llama.attention.key_length and value_length differ; LLaMA models have one "
          "head size",
          origin);
  }
  if (file.find("llama.context_length"))
    j["max_position_embeddings"] = uint_key("llama.context_length");
  j["rms_norm_eps"] = file.get_float("llama.attention.layer_norm_rms_epsilon");
  if (file.find("llama.rope.freq_base")) j["rope_theta"] = file.get_float("llama.rope.freq_base");
  if (file.find("llama.rope.scaling.type")) {
    const std::string type = file.get_string("llama.rope.scaling.type");
    if (type != "none")
      user_error("{}: llama.rope.scaling.type \"{}\" is not supported (only none)", origin, type);
  }
  if (file.find_tensor("rope_freqs.weight")) {
    user_error(
        "{}: tensor rope_freqs.weight (Llama 3.1 RoPE frequency factors) is not supported "
        "yet; load the Hugging Face directory of this model instead",
        origin);
  }
  // The vocabulary size is the embedding's row count (checked against the tokenizer below).
  const io::GgufTensorInfo& embd = file.tensor("token_embd.weight");
  if (embd.dims.size() != 2)
    user_error("{}: tensor token_embd.weight has {} dims, expected 2 ([vocab, hidden])", origin,
               embd.dims.size());
  j["vocab_size"] = embd.dims[1];
  j["tie_word_embeddings"] = file.find_tensor("output.weight") == nullptr;
  if (file.find("tokenizer.ggml.bos_token_id"))
    j["bos_token_id"] = static_cast<int64_t>(file.get_uint("tokenizer.ggml.bos_token_id"));
  if (file.find("tokenizer.ggml.eos_token_id"))
    j["eos_token_id"] = static_cast<int64_t>(file.get_uint("tokenizer.ggml.eos_token_id"));
  LlamaConfig c = llama_config_from_json(j, origin + " (its llama.* metadata)");
  if (file.find("llama.rope.dimension_count") &&
      uint_key("llama.rope.dimension_count") != c.head_dim) {
    user_error(
        "{}: llama.rope.dimension_count ({}) differs from the head size ({}); partial "
        "RoPE is not a LLaMA feature",
        origin, uint_key("llama.rope.dimension_count"), c.head_dim);
  }
  if (file.find("tokenizer.ggml.tokens")) {
    const auto* tokens = file.find("tokenizer.ggml.tokens");
    const auto* array = std::get_if<io::GgufArray>(&tokens->value);
    if (array && static_cast<int64_t>(array->items.size()) != c.vocab_size) {
      user_error(
          "{}: the vocabulary (tokenizer.ggml.tokens) has {} tokens but the embedding "
          "token_embd.weight has {} rows; the file is inconsistent",
          origin, array->items.size(), c.vocab_size);
    }
  }
  return c;
}

LlamaWeights load_llama_weights_gguf(const io::GgufFile& file, const LlamaConfig& c,
                                     const LoadOptions& options) {
  const std::string& origin = file.origin();
  // Names, shapes and types first: everything wrong is reported together.
  std::vector<std::string> missing, wrong, unexpected;
  std::set<std::string> expected;
  for (const auto& e : expected_llama_tensors(c)) {
    const std::string gname = gguf_name_of_hf_tensor(e.name);
    expected.insert(gname);
    const io::GgufTensorInfo* info = file.find_tensor(gname);
    if (!info) {
      missing.push_back(fmt::format("{} {} (ours: {})", gname, shape_string(e.shape), e.name));
      continue;
    }
    if (info->torch_shape() != e.shape) {
      wrong.push_back(fmt::format("{}: file has {}, the llama.* metadata implies {}", gname,
                                  shape_string(info->torch_shape()), shape_string(e.shape)));
    } else if (!quant::ggml_can_dequantize(info->type)) {
      const auto traits = io::ggml_type_traits(static_cast<uint32_t>(info->type));
      wrong.push_back(fmt::format(
          "{}: type {} cannot be read (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, "
          "Q6_K); re-quantize the model with llama.cpp's llama-quantize to one of them",
          gname, traits ? traits->name : "unknown"));
    }
  }
  for (const auto& t : file.tensors())
    if (!expected.count(t.name)) unexpected.push_back(t.name);
  if (!missing.empty() || !wrong.empty() || !unexpected.empty()) {
    std::string msg =
        fmt::format("{}: the GGUF tensors do not match its llama.* metadata:", origin);
    auto list = [&](const char* what, const std::vector<std::string>& items) {
      if (items.empty()) return;
      msg += fmt::format("\n {} ({}):", what, items.size());
      for (size_t i = 0; i < items.size() && i < 8; ++i) msg += "\n  " + items[i];
      if (items.size() > 8) msg += fmt::format("\n  ... and {} more", items.size() - 8);
    };
    list("missing tensors", missing);
    list("unusable tensors", wrong);
    list("unexpected tensors", unexpected);
    throw UserError(msg);
  }

  // One tensor decoded at a time: [out, in] (or [n]) fp32 on the CPU.
  auto decode = [&](const io::GgufTensorInfo& info) {
    at::Tensor t =
        quant::ggml_dequantize(info.type, file.tensor_bytes(info), info.numel(), info.name)
            .view(info.torch_shape());
    file.release(info);  // decoded into a new tensor: the file's pages can go
    if (!options.allow_non_finite) check_finite_weight(origin, info.name, t);
    return t;
  };
  auto dense = [&](const char* gname, at::ScalarType dtype) {
    return decode(file.tensor(gname)).to(options.device, dtype);
  };
  const auto* int4 = std::get_if<quant::Int4Options>(&options.format);
  const bool int4_g32 = int4 != nullptr && int4->group_size == 32;
  int64_t as_stored = 0, converted = 0;
  std::map<std::string, int64_t> source_types;  // for the log line
  auto linear = [&](const std::string& gname, int64_t rope_heads) -> adapters::FrozenWeight {
    const io::GgufTensorInfo& info = file.tensor(gname);
    const auto shape = info.torch_shape();
    ++source_types[std::string(io::ggml_type_traits(static_cast<uint32_t>(info.type))->name)];
    quant::StoredWeight stored;
    if (info.type == io::GgmlType::Q4_1 && int4_g32) {
      // Used as stored: the Q4_1 blocks ARE INT4 group 32 (quant/int4.h).
      quant::Int4Tensor q =
          quant::int4_from_q4_1(file.tensor_bytes(info), shape[0], shape[1], options.dtype, gname);
      if (!options.allow_non_finite) {
        // d and m are the first 4 bytes of each 20-byte block: check them as fp16.
        check_finite_weight(origin, gname, q.blocks.narrow(2, 0, 4).contiguous().view(at::kHalf),
                            " (its Q4_1 scales)");
      }
      stored = q.to(options.device);
      // Rows of INT4 blocks are permuted as stored (groups lie within a row).
      if (rope_heads > 0)
        stored = quant::permute_rows(stored, gguf_unpermute_rows(rope_heads, c.head_dim));
      ++as_stored;
    } else {
      // Decoded rows are put back in Hugging Face order first, then stored in the format
      // (NF4 blocks run across rows, so they could not be permuted afterwards).
      at::Tensor w = decode(info);
      if (rope_heads > 0) w = w.index_select(0, gguf_unpermute_rows(rope_heads, c.head_dim));
      stored = quant::store_weight(w.to(options.device), options.format, options.dtype, gname);
      ++converted;
    }
    return adapters::FrozenWeight(std::move(stored));
  };

  LlamaWeights w;
  w.embed_tokens = dense("token_embd.weight", options.dtype);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    LlamaLayerWeights l;
    l.input_layernorm = dense((p + "attn_norm.weight").c_str(), at::kFloat);
    l.q_proj = linear(p + "attn_q.weight", c.num_attention_heads);
    l.k_proj = linear(p + "attn_k.weight", c.num_key_value_heads);
    l.v_proj = linear(p + "attn_v.weight", 0);
    l.o_proj = linear(p + "attn_output.weight", 0);
    l.post_attention_layernorm = dense((p + "ffn_norm.weight").c_str(), at::kFloat);
    l.gate_proj = linear(p + "ffn_gate.weight", 0);
    l.up_proj = linear(p + "ffn_up.weight", 0);
    l.down_proj = linear(p + "ffn_down.weight", 0);
    w.layers.push_back(std::move(l));
  }
  w.norm = dense("output_norm.weight", at::kFloat);
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : dense("output.weight", options.dtype);

  std::string types;
  for (const auto& [name, count] : source_types)
    types += fmt::format("{}{} {}", types.empty() ? "" : ", ", count, name);
  spdlog::info("{}: {} linear weights ({}): {} used as stored, {} stored as {}", origin,
               as_stored + converted, types, as_stored, converted, quant::describe(options.format));
  if (source_types.count("Q4_1") && !int4_g32) {
    spdlog::info(
        "the Q4_1 linears could be used as stored, without converting: set "
        "quantization.type=int4 and quantization.group_size=32");
  }
  return w;
}

}  // namespace qlt::model
