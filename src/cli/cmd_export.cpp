// `qlora-train export`: writes a trained adapter, or the model merged with it, in one of the
// formats of the export table (export/export_format.h), atomically.
//
// --merge-into (merged formats, LoRA-family adapters on a quantized base): the adapter's update
// s·B·A is added either to
//   dequantized  the dequantized quantized weights the adapter was trained against (default):
//                that is the model the trainer evaluated, and the adapter learned, in part, to
//                compensate the quantization error of exactly those weights (QLoRA's setting);
//                adding it to other weights gives a model that was never evaluated;
//   original     the original full-precision weights of model.path (reloaded unquantized), when
//                the source has them: the quantization error is then gone, but so is the part
//                of the update that corrected it. A bitsandbytes folder or a quantized GGUF has
//                no originals (an error says so), and L4Q's trained layer is its quantizer's
//                output of the weights it was trained on, so it has no "original" merge.
// With quantization.type none both are the same weights.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "cli/command.h"
#include "cli/model_setup.h"
#include "core/config.h"
#include "core/errors.h"
#include "export/export_format.h"
#include "export/hf_export.h"
#include "export/linear_source.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/llama_gguf.h"
#include "model/llama_source_linears.h"
#include "quant/bnb_layout.h"
#include "quant/weight_format.h"
#include "train/run_setup.h"

namespace qlt::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMergeDequantized = "dequantized";
constexpr const char* kMergeOriginal = "original";

struct ExportArgs {
  ConfigArgs config;
  std::string checkpoint;
  std::string format;
  std::string out;
  std::string merge_into = kMergeDequantized;
  std::string shard_size = "5GB";
  bool overwrite = false;
};

// Why model.path holds no full-precision decoder weights ("" when it does): a bitsandbytes
// 4-bit folder, or a GGUF file whose linears are stored in a quantized ggml type.
std::string no_originals_reason(const fs::path& source) {
  if (io::is_gguf_file(source)) {
    const auto file = io::GgufFile::open(source);
    for (const auto& t : file.tensors()) {
      if (!model::is_decoder_linear(model::hf_name_of_gguf_tensor(t.name))) continue;
      if (t.type != io::GgmlType::F32 && t.type != io::GgmlType::F16 &&
          t.type != io::GgmlType::BF16) {
        return fmt::format("it is a GGUF file whose linear weights are stored as {} ({})",
                           io::ggml_type_name(static_cast<uint32_t>(t.type)), t.name);
      }
    }
    return "";
  }
  const auto checkpoint = io::SafetensorsCheckpoint::open(source);
  for (const auto& name : checkpoint.names()) {
    if (model::is_decoder_linear(name) && quant::claims_bnb_4bit_layout(checkpoint, name))
      return fmt::format("it is a bitsandbytes 4-bit folder ({} is stored as NF4)", name);
  }
  return "";
}

