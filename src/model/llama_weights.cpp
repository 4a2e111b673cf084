#include "model/llama_weights.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <map>
#include <set>

#include "core/errors.h"
#include "quant/bnb_layout.h"

namespace qlt::model {
namespace {

std::string layer_prefix(int64_t i) { return fmt::format("model.layers.{}.", i); }

// Lists at most `limit` entries, then "... and N more".
std::string summarize(const std::vector<std::string>& items, size_t limit = 8) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) out += "\n  " + items[i];
  if (items.size() > limit) out += fmt::format("\n  ... and {} more", items.size() - limit);
  return out;
}

// A weight already in bitsandbytes' 4-bit layout (a "-bnb-4bit" checkpoint or our own
// `quantize` output) is used as stored, never re-quantized.
bool is_prequantized(const io::SafetensorsCheckpoint& checkpoint, const std::string& name) {
  return is_decoder_linear(name) && quant::claims_bnb_4bit_layout(checkpoint, name);
}

}  // namespace

void check_finite_weight(const std::string& file, const std::string& name, const at::Tensor& t,
                         const char* what) {
  if (!t.defined() || !t.is_floating_point()) return;
  const at::Tensor bad = at::isfinite(t).logical_not_().flatten();
  const int64_t count = bad.sum().item<int64_t>();
  if (count == 0) return;
  const int64_t first = bad.nonzero().flatten()[0].item<int64_t>();
  user_error(
      "{}: tensor {}{} holds {} NaN/Inf value{} (the first at flat index {}, of {}); the file "
      "is damaged or was saved from a diverged run: re-download or re-export it, or set "
      "model.allow_non_finite=true to load it anyway",
      file, name, what, count, count == 1 ? "" : "s", first, t.numel());
}

bool is_decoder_linear(const std::string& name) { return name.ends_with("_proj.weight"); }

std::vector<ExpectedTensor> expected_llama_tensors(const LlamaConfig& c) {
  const int64_t h = c.hidden_size;
  std::vector<ExpectedTensor> out = {{"model.embed_tokens.weight", {c.vocab_size, h}}};
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = layer_prefix(i);
    out.push_back({p + "input_layernorm.weight", {h}});
    out.push_back({p + "self_attn.q_proj.weight", {c.q_size(), h}});
    out.push_back({p + "self_attn.k_proj.weight", {c.kv_size(), h}});
    out.push_back({p + "self_attn.v_proj.weight", {c.kv_size(), h}});
    out.push_back({p + "self_attn.o_proj.weight", {h, c.q_size()}});
    out.push_back({p + "post_attention_layernorm.weight", {h}});
    out.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, h}});
    out.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, h}});
    out.push_back({p + "mlp.down_proj.weight", {h, c.intermediate_size}});
  }
  out.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  return out;
}

void check_llama_tensors(const io::SafetensorsCheckpoint& checkpoint, const LlamaConfig& c) {
  std::vector<std::string> missing, wrong_shape, unexpected;
  std::set<std::string> expected_names;
  for (const auto& e : expected_llama_tensors(c)) {
    expected_names.insert(e.name);
    if (is_prequantized(checkpoint, e.name)) {
      for (const auto& name : quant::bnb_4bit_companion_names(e.name)) expected_names.insert(name);
      // Validates the quant state and every companion tensor (UserError naming the tensor);
      // the packed U8 storage has no [out, in] shape, the quant state's "shape" stands for it.
      const auto q = quant::read_bnb_nf4(checkpoint, e.name);
      if (q.shape != e.shape) {
        wrong_shape.push_back(fmt::format(
            "{}: its bitsandbytes quant state has shape {}, config.json implies {} ({})", e.name,
            q.shape, e.shape, checkpoint.file_of(e.name).string()));
      }
      continue;
    }
    if (!checkpoint.contains(e.name)) {
      missing.push_back(fmt::format("{} {}", e.name, e.shape));
      continue;
    }
    const auto& info = checkpoint.info(e.name);
    if (info.shape != e.shape) {
      wrong_shape.push_back(fmt::format("{}: file has {}, config.json implies {} ({})", e.name,
                                        info.shape, e.shape, checkpoint.file_of(e.name).string()));
    }
  }
  for (const auto& name : checkpoint.names()) {
    if (expected_names.count(name)) continue;
    // Older checkpoints store the RoPE buffer; a tied model may still carry lm_head.
    if (name.ends_with("rotary_emb.inv_freq")) continue;
    if (name == "lm_head.weight" && c.tie_word_embeddings) {
      spdlog::warn("lm_head.weight is ignored: config.json sets tie_word_embeddings");
      continue;
    }
    unexpected.push_back(name);
  }
  if (!missing.empty() || !wrong_shape.empty() || !unexpected.empty()) {
    std::string msg = "the checkpoint does not match its config.json:";
    if (!missing.empty())
      msg += fmt::format("\n missing tensors ({}):{}", missing.size(), summarize(missing));
    if (!wrong_shape.empty())
      msg += fmt::format("\n wrongly shaped tensors ({}):{}", wrong_shape.size(),
                         summarize(wrong_shape));
    if (!unexpected.empty())
      msg += fmt::format("\n unexpected tensors ({}):{}", unexpected.size(), summarize(unexpected));
    msg += "\n check that config.json and the *.safetensors files come from the same model";
    throw UserError(msg);
  }
}

