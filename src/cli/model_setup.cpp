#include "cli/model_setup.h"

#include <spdlog/spdlog.h>

#include "core/errors.h"
#include "export/peft_adapter.h"
#include "train/run_checkpoint.h"
#include "train/trainer.h"

namespace qlt::cli {

std::filesystem::path checkpoint_adapter_folder(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  constexpr const char* kWant =
      "give a PEFT adapter folder (e.g. <run>/final) or a training checkpoint folder "
      "(<run>/checkpoint-000100)";
  std::error_code ec;
  const fs::file_status status = fs::status(dir, ec);
  if (ec == std::errc::filename_too_long)
    user_error("--checkpoint: {}; {}", path_too_long("the path", dir.native()), kWant);
  if (ec && ec != std::errc::no_such_file_or_directory)
    user_error("--checkpoint {}: cannot be read ({}); {}", dir.string(), ec.message(), kWant);
  if (!fs::exists(status)) user_error("--checkpoint {}: does not exist; {}", dir.string(), kWant);
  if (!fs::is_directory(status))
    user_error("--checkpoint {}: is a file, not a folder; {}", dir.string(), kWant);
  if (fs::exists(dir / exporter::kPeftConfigFile)) return dir;
  if (fs::exists(dir / train::kCheckpointAdapterDir / exporter::kPeftConfigFile)) {
    const std::string problem = train::checkpoint_problem(dir);
    if (!problem.empty()) user_error("--checkpoint {}: {}", dir.string(), problem);
    return dir / train::kCheckpointAdapterDir;
  }
  user_error(
      "--checkpoint {}: neither a PEFT adapter folder (adapter_config.json) nor a training "
      "checkpoint (adapter/adapter_config.json)",
      dir.string());
}

InferenceModel load_inference_model(const TrainConfig& cfg, const train::RunOptions& options,
                                    const std::string& checkpoint) {
  // A wrong --checkpoint is reported before the model is read.
  train::AdapterSource source;
  if (!checkpoint.empty()) source.folder = checkpoint_adapter_folder(checkpoint);
  auto loaded = train::load_model(cfg, options, source);
  if (!source.folder.empty()) {
    spdlog::info("adapter {} ({})", source.folder.string(),
                 train::describe_adapter(*loaded.model.adapter_options));
  }
  return {std::move(loaded.tokenizer), std::move(loaded.model)};
}

}  // namespace qlt::cli
