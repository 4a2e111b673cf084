// `qlora-train eval`: loss and perplexity of the model on the config's eval dataset.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <optional>

#include "cli/command.h"
#include "cli/model_setup.h"
#include "core/config.h"
#include "core/device.h"
#include "core/errors.h"
#include "data/batcher.h"
#include "data/examples.h"
#include "data/text_dataset.h"
#include "export/peft_adapter.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "quant/weight_format.h"
#include "tokenizer/tokenizer.h"
#include "train/evaluate.h"
#include "train/run_checkpoint.h"
#include "train/run_setup.h"

namespace qlt::cli {
namespace {

struct EvalArgs {
  ConfigArgs config;
  bool json = false;
  std::string dump_logits;  // safetensors file for the logits of the first batch
  std::string checkpoint;   // PEFT adapter folder, or a training checkpoint folder
  std::string merge;        // merge the adapter into weights of this format ("" = do not)
};

// Bytes of the decoder's linear weights as stored (what differs between formats and merges).
int64_t decoder_linear_bytes(const model::LlamaModel& model) {
  int64_t bytes = 0;
  for (const auto& layer : model.weights.layers)
    for (int j = 0; j < model::kNumLlamaLinears; ++j)
      bytes += model::linear_weight(layer, j).storage_bytes();
  return bytes;
}

// Refuses a --dump-logits path that cannot be written before any work is done: too long, or
// in a folder that does not exist.
void check_output_file(const std::filesystem::path& file) {
  namespace fs = std::filesystem;
  if (file.native().size() >= PATH_MAX)
    user_error("--dump-logits: {}; choose a shorter path",
               path_too_long("the path", file.native()));
  const fs::path folder = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) {
    user_error("--dump-logits {}: the folder {} does not exist{}; create it first", file.string(),
               folder.string(), ec ? fmt::format(" ({})", ec.message()) : "");
  }
}

// Writes input_ids [B, T] int64 and logits [B, T, vocab] fp32 of the first eval batch, so
// other stacks (scripts/fixtures/check_bnb_load.py, check_peft_load.py) can compare theirs.
void dump_first_batch_logits(const model::LlamaModel& model, const at::Tensor& input_ids,
                             const std::string& file) {
  at::NoGradGuard no_grad;
  const at::Tensor logits = model.logits(input_ids).to(at::kCPU, at::kFloat);
  io::save_safetensors(file, {{"input_ids", input_ids}, {"logits", logits}}, {{"format", "pt"}});
  spdlog::info("wrote the logits of the first {} sequences to {}", input_ids.size(0), file);
}

int run_eval(const EvalArgs& args) {
  TrainConfig cfg = load_config(args.config.config_path, args.config.overrides);
  if (!args.dump_logits.empty()) check_output_file(args.dump_logits);
  if (cfg.data.eval.empty()) {
    user_error("{}: data.eval is empty; set it to a JSONL file to evaluate on",
               args.config.config_path);
  }
  const train::RunOptions run = train::run_options(cfg);
  const at::Device device = run.device;
  // --merge: the format the merged model is stored in (quantization.* sizes), checked first.
  std::optional<quant::WeightFormat> merge_format;
  if (!args.merge.empty()) {
    const auto names = quant::weight_format_names();
    if (std::find(names.begin(), names.end(), args.merge) == names.end()) {
      user_error("--merge {}: unknown weight format; use one of {}", args.merge,
                 fmt::join(names, ", "));
    }
    QuantizationConfig q = cfg.quantization;
    q.type = args.merge;
    try {
      merge_format = quant::weight_format(q);
    } catch (const UserError& e) {
      user_error("--merge {}: {}", args.merge, e.what());
    }
    if (args.checkpoint.empty())
      user_error("--merge needs --checkpoint: the adapter to merge into the frozen weights");
  }

  // The tokenizer, --checkpoint's folder, the model and its adapter (shared with train).
  auto [tokenizer, model] = load_inference_model(cfg, run, args.checkpoint);
  int64_t adapter_parameters = 0;
  for (const auto& p : model::adapter_parameters(model)) adapter_parameters += p.tensor.numel();
  model::MergeReport merged;
  if (merge_format) {
    merged = model::merge_adapters(model, *merge_format);
    spdlog::info("merged the adapter into {} linears stored as {}: {} exactly, {} re-quantized",
                 merged.merged, quant::describe(*merge_format), merged.exact,
                 merged.merged - merged.exact);
    adapter_parameters = 0;
  }
  // As in training (train::data_options), but one example per sequence.
  data::DataOptions options = cfg.data;
  options.packing = false;
  const train::EvalSet eval_data = train::read_eval_set(cfg.data.eval, options, tokenizer);
  spdlog::info("eval: {} {} of <= {} tokens on {} ({}, frozen weights {})", eval_data.size(),
               eval_data.unit(), cfg.data.max_seq_len, device.str(), cfg.model.compute_dtype,
               model.weights.layers.empty()
                   ? "none"
                   : quant::describe(model.weights.layers[0].q_proj.stored));

  const int64_t pad = tokenizer.eos_id();
  auto r = train::evaluate_set(model, eval_data, cfg.eval.batch_size, cfg.eval.max_batches, pad);
  if (!args.dump_logits.empty()) {
    dump_first_batch_logits(model, eval_data.first_batch(cfg.eval.batch_size, pad),
                            args.dump_logits);
  }
  if (args.json) {
    nlohmann::json out = {{"dataset", cfg.data.eval},
                          {"loss", r.loss},
                          {"perplexity", r.perplexity},
                          {"windows", r.windows},
                          {"predicted_tokens", r.predicted_tokens},
                          {"seconds", r.seconds},
                          {"compute_dtype", cfg.model.compute_dtype},
                          {"device", device.str()},
                          {"quantization", cfg.quantization.type},
                          {"decoder_linear_bytes", decoder_linear_bytes(model)},
                          {"adapter_parameters", adapter_parameters},
                          {"merged_linears", merged.merged},
                          {"merged_exactly", merged.exact}};
    fmt::print("{}\n", out.dump());
  } else {
    fmt::print(
        "eval {}: loss {:.4f}  perplexity {:.3f}  ({} tokens in {} {}, {:.1f} s, "
        "{:.0f} tokens/s)\n",
        cfg.data.eval, r.loss, r.perplexity, r.predicted_tokens, r.windows, eval_data.unit(),
        r.seconds, static_cast<double>(r.predicted_tokens) / std::max(r.seconds, 1e-9));
  }
  return kExitOk;
}

}  // namespace

Command add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  auto* sub = app.add_subcommand("eval", "Loss and perplexity of the model on data.eval");
  add_config_args(*sub, args->config);
  sub->add_flag("--json", args->json, "Print the result as one JSON object");
  sub->add_option("--checkpoint", args->checkpoint,
                  "Apply a LoRA adapter: a PEFT adapter folder (e.g. <run>/final) or a training "
                  "checkpoint folder");
  sub->add_option("--merge", args->merge,
                  "Merge the --checkpoint adapter into the frozen weights, stored as FORMAT "
                  "(none | nf4 | int4, sizes from quantization.*), and evaluate that model: "
                  "qa-blora and l4q merge into int4 exactly, others are re-quantized")
      ->option_text("FORMAT");
  sub->add_option("--dump-logits", args->dump_logits,
                  "Also write input_ids and fp32 logits of the first eval batch to this "
                  "safetensors file (to compare with other implementations)");
  return {sub, [args] { return run_eval(*args); }};
}

}  // namespace qlt::cli