LlamaWeights load_llama_weights(const io::SafetensorsCheckpoint& checkpoint, const LlamaConfig& c,
                                const LoadOptions& options) {
  check_llama_tensors(checkpoint, c);
  auto check_finite = [&](const std::string& name, const at::Tensor& t, const char* what) {
    if (!options.allow_non_finite)
      check_finite_weight(checkpoint.file_of(name).string(), name, t, what);
  };
  // Convert each tensor as soon as it is read (one tensor in flight at a time).
  auto read = [&](const std::string& name, at::ScalarType dtype) {
    auto t = checkpoint.tensor(name);
    if (!t.is_floating_point()) {
      user_error("{}: tensor {} has dtype {}, expected a floating-point weight",
                 checkpoint.file_of(name).string(), name, io::safetensors_dtype(t.scalar_type()));
    }
    check_finite(name, t, "");
    // .to() copies when dtype or device change; a same-dtype CPU tensor stays a view of the
    // mapped file (read-only use, private mapping).
    at::Tensor out = t.to(options.device, dtype);
    if (!out.is_alias_of(t)) checkpoint.release(name);  // copied: its pages can go
    return out;
  };
  auto weight = [&](const std::string& name) { return read(name, options.dtype); };
  auto norm = [&](const std::string& name) { return read(name, at::kFloat); };
  int64_t prequantized = 0;   // weights loaded as stored, for the log line
  std::string stored_format;  // of the first one (a checkpoint uses one setting)
  bool stored_as_asked = true;
  auto linear = [&](const std::string& name) -> adapters::FrozenWeight {
    if (is_prequantized(checkpoint, name)) {
      auto q = quant::read_bnb_nf4(checkpoint, name);
      check_finite(name, q.absmax, " (its NF4 absmax)");
      check_finite(name, q.nested_absmax, " (its NF4 nested absmax)");
      if (!options.allow_non_finite && !std::isfinite(q.offset))
        user_error("{}: tensor {}: the NF4 quant state's offset is {}; the file is damaged",
                   checkpoint.file_of(name).string(), name, q.offset);
      q = q.to(options.device);
      if (prequantized++ == 0) {
        stored_format = quant::describe(quant::StoredWeight(q));
        stored_as_asked = quant::matches(q, options.format);
      }
      return adapters::FrozenWeight(std::move(q));
    }
    if (!quant::is_quantized(options.format)) return adapters::FrozenWeight(weight(name));
    // Quantize from the stored dtype on the target device; the dense copy dies here.
    const at::Tensor as_read = checkpoint.tensor(name);
    check_finite(name, as_read, "");
    try {
      adapters::FrozenWeight stored(
          quant::store_weight(as_read.to(options.device), options.format, options.dtype, name));
      checkpoint.release(name);  // quantized into new tensors: the source pages can go
      return stored;
    } catch (const UserError& e) {
      user_error("{}: tensor {}: {}", checkpoint.file_of(name).string(), name, e.what());
    }
  };

  LlamaWeights w;
  w.embed_tokens = weight("model.embed_tokens.weight");
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = layer_prefix(i);
    LlamaLayerWeights l;
    l.input_layernorm = norm(p + "input_layernorm.weight");
    l.q_proj = linear(p + "self_attn.q_proj.weight");
    l.k_proj = linear(p + "self_attn.k_proj.weight");
    l.v_proj = linear(p + "self_attn.v_proj.weight");
    l.o_proj = linear(p + "self_attn.o_proj.weight");
    l.post_attention_layernorm = norm(p + "post_attention_layernorm.weight");
    l.gate_proj = linear(p + "mlp.gate_proj.weight");
    l.up_proj = linear(p + "mlp.up_proj.weight");
    l.down_proj = linear(p + "mlp.down_proj.weight");
    w.layers.push_back(std::move(l));
  }
  w.norm = norm("model.norm.weight");
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : weight("lm_head.weight");
  if (prequantized > 0) {
    spdlog::info(
        "{} linear weights are stored in bitsandbytes' layout, {}, and are used as stored, "
        "without re-quantizing",
        prequantized, stored_format);
    if (!stored_as_asked) {
      spdlog::warn(
          "the quantization section asks for {}, which differs from the stored weights ({}); it "
          "applies only to weights stored in full precision",
          quant::describe(options.format), stored_format);
    }
  }
  return w;
}

}  // namespace qlt::model