std::string human_bytes(int64_t bytes) {
  if (bytes < 10'000) return fmt::format("{} bytes", bytes);
  return fmt::format("{:.2f} MB", static_cast<double>(bytes) / 1e6);
}

// The merge's storage error, per decoder layer (its worst linear) and overall; nothing when the
// merge changed no weight (exact merges, dense fp32 targets).
std::vector<std::string> merge_error_lines(const model::MergeReport& report) {
  std::vector<std::string> lines;
  std::map<int64_t, const model::MergeReport::LinearError*> worst;  // per layer
  double max_abs = 0;
  for (const auto& e : report.errors) {
    max_abs = std::max(max_abs, e.max_abs);
    auto& w = worst[e.layer];
    if (w == nullptr || e.relative > w->relative) w = &e;
  }
  if (max_abs == 0) return lines;
  lines.push_back(fmt::format(
      "storing the merged weights changed them by ||dW||/||W|| = {:.3e} overall (max |dw| "
      "{:.3e}); per layer, its worst linear:",
      report.overall_relative, max_abs));
  for (const auto& [layer, e] : worst) {
    lines.push_back(fmt::format("  layer {:>3}: {:.3e} ({}, max |dw| {:.3e})", layer, e->relative,
                                model::llama_linear_names()[e->linear], e->max_abs));
  }
  return lines;
}

int run_export(const ExportArgs& args, bool merge_into_given) {
  const auto start = std::chrono::steady_clock::now();
  TrainConfig cfg = load_config(args.config.config_path, args.config.overrides);
  // Everything the command line decides is checked before any model is read.
  const exporter::ExportFormat& format = exporter::export_format(args.format);
  if (merge_into_given && !format.merges()) {
    user_error("--merge-into {}: {} writes the adapter without merging it; drop --merge-into",
               args.merge_into, format.name);
  }
  exporter::ExportSettings settings;
  settings.max_shard_bytes = exporter::parse_byte_size(args.shard_size, "--shard-size");
  const train::RunOptions run = train::run_options(cfg);
  train::AdapterSource source;
  source.folder = checkpoint_adapter_folder(args.checkpoint);
  exporter::check_export_target(format, args.out, args.overwrite,
                                {cfg.model.path, args.checkpoint});
  const bool original = format.merges() && args.merge_into == kMergeOriginal;
  const bool quantized_base = quant::is_quantized(run.format);
  if (original) {  // whatever quantization.type says: a quantized source has no originals
    const std::string reason = no_originals_reason(cfg.model.path);
    if (!reason.empty()) {
      user_error(
          "--merge-into original: model.path {} has no full-precision weights to merge into: "
          "{}; use --merge-into dequantized (the default: the weights the adapter was trained "
          "against), or set model.path to the full-precision model",
          cfg.model.path, reason);
    }
  }

  // Tokenizer, model in the config's format and the adapter (shared with train, eval).
  auto [tokenizer, model] = train::load_model(cfg, run, source);
  const std::string adapter = train::describe_adapter(*model.adapter_options);
  spdlog::info("adapter {} ({})", source.folder.string(), adapter);

  // Merging rows: each decoder linear is merged when the writer reaches it and dropped once
  // written (exporter::merged_linears), so the export holds the model as loaded plus about one
  // linear in full precision; with --merge-into original that linear is read from model.path.
  model::MergeReport merged;
  std::optional<model::SourceLinears> originals;
  exporter::LinearSource linears;
  std::string base;
  if (format.merges()) {
    base = quant::describe(model.weights.layers.at(0).q_proj.stored);
    if (original && quantized_base) {
      if (model.adapter_options->kind == adapters::AdapterKind::kL4q) {
        user_error(
            "--merge-into original: {} is an L4Q adapter, whose trained layers are its "
            "quantizer's output for the weights it was trained on (not an update that can be "
            "added to other weights); use --merge-into dequantized",
            args.checkpoint);
      }
      spdlog::info("reading the original weights of {} one linear at a time", cfg.model.path);
      originals.emplace(model::SourceLinears::open(cfg.model.path, model.config));
    }
    const quant::WeightFormat target = format.merge_into(cfg.quantization, *model.adapter_options);
    linears = exporter::merged_linears(model, target, originals ? &*originals : nullptr, &merged);
  }

  const exporter::ExportInput input{model, tokenizer, cfg.model.path, settings, linears};
  const exporter::ExportSummary summary =
      exporter::write_export(format, input, args.out, args.overwrite);

  std::vector<std::string> error_lines;  // what storing the merged weights changed
  std::string merge_line;
  if (format.merges()) {
    const quant::WeightFormat target = *linears.format;
    const int64_t total =
        static_cast<int64_t>(model.weights.layers.size()) * model::kNumLlamaLinears;
    const std::string into =
        !quantized_base ? fmt::format("the {} base weights (as model.path holds them)", base)
        : original      ? fmt::format("the original full-precision weights (trained on {})", base)
                        : fmt::format("the dequantized {} weights it was trained against", base);
    // Dense targets: W + s·B·A in fp32, stored dense (the writer rounds to its own dtype).
    const std::string rest =
        quant::is_quantized(target)
            ? fmt::format("{} re-quantized into {}", merged.merged - merged.exact,
                          quant::describe(target))
            : fmt::format("{} added in fp32 and stored dense", merged.merged - merged.exact);
    merge_line = fmt::format(
        "merged into {} (--merge-into {}): {} of {} linears adapted, {} merged exactly, {}", into,
        original ? kMergeOriginal : kMergeDequantized, merged.merged, total, merged.exact, rest);
    spdlog::info("{}", merge_line);
    error_lines = merge_error_lines(merged);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  fmt::print("exported {} to {}: {}\n", format.name, args.out, format.writes);
  fmt::print("  adapter: {} from {}\n", adapter, source.folder.string());
  if (!merge_line.empty()) fmt::print("  {}\n", merge_line);
  for (const auto& line : error_lines) fmt::print("  {}\n", line);
  for (const auto& [file, bytes] : summary.files) fmt::print("  {} {}\n", file, human_bytes(bytes));
  fmt::print("  total {} ({} bytes) in {} file(s), {:.2f} s\n", human_bytes(summary.total_bytes()),
             summary.total_bytes(), summary.files.size(), seconds);
  for (const auto& note : summary.notes) fmt::print("  {}\n", note);
  return kExitOk;
}

}  // namespace

Command add_export_command(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  auto* sub = app.add_subcommand(
      "export", "Write the --checkpoint adapter, or the model merged with it, as --format");
  add_config_args(*sub, args->config);
  sub->add_option("--checkpoint", args->checkpoint,
                  "The adapter: a PEFT adapter folder (e.g. <run>/final) or a training "
                  "checkpoint folder")
      ->required();
  std::string formats;
  for (const auto& f : exporter::export_formats())
    formats += fmt::format("\n  {}: {}", f.name, f.writes);
  sub->add_option("--format", args->format, "What to write:" + formats)
      ->required()
      ->option_text("FORMAT");
  sub->add_option("-o,--out", args->out,
                  "Output folder or file (must not exist unless --overwrite); written under a "
                  "temporary name beside it and renamed when complete")
      ->required();
  sub->add_flag("--overwrite", args->overwrite, "Replace --out if it exists (atomically)");
  auto* merge_into =
      sub->add_option("--merge-into", args->merge_into,
                      "Merged formats, adapter on a quantized base: add the update to the "
                      "'dequantized' weights it was trained against (default: the model the "
                      "trainer evaluated; the adapter partly compensates their quantization "
                      "error) or to the 'original' full-precision weights of model.path")
          ->check(CLI::IsMember({kMergeDequantized, kMergeOriginal}))
          ->option_text("dequantized|original")
          ->capture_default_str();
  sub->add_option("--shard-size", args->shard_size,
                  "Largest safetensors shard of Hugging Face folders (5GB = 5*10^9 bytes as "
                  "transformers; also MB, GiB, ... or bytes)")
      ->capture_default_str();
  return {sub, [args, merge_into] { return run_export(*args, merge_into->count() > 0); }};
}

}  // namespace qlt::cli
