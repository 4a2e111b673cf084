// The run-folder side of the Trainer (trainer.h): which checkpoint a start resumes (refusing an
// incomplete, corrupted or incompatible one), restoring the run state from it, and writing
// checkpoint-<step>/ and final/. Distributed, only rank 0 calls the writers' file work.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/errors.h"
#include "export/peft_adapter.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "train/fault_point.h"
#include "train/resume_config.h"
#include "train/run_checkpoint.h"
#include "train/trainer.h"

namespace qlt::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kDropoutRngKey = "rng.dropout";

}  // namespace

void Trainer::resolve_resume_checkpoint() {
  const RunDirContents contents = run_dir_contents(run_dir_);
  const auto foreign_list = [&] {
    std::vector<std::string> shown(
        contents.foreign.begin(),
        contents.foreign.begin() +
            static_cast<std::ptrdiff_t>(std::min<size_t>(contents.foreign.size(), 5)));
    return fmt::format("{}{}", fmt::join(shown, ", "), contents.foreign.size() > 5 ? ", ..." : "");
  };
  if (!options_.resume_from.empty()) {
    const std::string problem = checkpoint_problem(options_.resume_from);
    if (!problem.empty())
      user_error(
          "cannot resume from {}: {}; name a complete checkpoint, or use --resume alone "
          "for the newest complete one",
          options_.resume_from.string(), problem);
    resume_checkpoint_ = options_.resume_from;
  } else if (options_.resume_latest) {
    resume_checkpoint_ = contents.newest_complete;
    if (!resume_checkpoint_) {
      if (!contents.foreign.empty())
        user_error(
            "--resume: {} holds no complete checkpoint, and files qlora-train did not write "
            "({}); set checkpoint.output_dir to the run to resume",
            run_dir_.string(), foreign_list());
      // An interrupted start (during setup, before or during the first checkpoint): nothing
      // was saved to continue from, so this is a start from step 0 in the same folder.
      spdlog::warn(
          "--resume: {} holds no complete checkpoint (the run was interrupted before its "
          "first one, or never started); starting from step 0",
          run_dir_.string());
      remove_incomplete_checkpoints(run_dir_);
      return;
    }
  } else {
    if (contents.newest_complete || contents.has_final || !contents.foreign.empty()) {
      user_error(
          "checkpoint.output_dir {} is not empty ({}): resume that run with --resume, or "
          "choose another checkpoint.output_dir (a new run never overwrites an old one)",
          run_dir_.string(),
          contents.newest_complete
              ? fmt::format("newest checkpoint {}", contents.newest_complete->filename().string())
          : contents.has_final ? std::string("it holds a finished run, final/")
                               : fmt::format("it holds {}", foreign_list()));
    }
    if (contents.has_leftovers) {
      spdlog::warn(
          "{} holds what an interrupted start left (no complete checkpoint); starting over in "
          "it",
          run_dir_.string());
      remove_incomplete_checkpoints(run_dir_);
    }
    return;
  }
  resume_state_ = read_trainer_state(*resume_checkpoint_ / kTrainerStateFile);
  const auto differences = resume_incompatibilities(resume_state_.config, config_to_json(cfg_));
  if (!differences.empty())
    user_error(
        "cannot resume from {}: the config differs in keys that must stay the same:\n  "
        "{}\n restore them, or start a new run in another checkpoint.output_dir",
        resume_checkpoint_->string(), fmt::join(differences, "\n  "));
  const int64_t step = resume_state_.step;
  last_saved_step_ = step;
  if (step > cfg_.training.max_steps)
    user_error(
        "{} is at step {}, beyond training.max_steps {}; raise training.max_steps to continue "
        "training",
        resume_checkpoint_->string(), step, cfg_.training.max_steps);
  if (step == cfg_.training.max_steps) {
    const fs::path final_dir = run_dir_ / "final";
    const std::string problem = checkpoint_problem(final_dir);
    if (problem.empty()) {
      run_complete_ = true;
      spdlog::info(
          "{} is at training.max_steps {} and {} is intact: the run is complete (raise "
          "training.max_steps to train further)",
          resume_checkpoint_->string(), step, final_dir.string());
    } else {
      spdlog::info("{} is at the last step {}; writing final/ ({})", resume_checkpoint_->string(),
                   step, fs::exists(final_dir) ? problem : std::string("it is missing"));
    }
  }
}

