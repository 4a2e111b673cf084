#include "train/trainer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <set>
#include <stdexcept>

#include "core/device.h"
#include "core/errors.h"
#include "data/examples.h"
#include "data/text_dataset.h"
#include "io/atomic_file.h"
#include "model/causal_lm_loss.h"
#include "optim/clip_grad.h"
#include "quant/weight_format.h"
#include "train/activation_checkpoint.h"
#include "train/dropout_seed.h"
#include "train/fault_point.h"
#include "train/resume_config.h"
#include "train/run_checkpoint.h"
#include "train/stop_signal.h"

namespace qlt::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Trainer::Trainer(TrainerOptions options)
    : options_(std::move(options)), cfg_(options_.config), run_dir_(cfg_.checkpoint.output_dir) {}

void Trainer::setup() {
  const std::string& origin = options_.config_origin;
  if (cfg_.data.train.empty())
    user_error("{}: data.train is empty; set it to the JSONL training set", origin);
  if (cfg_.checkpoint.output_dir.empty())
    user_error("{}: checkpoint.output_dir is empty; set it to the run directory", origin);
  // The config as typed options, validated once, before anything is read or written.
  run_ = run_options(cfg_);
  device_ = run_.device;
  dtype_ = run_.dtype;
  if (run_.adapter.none()) {
    user_error(
        "{}: adapter.type is none: there is nothing to train; choose one of lora, blora, "
        "qa-blora, l4q",
        origin);
  }
  optim::AdamWOptions adamw{cfg_.optimizer.lr, cfg_.optimizer.beta1, cfg_.optimizer.beta2,
                            cfg_.optimizer.eps, cfg_.optimizer.weight_decay};
  optim::validate(adamw);
  const optim::OptimizerType& optimizer_type = optim::optimizer_type(cfg_.optimizer.type);
  schedule_ = optim::ScheduleOptions{optim::parse_schedule_type(cfg_.schedule.type),
                                     cfg_.schedule.warmup_steps, cfg_.training.max_steps,
                                     cfg_.optimizer.lr};
  optim::validate(schedule_);

  // From here on a SIGINT / SIGTERM is a request: setup stops at its next phase boundary.
  signals_ = std::make_unique<StopSignalScope>();
  if (options_.dist_env) join_process_group();
  // Before anything is written: one process per run folder. Distributed, rank 0 owns the
  // folder (lock, clean-up, checkpoints, metrics); the others read the checkpoint it chose,
  // after it has cleaned up.
  if (is_rank0()) {
    lock_ = RunDirLock::acquire(run_dir_);
    fault_point("setup");
    remove_stale_temp_checkpoints(run_dir_);
    resolve_resume_checkpoint();
  }
  if (dp_) {
    dp_->barrier();
    if (!is_rank0()) resolve_resume_checkpoint();
  }
  check_stop_during_setup("checking the run folder");

  // The resumed checkpoint's adapter (of the configured type), or fresh ones from the seed.
  AdapterSource source;
  if (resume_checkpoint_) {
    source.folder = *resume_checkpoint_ / kCheckpointAdapterDir;
    source.expected_type = cfg_.adapter.type;
  } else {
    source.seed = cfg_.training.seed;
  }
  auto loaded = load_model(cfg_, run_, source);
  tokenizer_ = std::move(loaded.tokenizer);
  model_ = std::move(loaded.model);
  check_stop_during_setup("loading the model");
  std::set<std::string> no_decay;
  for (auto& p : model::adapter_parameters(model_)) {
    if (!p.weight_decay) no_decay.insert(p.name);
    params_.emplace_back(p.name, p.tensor);
  }
  layer_params_.assign(model_.adapters.size(), {});
  for (size_t i = 0; i < model_.adapters.size(); ++i)
    layer_params_[i] = model::layer_adapter_tensors(model_, static_cast<int64_t>(i));

  load_data();
  check_stop_during_setup("reading the data");
  optimizer_ = std::make_unique<optim::Optimizer>(optimizer_type, params_, adamw, no_decay);
  if (dp_) {
    std::vector<at::Tensor> trainable;
    for (const auto& [name, p] : params_) trainable.push_back(p);
    grad_sync_ = std::make_unique<dist::OverlappedAllReduce>(*dp_, trainable);
    spdlog::info("data parallel: gradients summed in {} bucket(s) of <= {} MB during backward",
                 grad_sync_->bucket_count(), dist::kBucketBytes >> 20);
  }
  dropout_generator_ = at::globalContext().defaultGenerator(device_).clone();
  dropout_generator_->set_current_seed(static_cast<uint64_t>(cfg_.training.seed));
  if (resume_checkpoint_) restore_run_state(*resume_checkpoint_);
  // Setup succeeded: only now does the folder get this start's config and metrics.
  if (is_rank0()) {
    io::write_file_atomically(run_dir_ / "config.json", config_to_text(cfg_) + "\n");
    metrics_ =
        std::make_unique<MetricsLog>(run_dir_ / "metrics.jsonl", resume_checkpoint_ ? step_ : -1);
  }
  int64_t trainable = 0;
  for (const auto& [name, p] : params_) trainable += p.numel();
  spdlog::info(
      "model {}: {} layers, frozen linears {} ({}), {} -> {} trainable parameters; "
      "device {}",
      cfg_.model.path, model_.config.num_hidden_layers, quant::describe(run_.format),
      cfg_.model.compute_dtype, describe_adapter(run_.adapter), trainable, device_.str());
}

