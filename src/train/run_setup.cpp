#include "train/run_setup.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "core/device.h"
#include "core/errors.h"
#include "export/peft_adapter.h"

namespace qlt::train {

RunOptions run_options(const TrainConfig& cfg) {
  RunOptions o;
  set_cpu_threads(cfg.training.threads);
  o.device = resolve_device(cfg.training.device);
  o.dtype = parse_compute_dtype(cfg.model.compute_dtype);
  o.format = quant::weight_format(cfg.quantization);
  o.adapter = adapters::adapter_options(cfg.adapter, o.format);
  if (o.adapter.kind == adapters::AdapterKind::kL4q && cfg.adapter.dropout > 0) {
    spdlog::warn(
        "adapter.dropout {} is not used by l4q: its LoRA is added to the weight before the "
        "quantizer, so there is no adapter input to drop out",
        cfg.adapter.dropout);
  }
  return o;
}

LoadedModel load_model(const TrainConfig& cfg, const RunOptions& options,
                       const AdapterSource& source) {
  auto tokenizer = tokenizer::Tokenizer::load(cfg.model.path);
  auto model = model::load_llama(cfg.model.path, options.dtype, options.device, options.format,
                                 cfg.model.allow_non_finite);
  if (tokenizer.vocab_size() > model.config.vocab_size) {
    user_error(
        "the tokenizer of {} has {} tokens but the model's vocabulary (embedding rows) is {}: "
        "the tokenizer does not belong to this model",
        cfg.model.path, tokenizer.vocab_size(), model.config.vocab_size);
  }
  if (!source.folder.empty()) {
    exporter::load_peft_adapter(model, source.folder, options.format, source.expected_type);
  } else if (source.seed && !options.adapter.none()) {
    // PEFT's init (kaiming-uniform A, zero B) from the run's seed.
    at::Generator init = at::globalContext().defaultGenerator(at::kCPU).clone();
    init.set_current_seed(static_cast<uint64_t>(*source.seed));
    model::attach_adapters(model, options.adapter, init);
  }
  return {std::move(tokenizer), std::move(model)};
}

std::string describe_adapter(const adapters::AdapterOptions& o) {
  const AdapterConfig& c = o.config;
  const std::string targets = fmt::format("{}", fmt::join(c.target_modules, ","));
  switch (o.kind) {
    case adapters::AdapterKind::kNone:
      return "no adapter";
    case adapters::AdapterKind::kLora:
      return fmt::format("LoRA r={} alpha={} on {}", c.rank, c.alpha, targets);
    case adapters::AdapterKind::kBlora:
      return fmt::format("Q-BLoRA balance={} r={} (rank {}) alpha={} on {}", c.balance, c.rank,
                         o.inner_rank, c.alpha, targets);
    case adapters::AdapterKind::kQaBlora:
      return fmt::format("QA-BLoRA pool={} repeat={} r={} alpha={} on {}", o.pool, o.repeat, c.rank,
                         c.alpha, targets);
    case adapters::AdapterKind::kL4q:
      return fmt::format("L4Q {}-bit group {} r={} alpha={} warm-up {} steps on {}", o.l4q.bits,
                         o.l4q.group_size, c.rank, c.alpha, c.l4q_warmup_steps, targets);
  }
  return "?";
}

}  // namespace qlt::train
