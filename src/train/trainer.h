// The training recipe (DESIGN.md §3): setup -> train -> save_checkpoint -> cleanup, in the
// shape of torchtune's recipes. Everything that can fail on bad input fails in setup(),
// before the first step.
//
// Run directory (checkpoint.output_dir), held by one process at a time (train/run_lock.h):
//   config.json            the effective config of the latest start (or resume), written
//                          once setup succeeded
//   metrics.jsonl          one JSON object per logged step / eval (train/metrics.h)
//   checkpoint-NNNNNN/     adapter/ (PEFT layout), optimizer.safetensors (optimizer state + RNG
//                          state), trainer_state.json (step, data cursor, config + hash),
//                          manifest.json (size + SHA-1 of every file), DONE (written last)
//   final/                 the final adapter in PEFT's layout, with manifest.json + DONE
//
// Whatever the moment a run is interrupted (SIGINT, SIGTERM, SIGKILL, a crash), the same
// command with --resume continues it: from the newest complete checkpoint; from step 0 when
// the run never completed one; or, when the last checkpoint is at training.max_steps, by
// writing final/ (and the final evaluation, if it is missing).
#pragma once

#include <ATen/ATen.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/config.h"
#include "data/batcher.h"
#include "dist/data_parallel.h"
#include "dist/dist_env.h"
#include "dist/overlapped_all_reduce.h"
#include "model/llama.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"
#include "tokenizer/tokenizer.h"
#include "train/evaluate.h"
#include "train/metrics.h"
#include "train/run_lock.h"
#include "train/run_setup.h"
#include "train/stop_signal.h"
#include "train/trainer_state.h"

namespace qlt::train {

struct TrainerOptions {
  TrainConfig config;
  std::string config_origin;          // the config file, for messages
  bool resume_latest = false;         // --resume: newest complete checkpoint
  std::filesystem::path resume_from;  // --resume PATH (empty: not given)
  // Data parallelism: set when the launcher set RANK, WORLD_SIZE, ... (dist::read_dist_env).
  std::optional<dist::DistEnv> dist_env;
};

// The adapter inside a checkpoint folder (PEFT layout).
inline constexpr const char* kCheckpointAdapterDir = "adapter";

// Exit code of train() when SIGINT / SIGTERM stopped the run after a clean checkpoint.
inline constexpr int kExitStopped = 130;

// Thrown by setup() when SIGINT / SIGTERM arrived during it: nothing was trained; the message
// says how to continue. The CLI exits with kExitStopped.
class StoppedDuringSetup : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Trainer {
 public:
  explicit Trainer(TrainerOptions options);

  // Validates the config, installs the SIGINT/SIGTERM handlers, locks the run folder, picks
  // the checkpoint to resume from (refusing an incomplete, corrupted or incompatible one),
  // loads tokenizer, model, adapters, data, optimizer and, when resuming, the run state; then
  // writes config.json. A stop signal during setup ends it with StoppedDuringSetup.
  void setup();
  // Runs optimizer steps up to training.max_steps: logs, evaluates and checkpoints on their
  // intervals, writes a checkpoint and final/ at the end. Returns 0, or kExitStopped after
  // SIGINT/SIGTERM (the current step finished and was checkpointed). A non-finite loss or
  // gradient norm throws std::runtime_error without writing anything; a failed append to
  // metrics.jsonl writes a checkpoint if it can and throws std::runtime_error.
  int train();
  // checkpoint-<step>/ of the current state (atomic; prunes to checkpoint.keep_last).
  std::filesystem::path save_checkpoint();
  // Writes final/ (PEFT adapter) and prints where it is and how to use it.
  void save_final();
  void cleanup();

 private:
  void resolve_resume_checkpoint();
  void join_process_group();
  bool is_rank0() const { return !dp_ || dp_->rank() == 0; }
  // One step's micro-batches: forward + backward of this rank's share (all of them when not
  // distributed), then, distributed, the gradients, loss sum and stop flag summed over ranks.
  // Returns the step's loss sum over all its micro-batches.
  double forward_backward(const std::vector<data::TrainBatch>& batches, int64_t trained,
                          const model::ForwardOptions& forward);
  // A stop request seen by any rank (distributed: agreed at the last all-reduce, so every
  // rank stops after the same step); else this process's own.
  bool stop_agreed() const { return dp_ ? stop_agreed_ : stop_requested(); }
  void check_stop_during_setup(const char* phase);
  int stop_now();
  void write_metrics(const nlohmann::ordered_json& record);
  void write_eval(const EvalResult& r);
  void load_data();
  void restore_run_state(const std::filesystem::path& checkpoint);
  EvalResult run_eval();
  model::ForwardOptions forward_options();

  TrainerOptions options_;
  const TrainConfig& cfg_;
  std::filesystem::path run_dir_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  std::unique_ptr<StopSignalScope> signals_;  // from the start of setup to cleanup
  RunDirLock lock_;
  std::optional<std::filesystem::path> resume_checkpoint_;
  TrainerState resume_state_;     // its trainer_state.json
  bool run_complete_ = false;     // resumed at max_steps with an intact final/: nothing to do
  int64_t last_saved_step_ = -1;  // step of the newest checkpoint written or resumed from

  std::optional<tokenizer::Tokenizer> tokenizer_;
  model::LlamaModel model_;
  RunOptions run_;                                          // the config as typed options
  std::vector<std::pair<std::string, at::Tensor>> params_;  // model::adapter_parameters
  std::vector<std::vector<at::Tensor>> layer_params_;       // per decoder layer (checkpointing)
  std::unique_ptr<data::Batcher> batcher_;
  EvalSet eval_set_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  optim::ScheduleOptions schedule_;
  std::optional<at::Generator> dropout_generator_;
  std::unique_ptr<MetricsLog> metrics_;                   // rank 0 only
  std::unique_ptr<dist::DataParallel> dp_;                // distributed runs only
  std::unique_ptr<dist::OverlappedAllReduce> grad_sync_;  // with dp_: gradients during backward
  bool stop_agreed_ = false;

  int64_t step_ = 0;          // optimizer steps done
  int64_t tokens_seen_ = 0;   // non-padding input tokens over the whole run
  double train_seconds_ = 0;  // wall time of optimizer steps over the whole run
};

}  // namespace qlt::train