void Trainer::join_process_group() {
  const dist::DistEnv& env = *options_.dist_env;
  if (cfg_.training.grad_accum % env.world_size != 0) {
    user_error(
        "{}: training.grad_accum {} is not a multiple of WORLD_SIZE {}: each rank trains "
        "grad_accum / WORLD_SIZE micro-batches of every step (the global batch stays "
        "grad_accum x micro_batch_size sequences); set training.grad_accum to a multiple of {}",
        options_.config_origin, cfg_.training.grad_accum, env.world_size, env.world_size);
  }
  // Several processes on one machine: rank LOCAL_RANK uses cuda:LOCAL_RANK.
  if (device_.is_cuda() && !device_.has_index()) {
    device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  } else if (device_.is_cuda() && cfg_.training.device == "auto") {
    device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  }
  run_.device = device_;
  std::string backend = cfg_.training.distributed;
  if (backend == "auto") backend = device_.is_cuda() ? "nccl" : "gloo";
  if (backend == "nccl" && !device_.is_cuda()) {
    user_error(
        "{}: training.distributed nccl needs training.device cuda (it is {}); use gloo or auto "
        "for CPU training",
        options_.config_origin, device_.str());
  }
  // Only rank 0 logs progress; the others keep warnings and errors.
  if (env.rank != 0) spdlog::set_level(spdlog::level::warn);
  const std::string hash = resume_config_hash(config_to_json(cfg_)) +
                           (options_.resume_latest ? "+resume" : "") +
                           options_.resume_from.string();
  dp_ = dist::DataParallel::join(env, backend,
                                 std::chrono::seconds(cfg_.training.distributed_timeout_s), hash);
  spdlog::info(
      "data parallel: {} ranks ({}), {} of the {} micro-batches of each step per rank; only "
      "rank 0 writes checkpoints, logs and metrics",
      env.world_size, backend, cfg_.training.grad_accum / env.world_size, cfg_.training.grad_accum);
}

void Trainer::check_stop_during_setup(const char* phase) {
  if (!stop_requested()) return;
  throw StoppedDuringSetup(fmt::format(
      "stopped by signal {} while {}; nothing was trained or written. Continue with the same "
      "command{}",
      stop_signal_number(), phase,
      resume_checkpoint_ || options_.resume_latest || !options_.resume_from.empty()
          ? ""
          : " (or the same command with --resume)"));
}

void Trainer::load_data() {
  const data::DataOptions& options = cfg_.data;
  data::ExampleSet train = data::read_examples(cfg_.data.train, *tokenizer_, options);
  spdlog::info(
      "data {}: {} records -> {} examples ({} truncated to {} tokens, {} dropped), {} "
      "trained tokens, packing {}",
      cfg_.data.train, train.records, train.examples.size(), train.truncated, cfg_.data.max_seq_len,
      train.dropped, train.trained_tokens, cfg_.data.packing ? "on" : "off");
  batcher_ = std::make_unique<data::Batcher>(std::move(train.examples), options,
                                             static_cast<uint64_t>(cfg_.training.seed),
                                             tokenizer_->eos_id());
  if (!cfg_.data.eval.empty()) eval_set_ = read_eval_set(cfg_.data.eval, options, *tokenizer_);
}

