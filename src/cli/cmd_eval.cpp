// `qlora-train eval`: loss and perplexity of the model on the config's eval dataset.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <memory>

#include "cli/command.h"
#include "core/config.h"
#include "core/device.h"
#include "core/errors.h"
#include "data/text_dataset.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"
#include "train/evaluate.h"

namespace qlt::cli {
namespace {

struct EvalArgs {
  ConfigArgs config;
  bool json = false;
  std::string dump_logits;  // safetensors file for the logits of the first batch
};

// Writes input_ids [B, T] int64 and logits [B, T, vocab] fp32 of the first eval batch, so
// other stacks (scripts/fixtures/check_bnb_load.py, check_peft_load.py) can compare theirs.
void dump_first_batch_logits(const model::LlamaModel& model,
                             const std::vector<std::vector<int64_t>>& windows, int64_t batch_size,
                             int64_t pad_id, const std::string& file) {
  const size_t end = std::min(windows.size(), static_cast<size_t>(batch_size));
  const data::Batch batch = data::collate(windows, 0, end, pad_id);
  at::NoGradGuard no_grad;
  const at::Tensor logits = model.logits(batch.input_ids).to(at::kCPU, at::kFloat);
  io::save_safetensors(file, {{"input_ids", batch.input_ids}, {"logits", logits}},
                       {{"format", "pt"}});
  spdlog::info("wrote the logits of the first {} windows to {}", end, file);
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
  auto documents = data::read_documents(cfg.data.eval, cfg.data.format);
  auto windows = data::make_eval_windows(documents, tokenizer, cfg.data.max_seq_len);
  if (windows.empty()) user_error("dataset {} yields no token to predict", cfg.data.eval);
  spdlog::info("eval: {} documents -> {} windows of <= {} tokens on {} ({}, frozen weights {})",
               documents.size(), windows.size(), cfg.data.max_seq_len, device.str(),
               cfg.model.compute_dtype,
               model.weights.layers.empty() || !model.weights.layers[0].q_proj.quantized()
                   ? "dense"
                   : "nf4");

  auto r = train::evaluate(model, windows, cfg.eval.batch_size, cfg.eval.max_batches,
                           tokenizer.eos_id());
  if (!args.dump_logits.empty()) {
    dump_first_batch_logits(model, windows, cfg.eval.batch_size, tokenizer.eos_id(),
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
  sub->add_option("--dump-logits", args->dump_logits,
                  "Also write input_ids and fp32 logits of the first eval batch to this "
                  "safetensors file (to compare with other implementations)");
  return {sub, [args] { return run_eval(*args); }};
}

}  // namespace qlt::cli
