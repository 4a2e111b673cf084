// `qlora-train inspect`: what a model is and what it will cost, read from config.json and the
// safetensors headers, or from a GGUF file's metadata (no weight data is read except to measure
// the quantization error of a planned format).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <map>
#include <memory>
#include <regex>
#include <set>

#include "cli/command.h"
#include "core/config.h"
#include "core/device.h"
#include "core/errors.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/llama_gguf.h"
#include "model/llama_weights.h"
#include "quant/bnb_layout.h"
#include "quant/nf4.h"
#include "quant/weight_format.h"
#include "tokenizer/tokenizer.h"

namespace qlt::cli {
namespace {

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string mib(double bytes) { return fmt::format("{:.2f} MiB", bytes / (1024.0 * 1024.0)); }

// The component a tensor belongs to, for the parameter table.
std::string component_of(const std::string& name) {
  if (name.find("embed_tokens") != std::string::npos) return "embeddings";
  if (name.find("self_attn.") != std::string::npos) return "attention";
  if (name.find("mlp.") != std::string::npos) return "mlp";
  if (name.find("norm") != std::string::npos) return "norms";
  if (name.starts_with("lm_head")) return "lm_head";
  return "other";
}

// Quantizes every decoder linear weight (one at a time) and reports bytes, bits per parameter
// and the relative Frobenius error ||W - deq(q(W))|| / ||W|| per layer.
// Returns the quantized bytes of the decoder linear weights.
int64_t print_quantization_plan(const io::SafetensorsCheckpoint& checkpoint,
                                const model::LlamaConfig& c, const quant::WeightFormat& format) {
  fmt::print("quantization {}\n", quant::describe(format));
  int64_t params = 0, bytes = 0, stored_bytes = 0;
  std::map<int64_t, std::pair<double, double>> layer_error;  // layer -> (sum err^2, sum w^2)
  for (const auto& e : model::expected_llama_tensors(c)) {
    if (!model::is_decoder_linear(e.name)) continue;
    auto w = checkpoint.tensor(e.name);
    auto q = quant::store_weight(w, format, w.scalar_type(), e.name);
    auto w32 = w.to(at::kFloat);
    const double err = (quant::dequantize(q, at::kFloat) - w32).pow(2).sum().item<double>();
    const int64_t layer = std::stoll(e.name.substr(std::string("model.layers.").size()));
    layer_error[layer].first += err;
    layer_error[layer].second += w32.pow(2).sum().item<double>();
    params += w.numel();
    bytes += quant::storage_bytes(q);
    stored_bytes += static_cast<int64_t>(w.nbytes());
  }
  fmt::print(
      "  decoder linear weights  {} parameters: {} quantized (was {}), {:.3f} bits/parameter\n",
      params, mib(static_cast<double>(bytes)), mib(static_cast<double>(stored_bytes)),
      8.0 * static_cast<double>(bytes) / static_cast<double>(std::max<int64_t>(params, 1)));
  fmt::print("  relative error ||W - deq(q(W))|| / ||W|| per layer:");
  for (const auto& [layer, e] : layer_error) {
    fmt::print("{}layer {}: {:.4f}", layer % 6 == 0 ? "\n    " : "  ", layer,
               std::sqrt(e.first / std::max(e.second, 1e-30)));
  }
  fmt::print("\n");
  return bytes;
}

// A checkpoint already in bitsandbytes' 4-bit layout: reports what is stored (there is no
// full-precision original to measure the error against). Returns the NF4 bytes of the decoder
// linear weights, or -1 when the checkpoint holds none in that layout.
int64_t print_stored_nf4(const io::SafetensorsCheckpoint& checkpoint, const model::LlamaConfig& c) {
  int64_t params = 0, bytes = 0, count = 0, block_size = 0;
  bool double_quant = false;
  for (const auto& e : model::expected_llama_tensors(c)) {
    if (!model::is_decoder_linear(e.name) || !quant::claims_bnb_4bit_layout(checkpoint, e.name))
      continue;
    const auto q = quant::read_bnb_nf4(checkpoint, e.name);
    params += q.numel();
    bytes += q.storage_bytes();
    block_size = q.block_size;
    double_quant = q.double_quant();
    ++count;
  }
  if (count == 0) return -1;
  fmt::print(
      "quantization: {} decoder linear weights stored in bitsandbytes' NF4 layout (block {}, "
      "double quant {}), used as stored\n",
      count, block_size, double_quant ? "on" : "off");
  fmt::print(
      "  decoder linear weights  {} parameters: {} in NF4, {:.3f} bits/parameter "
      "(no full-precision original to measure the quantization error against)\n",
      params, mib(static_cast<double>(bytes)),
      8.0 * static_cast<double>(bytes) / static_cast<double>(std::max<int64_t>(params, 1)));
  return bytes;
}

void print_architecture(const std::string& path, const std::string& stored_as,
                        const model::LlamaConfig& c) {
  std::string rope = c.rope_scaling.llama3
                         ? fmt::format("llama3 (factor {}, low {}, high {}, original context {})",
                                       c.rope_scaling.factor, c.rope_scaling.low_freq_factor,
                                       c.rope_scaling.high_freq_factor,
                                       c.rope_scaling.original_max_position_embeddings)
                         : "none";
  fmt::print("model {} (LLaMA, stored as {})\n", path, stored_as);
  fmt::print("  layers {}  hidden {}  intermediate {}  heads {} (kv heads {}, head_dim {})\n",
             c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads,
             c.num_key_value_heads, c.head_dim);
  fmt::print("  vocab {}  context {}  rms_norm_eps {}  rope_theta {}  rope_scaling {}\n",
             c.vocab_size, c.max_position_embeddings, c.rms_norm_eps, c.rope_theta, rope);
  fmt::print("  tied embeddings: {}\n", c.tie_word_embeddings ? "yes" : "no");
}

// A GGUF model: architecture from its metadata, tensors by ggml type, and the memory the
// frozen linears take in the configured format (Q4_1 linears are kept as stored under int4
// group 32; every other combination converts them on load).
int inspect_gguf(const TrainConfig& cfg, const tokenizer::Tokenizer& tokenizer) {
  const auto file = io::GgufFile::open(cfg.model.path);
  const auto c = model::llama_config_from_gguf(file);
  const quant::WeightFormat format = quant::weight_format(cfg.quantization);
  const double compute_elem =
      static_cast<double>(at::elementSize(parse_compute_dtype(cfg.model.compute_dtype)));
  print_architecture(cfg.model.path, fmt::format("GGUF v{}", file.version()), c);
  fmt::print("tokenizer: {} tokens, bos {}, eos {}\n", tokenizer.vocab_size(), tokenizer.bos_id(),
             tokenizer.eos_id());
  std::map<std::string, std::pair<int64_t, const io::GgufTensorInfo*>> groups;
  std::vector<std::string> order;
  const std::regex layer_index(R"(^blk\.\d+\.)");
  double disk = 0, memory = 0, linear_params = 0, linear_disk = 0;
  for (const auto& t : file.tensors()) {
    const auto pattern = std::regex_replace(t.name, layer_index,
                                            fmt::format("blk.{{0..{}}}.", c.num_hidden_layers - 1));
    auto [it, fresh] = groups.try_emplace(pattern, 0, &t);
    if (fresh) order.push_back(pattern);
    ++it->second.first;
    disk += static_cast<double>(t.nbytes);
    const std::string hf = model::hf_name_of_gguf_tensor(t.name);
    if (model::is_decoder_linear(hf)) {
      linear_params += static_cast<double>(t.numel());
      linear_disk += static_cast<double>(t.nbytes);
    } else {
      memory += static_cast<double>(t.numel()) *
                (hf.find("norm") != std::string::npos ? 4.0 : compute_elem);
    }
  }
  fmt::print("tensors ({} in one GGUF file)\n", file.tensors().size());
  for (const auto& pattern : order) {
    const auto& [count, info] = groups[pattern];
    const auto traits = io::ggml_type_traits(static_cast<uint32_t>(info->type));
    fmt::print("  {:<36} {:>3} x {:<14} {}\n", pattern, count,
               fmt::format("[{}]", fmt::join(info->torch_shape(), ", ")),
               traits ? traits->name : "?");
  }
  // Bytes per weight of the frozen linears in memory: the file's when kept as stored.
  double linear_memory = linear_params * compute_elem;
  if (const auto* int4 = std::get_if<quant::Int4Options>(&format))
    linear_memory = linear_params * (4.0 + 0.5 * static_cast<double>(int4->group_size)) /
                    static_cast<double>(int4->group_size);
  else if (const auto* nf4 = std::get_if<quant::Nf4Options>(&format))
    linear_memory = linear_params *
                    (0.5 + (nf4->double_quant ? 1.0 : 4.0) / static_cast<double>(nf4->block_size));
  fmt::print("memory\n");
  fmt::print("  on disk            {}\n", mib(disk));
  fmt::print(
      "  weights in memory  {} ({} compute, norms float32, decoder linears {}; {} in the "
      "file)\n",
      mib(memory + linear_memory), cfg.model.compute_dtype, quant::describe(format),
      mib(linear_disk));
  return kExitOk;
}

int run_inspect(const ConfigArgs& args) {
  TrainConfig cfg = load_config(args.config_path, args.overrides);
  const at::ScalarType dtype = parse_compute_dtype(cfg.model.compute_dtype);
  // The tokenizer first: it says what is wrong with a model.path that is not a model folder.
  auto tokenizer = tokenizer::Tokenizer::load(cfg.model.path);
  if (io::is_gguf_file(cfg.model.path)) return inspect_gguf(cfg, tokenizer);
  auto c = model::read_llama_config(cfg.model.path);
  auto checkpoint = io::SafetensorsCheckpoint::open(cfg.model.path);
  model::check_llama_tensors(checkpoint, c);

  print_architecture(cfg.model.path, c.torch_dtype, c);
  fmt::print("tokenizer {}/tokenizer.model: {} pieces, bos {}, eos {}, unk {}\n", cfg.model.path,
             tokenizer.vocab_size(), tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.unk_id());

  // Parameters and memory per component; tensors grouped across layers.
  std::map<std::string, int64_t> params;
  std::map<std::string, std::pair<int64_t, const io::TensorInfo*>> groups;  // pattern -> count
  std::vector<std::string> group_order;
  const std::regex layer_index(R"(model\.layers\.\d+\.)");
  double disk_bytes = 0, compute_bytes = 0;
  const double compute_elem = static_cast<double>(at::elementSize(dtype));
  for (const auto& e : model::expected_llama_tensors(c)) {
    const auto& info = checkpoint.info(e.name);
    const int64_t n = numel(e.shape);  // logical shape (a bnb 4-bit weight is stored packed)
    const std::string component = component_of(e.name);
    params[component] += n;
    disk_bytes += static_cast<double>(info.end - info.begin);
    compute_bytes += static_cast<double>(n) * (component == "norms" ? 4.0 : compute_elem);
    std::string pattern = std::regex_replace(
        e.name, layer_index, fmt::format("model.layers.{{0..{}}}.", c.num_hidden_layers - 1));
    auto [it, fresh] = groups.try_emplace(pattern, 0, &info);
    if (fresh) group_order.push_back(pattern);
    ++it->second.first;
  }
  int64_t total = 0;
  fmt::print("parameters\n");
  for (const char* k : {"embeddings", "attention", "mlp", "norms", "lm_head"}) {
    if (!params.count(k)) continue;
    fmt::print("  {:<11} {:>14L}\n", k, params[k]);
    total += params[k];
  }
  if (c.tie_word_embeddings) fmt::print("  {:<11} {:>14}\n", "lm_head", "(tied)");
  fmt::print("  {:<11} {:>14L}\n", "total", total);

  fmt::print("tensors ({} in {} file(s))\n", checkpoint.names().size(), [&] {
    std::set<std::filesystem::path> files;
    for (const auto& n : checkpoint.names()) files.insert(checkpoint.file_of(n));
    return files.size();
  }());
  for (const auto& pattern : group_order) {
    const auto& [count, info] = groups[pattern];
    std::string shape = fmt::format("[{}]", fmt::join(info->shape, ", "));
    fmt::print("  {:<52} {:>3} x {:<14} {}\n", pattern, count, shape, info->dtype);
  }
  // Decoder linears are held in NF4 instead of the compute dtype: as stored, or quantized on
  // load when the config asks for it.
  double linear_params = 0;
  for (const auto& e : model::expected_llama_tensors(c)) {
    if (model::is_decoder_linear(e.name)) linear_params += static_cast<double>(numel(e.shape));
  }
  const quant::WeightFormat format = quant::weight_format(cfg.quantization);
  int64_t quantized_bytes = print_stored_nf4(checkpoint, c);
  std::string linear_format = quantized_bytes >= 0 ? "NF4 as stored" : cfg.model.compute_dtype;
  if (quantized_bytes < 0 && quant::is_quantized(format)) {
    quantized_bytes = print_quantization_plan(checkpoint, c, format);
    linear_format = quant::describe(format);
  }
  if (quantized_bytes >= 0)
    compute_bytes += static_cast<double>(quantized_bytes) - linear_params * compute_elem;
  fmt::print("memory\n");
  fmt::print("  on disk            {}\n", mib(disk_bytes));
  fmt::print("  weights in memory  {} ({} compute, norms float32, decoder linears {})\n",
             mib(compute_bytes), cfg.model.compute_dtype, linear_format);
  return kExitOk;
}

}  // namespace

Command add_inspect_command(CLI::App& app) {
  auto args = std::make_shared<ConfigArgs>();
  auto* sub = app.add_subcommand(
      "inspect", "Model architecture, parameter counts, tensors and memory (reads headers only)");
  add_config_args(*sub, *args);
  return {sub, [args] { return run_inspect(*args); }};
}

}  // namespace qlt::cli