model::ForwardOptions Trainer::forward_options() {
  model::ForwardOptions forward;
  forward.training = true;
  forward.dropout_generator = dropout_generator_;
  if (cfg_.training.activation_checkpointing) {
    forward.layer_wrapper = [this](int64_t layer,
                                   const std::function<at::Tensor(const at::Tensor&)>& f,
                                   const at::Tensor& x) {
      return checkpointed(f, x, layer_params_[static_cast<size_t>(layer)], dropout_generator_);
    };
  }
  return forward;
}

EvalResult Trainer::run_eval() {
  return evaluate_set(model_, eval_set_, cfg_.eval.batch_size, cfg_.eval.max_batches,
                      tokenizer_->eos_id());
}

void Trainer::write_metrics(const nlohmann::ordered_json& record) {
  if (!metrics_) return;  // distributed: rank 0 writes metrics.jsonl
  try {
    metrics_->write(record);
  } catch (const MetricsWriteError& e) {
    // A run whose log has a silent gap is not trustworthy; stop, keeping the work done.
    std::string saved;
    if (step_ > last_saved_step_ && step_ > 0) {
      try {
        saved =
            fmt::format("the state at step {} is saved in {}", step_, save_checkpoint().string());
      } catch (const std::exception& save_error) {
        saved = fmt::format("the state at step {} could not be saved either ({})", step_,
                            save_error.what());
      }
    } else {
      saved = step_ == 0 ? "nothing was trained yet"
                         : fmt::format("the state at step {} was already saved", step_);
    }
    throw RuntimeError(fmt::format(
        "{}; training stopped: {}. Free space (or fix the file system) and continue with "
        "--resume",
        e.what(), saved));
  }
}

void Trainer::write_eval(const EvalResult& r) {
  write_metrics({{"type", "eval"},
                 {"step", step_},
                 {"loss", r.loss},
                 {"perplexity", r.perplexity},
                 {"tokens", r.predicted_tokens},
                 {"seconds", r.seconds}});
}

int Trainer::stop_now() {
  if (step_ > last_saved_step_ && step_ > 0) {
    const fs::path saved = save_checkpoint();
    spdlog::warn("stopped by signal {} after step {}; state saved in {} (continue with --resume)",
                 stop_signal_number(), step_, saved.string());
  } else if (last_saved_step_ >= 0 && step_ > 0) {
    spdlog::warn("stopped by signal {} at step {}; its state is in {} (continue with --resume)",
                 stop_signal_number(), step_, checkpoint_path(run_dir_, step_).string());
  } else {
    spdlog::warn(
        "stopped by signal {} before the first step; nothing to save (continue with --resume, "
        "which starts at step 0)",
        stop_signal_number());
  }
  return kExitStopped;
}

