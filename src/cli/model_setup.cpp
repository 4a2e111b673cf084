#include "cli/model_setup.h"

#include <spdlog/spdlog.h>

#include "core/device.h"
#include "core/errors.h"
#include "export/peft_adapter.h"
#include "quant/weight_format.h"
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

InferenceModel load_inference_model(const TrainConfig& cfg, at::Device device,
                                    const std::string& checkpoint) {
  auto tokenizer = tokenizer::Tokenizer::load(cfg.model.path);
  // A wrong --checkpoint is reported before the model is read.
  const auto folder =
      checkpoint.empty() ? std::filesystem::path() : checkpoint_adapter_folder(checkpoint);
  auto model =
      model::load_llama(cfg.model.path, parse_compute_dtype(cfg.model.compute_dtype), device,
                        quant::weight_format(cfg.quantization), cfg.model.allow_non_finite);
  if (tokenizer.vocab_size() > model.config.vocab_size) {
    user_error(
        "the tokenizer of {} has {} tokens but the model's vocabulary (embedding rows) is {}: "
        "the tokenizer does not belong to this model",
        cfg.model.path, tokenizer.vocab_size(), model.config.vocab_size);
  }
  if (!folder.empty()) {
    exporter::load_peft_adapter(model, folder);
    spdlog::info("adapter {} (LoRA r={})", folder.string(), model.lora_options->rank);
  }
  return {std::move(tokenizer), std::move(model)};
}

}  // namespace qlt::cli
