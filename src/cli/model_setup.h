// What the commands that run a trained model (eval, generate) load: model.path's tokenizer and
// model in the config's dtype, device and weight format, and the LoRA adapter of --checkpoint.
#pragma once

#include <filesystem>
#include <string>

#include "core/config.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"
#include "train/run_setup.h"

namespace qlt::cli {

// The adapter folder of --checkpoint: a PEFT folder (final/, or any PEFT LoRA adapter) or a
// training checkpoint (its adapter/ subfolder, after checking it is complete). UserError naming
// the path when it is neither, missing, a file or unreadable.
std::filesystem::path checkpoint_adapter_folder(const std::filesystem::path& dir);

struct InferenceModel {
  tokenizer::Tokenizer tokenizer;
  model::LlamaModel model;
};

// --checkpoint's folder is checked first, then train::load_model (shared with `train`): the
// tokenizer, the model in the options' device, dtype and format, and with a non-empty
// `checkpoint` its adapter (checkpoint_adapter_folder; its own adapter type and options).
InferenceModel load_inference_model(const TrainConfig& cfg, const train::RunOptions& options,
                                    const std::string& checkpoint);

}  // namespace qlt::cli
