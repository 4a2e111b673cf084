// `qlora-train train`: fine-tunes LoRA adapters on the (NF4 or dense) base model from the
// config; --resume continues the newest complete checkpoint of checkpoint.output_dir, or the
// one named.
#include <spdlog/spdlog.h>

#include <memory>

#include "cli/command.h"
#include "core/config.h"
#include "train/trainer.h"

namespace qlt::cli {
namespace {

struct TrainArgs {
  ConfigArgs config;
  CLI::Option* resume_option = nullptr;
  std::string resume;  // the checkpoint folder; empty with --resume alone (newest complete)
};

int run_train(const TrainArgs& args) {
  train::TrainerOptions options;
  options.config = load_config(args.config.config_path, args.config.overrides);
  options.config_origin = args.config.config_path;
  options.dist_env = dist::read_dist_env();  // RANK, WORLD_SIZE, ... from torchrun and friends
  if (args.resume_option->count() > 0) {
    if (args.resume.empty()) {
      options.resume_latest = true;
    } else {
      options.resume_from = args.resume;
    }
  }
  train::Trainer trainer(std::move(options));
  try {
    trainer.setup();
  } catch (const train::StoppedDuringSetup& e) {
    spdlog::warn("{}", e.what());
    return train::kExitStopped;
  }
  const int code = trainer.train();
  trainer.cleanup();
  return code;
}

}  // namespace

Command add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  auto* sub =
      app.add_subcommand("train", "Fine-tune LoRA adapters (QLoRA with quantization.type nf4)");
  add_config_args(*sub, args->config);
  args->resume_option =
      sub->add_option("--resume", args->resume,
                      "Continue a run: alone, from the newest complete checkpoint in "
                      "checkpoint.output_dir; with a path, from that checkpoint folder")
          ->expected(0, 1);
  return {sub, [args] { return run_train(*args); }};
}

}  // namespace qlt::cli