void Trainer::restore_run_state(const fs::path& checkpoint) {
  const TrainerState& state = resume_state_;  // read and checked by resolve_resume_checkpoint
  step_ = state.step;
  tokens_seen_ = state.tokens_seen;
  train_seconds_ = state.train_seconds;
  batcher_->restore(state.data_cursor);
  const fs::path optimizer_file = checkpoint / kOptimizerFile;
  auto file = io::SafetensorsFile::open(optimizer_file);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& info : file.tensors()) tensors[info.name] = file.tensor(info.name);
  if (!tensors.count(kDropoutRngKey))
    user_error("{}: missing tensor {}", optimizer_file.string(), kDropoutRngKey);
  try {
    dropout_generator_->set_state(tensors.at(kDropoutRngKey));
  } catch (const c10::Error& e) {
    user_error("{}: tensor {} is not a random generator state of this device ({})",
               optimizer_file.string(), kDropoutRngKey, e.what_without_backtrace());
  }
  tensors.erase(kDropoutRngKey);
  try {
    optimizer_->load_state(tensors, state.optimizer);
  } catch (const UserError& e) {
    user_error("{}: {}", checkpoint.string(), e.what());
  }
  spdlog::info("resumed from {} at step {} ({} tokens seen)", checkpoint.string(), step_,
               tokens_seen_);
}

fs::path Trainer::save_checkpoint() {
  const fs::path dir = checkpoint_path(run_dir_, step_);
  if (!is_rank0()) {  // rank 0 writes the (identical) state of every rank
    last_saved_step_ = step_;
    return dir;
  }
  TrainerState state;
  state.step = step_;
  state.tokens_seen = tokens_seen_;
  state.train_seconds = train_seconds_;
  state.data_cursor = batcher_->cursor();
  state.optimizer = optimizer_->state_meta();
  state.config = config_to_json(cfg_);
  state.config_hash = resume_config_hash(state.config);
  // The schedule is a function of the step; recorded so a reader sees where it stands
  // without recomputing it.
  const json extra = {{"schedule",
                       {{"type", cfg_.schedule.type},
                        {"warmup_steps", schedule_.warmup_steps},
                        {"total_steps", schedule_.total_steps},
                        {"base_lr", schedule_.base_lr},
                        {"next_lr", optim::lr_at(schedule_, step_)}}},
                      {"dropout_rng_device", device_.str()}};
  write_checkpoint_folder(dir, [&](const fs::path& tmp) {
    fs::create_directory(tmp / kCheckpointAdapterDir);
    exporter::write_peft_adapter(tmp / kCheckpointAdapterDir, model_, cfg_.model.path);
    auto tensors = optimizer_->state_tensors();
    tensors.emplace_back(kDropoutRngKey, dropout_generator_->get_state());
    io::save_safetensors(tmp / kOptimizerFile, tensors, {{"format", "pt"}});
    io::write_file_atomically(tmp / kTrainerStateFile,
                              trainer_state_json(state, extra).dump(2) + "\n");
    fault_point("save");
  });
  last_saved_step_ = step_;
  prune_checkpoints(run_dir_, cfg_.checkpoint.keep_last);
  spdlog::info("checkpoint {}", dir.string());
  return dir;
}

void Trainer::save_final() {
  if (!is_rank0()) return;
  const fs::path final_dir = run_dir_ / "final";
  // Same folder discipline as a checkpoint: temporary name, manifest (verified by every
  // reader of the adapter), DONE, rename.
  write_checkpoint_folder(final_dir, [&](const fs::path& tmp) {
    exporter::write_peft_adapter(tmp, model_, cfg_.model.path);
    fault_point("final_save");
  });
  // transformers reads a GGUF file as from_pretrained(folder, gguf_file=name).
  const fs::path model_path(cfg_.model.path);
  const std::string base =
      io::is_gguf_file(model_path)
          ? fmt::format("\"{}\", gguf_file=\"{}\"", model_path.parent_path().string(),
                        model_path.filename().string())
          : fmt::format("\"{}\"", cfg_.model.path);
  using adapters::AdapterKind;
  const AdapterKind kind = run_.adapter.kind;
  const std::string layout =
      kind == AdapterKind::kLora
          ? "PEFT LoRA layout: adapter_model.safetensors + adapter_config.json"
          : fmt::format("{} + the PEFT LoRA it equals{}", exporter::kNativeAdapterFile,
                        kind == AdapterKind::kL4q ? " before its quantizer" : "");
  const std::string merge =
      kind == AdapterKind::kQaBlora || kind == AdapterKind::kL4q
          ? fmt::format(
                "  merged INT4:  qlora-train eval --config {} --checkpoint {} --merge int4\n",
                options_.config_origin, final_dir.string())
          : std::string();
  fmt::print(
      "\nadapter written to {dir} ({layout})\n"
      "  evaluate it:  qlora-train eval --config {cfg} --checkpoint {dir}\n{merge}"
      "  try it:       qlora-train generate --config {cfg} --checkpoint {dir} --prompt \"...\"\n"
      "  in Python:    "
      "PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base}), \"{dir}\")\n",
      fmt::arg("dir", final_dir.string()), fmt::arg("cfg", options_.config_origin),
      fmt::arg("base", base), fmt::arg("layout", layout), fmt::arg("merge", merge));
}

}  // namespace qlt::train