int Trainer::train() {
  if (run_complete_) return kExitOk;
  const model::ForwardOptions forward = forward_options();
  std::vector<at::Tensor> params;
  for (const auto& [name, p] : params_) params.push_back(p);
  const bool cuda = device_.is_cuda();
  const int64_t first_step = step_;
  const int64_t max_steps = cfg_.training.max_steps;
  if (step_ < max_steps)
    spdlog::info(
        "training steps {}..{} ({} x {} sequences of <= {} tokens per step, lr {} {}, "
        "warmup {})",
        step_ + 1, max_steps, cfg_.training.grad_accum, cfg_.training.micro_batch_size,
        cfg_.data.max_seq_len, cfg_.optimizer.lr, cfg_.schedule.type, cfg_.schedule.warmup_steps);
  if (stop_agreed()) return stop_now();
  if (!eval_set_.empty() && step_ == 0) {
    fault_point("eval0");
    const EvalResult r = run_eval();
    spdlog::info("eval at step 0: loss {:.4f} perplexity {:.3f}", r.loss, r.perplexity);
    write_eval(r);
  }

  // The logging interval's sums.
  double interval_loss_sum = 0, interval_seconds = 0;
  int64_t interval_trained = 0, interval_tokens = 0;
  const auto session_start = std::chrono::steady_clock::now();
  double session_seconds = 0;

  while (step_ < max_steps) {
    // A stop request that came during an eval, a save or the previous step's log.
    if (stop_agreed()) return stop_now();
    // L4Q: the quantizer starts after adapter.l4q_warmup_steps steps of plain LoRA (a resumed
    // run past that point has it on already, with its trained scale and offset).
    if (run_.adapter.kind == adapters::AdapterKind::kL4q && !model::l4q_quantizing(model_) &&
        step_ >= cfg_.adapter.l4q_warmup_steps) {
      model::start_l4q_quantization(model_);
      spdlog::info("step {}: L4Q warm-up done; the quantizer starts from min-max of the weights",
                   step_);
    }
    const auto step_start = std::chrono::steady_clock::now();
    // All micro-batches of the step first: the loss is the mean over every trained token of
    // the step, so each micro-batch's sum is divided by the step's total.
    std::vector<data::TrainBatch> batches;
    int64_t trained = 0, tokens = 0;
    for (int64_t k = 0; k < cfg_.training.grad_accum; ++k) {
      batches.push_back(batcher_->next(cfg_.training.micro_batch_size));
      trained += batches.back().trained_tokens;
      tokens += batches.back().segment_ids.ne(0).sum().item<int64_t>();
    }
    const double loss_sum = forward_backward(batches, trained, forward);
    fault_point(step_ + 1 == max_steps ? "last_step" : "step");
    const double loss = loss_sum / static_cast<double>(trained);
    const double grad_norm = optim::clip_grad_norm(params, cfg_.optimizer.max_grad_norm);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      const auto last = newest_complete_checkpoint(run_dir_);
      throw std::runtime_error(fmt::format(
          "step {}: the {} is {}; training stopped without writing anything. {} Lower "
          "optimizer.lr or raise schedule.warmup_steps, check the data and the model files.",
          step_ + 1, std::isfinite(loss) ? "gradient norm" : "loss",
          std::isfinite(loss) ? grad_norm : loss,
          last ? fmt::format("The last good checkpoint is {} (resume with --resume).",
                             last->string())
               : std::string("There is no checkpoint yet.")));
    }
    const double lr = optim::lr_at(schedule_, step_);
    optimizer_->step(lr);
    optimizer_->zero_grad();
    ++step_;
    const double seconds = seconds_since(step_start);
    train_seconds_ += seconds;
    tokens_seen_ += tokens;
    interval_loss_sum += loss_sum;
    interval_trained += trained;
    interval_tokens += tokens;
    interval_seconds += seconds;
    session_seconds = seconds_since(session_start);

    const bool last_step = step_ == max_steps;
    if (step_ % cfg_.logging.every_steps == 0 || last_step || stop_agreed()) {
      const double interval_loss = interval_loss_sum / static_cast<double>(interval_trained);
      const double tokens_per_s = static_cast<double>(interval_tokens) / interval_seconds;
      const double memory = memory_in_use_mb(cuda, cuda ? device_.index() : 0);
      const double eta = session_seconds / static_cast<double>(step_ - first_step) *
                         static_cast<double>(max_steps - step_);
      spdlog::info(
          "step {}/{}  loss {:.4f}  lr {:.3e}  grad_norm {:.3f}  {:.0f} tokens/s  "
          "mem {:.0f} MB  eta {}",
          step_, max_steps, interval_loss, lr, grad_norm, tokens_per_s, memory,
          format_duration(eta));
      nlohmann::ordered_json record = {{"type", "train"},
                                       {"step", step_},
                                       {"epoch", batcher_->epoch_progress()},
                                       {"loss", interval_loss},
                                       {"lr", lr},
                                       {"grad_norm", grad_norm},
                                       {"tokens", interval_tokens},
                                       {"trained_tokens", interval_trained},
                                       {"seconds", interval_seconds},
                                       {"tokens_per_s", tokens_per_s},
                                       {"memory_mb", memory},
                                       {"elapsed_s", train_seconds_},
                                       {"eta_s", eta}};
      // Distributed: tokens and tokens/s count every rank's micro-batches (all ranks build
      // every batch), and each rank's peak memory so far is recorded, in rank order.
      if (dp_) {
        record["world_size"] = dp_->world_size();
        record["peak_memory_mb_per_rank"] =
            dp_->all_gather(peak_memory_mb(cuda, cuda ? device_.index() : 0));
      }
      write_metrics(record);
      interval_loss_sum = interval_seconds = 0;
      interval_trained = interval_tokens = 0;
    }
    // Stopping: save first, skip an eval that may take long (the last one runs on --resume).
    if (stop_agreed()) return stop_now();
    if (!eval_set_.empty() && !last_step && cfg_.eval.every_steps > 0 &&
        step_ % cfg_.eval.every_steps == 0) {
      const EvalResult r = run_eval();
      spdlog::info("eval at step {}: loss {:.4f} perplexity {:.3f} ({} tokens, {:.1f} s)", step_,
                   r.loss, r.perplexity, r.predicted_tokens, r.seconds);
      write_eval(r);
    }
    if (last_step || (cfg_.checkpoint.every_steps > 0 && step_ % cfg_.checkpoint.every_steps == 0))
      save_checkpoint();
  }
  if (stop_agreed()) return stop_now();
  // The final evaluation, after the last checkpoint (so an interruption during it loses no
  // training), unless a resumed run already has it.
  // (Distributed, only rank 0 has the metrics; the other ranks evaluate too, unwritten.)
  if (!eval_set_.empty() && (!metrics_ || !metrics_->has_record("eval", step_))) {
    fault_point("final_eval");
    const EvalResult r = run_eval();
    spdlog::info("eval at step {}: loss {:.4f} perplexity {:.3f} ({} tokens, {:.1f} s)", step_,
                 r.loss, r.perplexity, r.predicted_tokens, r.seconds);
    if (stop_agreed()) return stop_now();
    write_eval(r);
  }
  if (step_ > first_step) {
    const double peak = peak_memory_mb(cuda, cuda ? device_.index() : 0);
    const std::vector<double> peaks = dp_ ? dp_->all_gather(peak) : std::vector<double>{peak};
    spdlog::info("trained {} steps in {} ({} tokens); peak memory {:.0f} MB{}{}",
                 step_ - first_step, format_duration(session_seconds), tokens_seen_, peak,
                 dp_ ? fmt::format(" (per rank: {:.0f} MB)", fmt::join(peaks, ", ")) : "",
                 cfg_.training.activation_checkpointing ? " (activation checkpointing on)" : "");
  }
  save_final();
  if (stop_agreed())
    spdlog::info("the stop request (signal {}) came after the last step: the run is complete",
                 stop_signal_number());
  return kExitOk;
}

