// `qlora-train eval`: loss and perplexity of the model on the config's eval dataset.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <memory>

#include "cli/command.h"
#include "core/config.h"
#include "core/device.h"
#include "core/errors.h"
#include "data/batcher.h"
#include "data/examples.h"
#include "data/text_dataset.h"
#include "export/peft_adapter.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"
#include "train/evaluate.h"
#include "train/run_checkpoint.h"

namespace qlt::cli {
namespace {

struct EvalArgs {
  ConfigArgs config;
  bool json = false;
  std::string dump_logits;  // safetensors file for the logits of the first batch
  std::string checkpoint;   // PEFT adapter folder, or a training checkpoint folder
};

// Format text: documents cut into windows (every token predicted); alpaca / chat: examples
// with their loss masks (only outputs / assistant turns counted, as in training).
struct EvalData {
  std::vector<std::vector<int64_t>> windows;
  std::vector<data::Example> examples;
  size_t size() const { return windows.empty() ? examples.size() : windows.size(); }
  at::Tensor first_batch(int64_t batch_size, int64_t pad_id) const {
    const size_t end = std::min(size(), static_cast<size_t>(batch_size));
    return windows.empty() ? data::collate_examples(examples, 0, end, pad_id).input_ids
                           : data::collate(windows, 0, end, pad_id).input_ids;
  }
};

EvalData read_eval_data(const TrainConfig& cfg, const tokenizer::Tokenizer& tokenizer) {
  EvalData out;
  if (cfg.data.format == "text") {
    out.windows = data::make_eval_windows(data::read_documents(cfg.data.eval, "text"), tokenizer,
                                          cfg.data.max_seq_len);
    if (out.windows.empty()) user_error("dataset {} yields no token to predict", cfg.data.eval);
  } else {
    const data::DataOptions options{cfg.data.format, cfg.data.chat_template, cfg.data.max_seq_len,
                                    false, cfg.data.train_on_inputs};
    out.examples = data::read_examples(cfg.data.eval, tokenizer, options).examples;
  }
  return out;
}

// The adapter folder of --checkpoint: a PEFT folder (final/, or any PEFT LoRA adapter) or a
// training checkpoint (its adapter/ subfolder, after checking it is complete).
std::filesystem::path adapter_folder(const std::filesystem::path& dir) {
  if (std::filesystem::exists(dir / exporter::kPeftConfigFile)) return dir;
  if (std::filesystem::exists(dir / "adapter" / exporter::kPeftConfigFile)) {
    const std::string problem = train::checkpoint_problem(dir);
    if (!problem.empty()) user_error("--checkpoint {}: {}", dir.string(), problem);
    return dir / "adapter";
  }
  user_error(
      "--checkpoint {}: neither a PEFT adapter folder (adapter_config.json) nor a training "
      "checkpoint (adapter/adapter_config.json)",
      dir.string());
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
  if (cfg.data.eval.empty()) {
    user_error("{}: data.eval is empty; set it to a JSONL file to evaluate on",
               args.config.config_path);
  }
  set_cpu_threads(cfg.training.threads);
  const at::Device device = resolve_device(cfg.training.device);
  const at::ScalarType dtype = parse_compute_dtype(cfg.model.compute_dtype);

  auto model = model::load_llama(cfg.model.path, dtype, device, nf4_options(cfg));
  auto tokenizer = tokenizer::Tokenizer::load(cfg.model.path);
  if (tokenizer.vocab_size() > model.config.vocab_size) {
    user_error(
        "{}/tokenizer.model has {} tokens but config.json's vocab_size is {}: the tokenizer "
        "does not belong to this model",
        cfg.model.path, tokenizer.vocab_size(), model.config.vocab_size);
  }
  if (!args.checkpoint.empty()) {
    const auto folder = adapter_folder(args.checkpoint);
    exporter::load_peft_adapter(model, folder);
    spdlog::info("adapter {} (LoRA r={})", folder.string(), model.lora_options->rank);
  }
  const EvalData eval_data = read_eval_data(cfg, tokenizer);
  spdlog::info("eval: {} {} of <= {} tokens on {} ({}, frozen weights {})", eval_data.size(),
               eval_data.windows.empty() ? "examples" : "windows", cfg.data.max_seq_len,
               device.str(), cfg.model.compute_dtype,
               model.weights.layers.empty() || !model.weights.layers[0].q_proj.quantized() ? "dense"
                                                                                           : "nf4");

  const int64_t pad = tokenizer.eos_id();
  auto r = eval_data.windows.empty()
               ? train::evaluate_examples(model, eval_data.examples, cfg.eval.batch_size,
                                          cfg.eval.max_batches, pad)
               : train::evaluate(model, eval_data.windows, cfg.eval.batch_size,
                                 cfg.eval.max_batches, pad);
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
                          {"quantization", cfg.quantization.type}};
    fmt::print("{}\n", out.dump());
  } else {
    fmt::print(
        "eval {}: loss {:.4f}  perplexity {:.3f}  ({} tokens in {} windows, {:.1f} s, "
        "{:.0f} tokens/s)\n",
        cfg.data.eval, r.loss, r.perplexity, r.predicted_tokens, r.windows, r.seconds,
        static_cast<double>(r.predicted_tokens) / std::max(r.seconds, 1e-9));
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
  sub->add_option("--dump-logits", args->dump_logits,
                  "Also write input_ids and fp32 logits of the first eval batch to this "
                  "safetensors file (to compare with other implementations)");
  return {sub, [args] { return run_eval(*args); }};
}

}  // namespace qlt::cli
