// What the commands that run a trained model (eval, generate) load: model.path's tokenizer and
// model in the config's dtype, device and weight format, and the LoRA adapter of --checkpoint.
#pragma once

#include <filesystem>
#include <string>

#include "core/config.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace qlt::cli {

// The adapter folder of --checkpoint: a PEFT folder (final/, or any PEFT LoRA adapter) or a
// training checkpoint (its adapter/ subfolder, after checking it is complete). UserError naming
// the path when it is neither, missing, a file or unreadable.
std::filesystem::path checkpoint_adapter_folder(const std::filesystem::path& dir);

struct InferenceModel {
  tokenizer::Tokenizer tokenizer;
  model::LlamaModel model;
};

// The tokenizer first (it says what is wrong with a model.path that is not a model), then
// --checkpoint's folder is checked, then the model is read onto `device`; UserError when the
// tokenizer has more tokens than the embedding has rows; with a non-empty `checkpoint` its adapter
// attached (checkpoint_adapter_folder).
InferenceModel load_inference_model(const TrainConfig& cfg, at::Device device,
                                    const std::string& checkpoint);

}  // namespace qlt::cli