double Trainer::forward_backward(const std::vector<data::TrainBatch>& batches, int64_t trained,
                                 const model::ForwardOptions& forward) {
  const int64_t ranks = dp_ ? dp_->world_size() : 1, rank = dp_ ? dp_->rank() : 0;
  double loss_sum = 0;
  const auto n = static_cast<int64_t>(batches.size());
  const int64_t last = rank + (n - 1 - rank) / ranks * ranks;  // this rank's last micro-batch
  for (int64_t k = rank; k < n; k += ranks) {
    const auto& b = batches[static_cast<size_t>(k)];
    if (dp_ && k == last) grad_sync_->arm();  // its backward sums the step's gradients
    dropout_generator_->set_current_seed(micro_batch_seed(cfg_.training.seed, step_, k));
    const at::Tensor hidden =
        model_.hidden_states(b.input_ids, b.position_ids, b.segment_ids, forward);
    auto loss = model::causal_lm_loss(hidden, model_.weights.lm_head, b.labels.to(device_));
    // Each micro-batch's sum over the step's total trained tokens (all ranks' micro-batches):
    // summed over the ranks, the gradient of the step's mean loss.
    (loss.sum / static_cast<double>(trained)).backward();
    loss_sum += loss.sum.item<double>();
  }
  if (!dp_) return loss_sum;
  // The gradients were summed over the ranks during the last backward (grad_sync_); the loss
  // and the stop requests are summed now.
  grad_sync_->finish();
  at::Tensor scalars =
      at::tensor({loss_sum, stop_requested() ? 1.0 : 0.0}, at::TensorOptions().dtype(at::kDouble));
  dp_->all_reduce_sum({scalars});
  stop_agreed_ = scalars[1].item<double>() > 0;
  return scalars[0].item<double>();
}

void Trainer::cleanup() {
  signals_.reset();
  metrics_.reset();
  optimizer_.reset();
  batcher_.reset();
}

}  // namespace qlt::train
