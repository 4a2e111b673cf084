// What model.path may be (a Hugging Face model folder or a GGUF file), checked before anything
// is read from it, with messages that say what is wrong and how to fix it.
#pragma once

#include <filesystem>

namespace qlt::tokenizer {

// The hint every model.path message ends with.
inline constexpr const char* kModelPathHint =
    "set model.path to a Hugging Face LLaMA model folder (config.json, *.safetensors, "
    "tokenizer.model) or a GGUF file";

// The status of `path` (following symbolic links); a path the system refuses to look at (too
// long, a file on the way, no permission) is a UserError naming `what` and the path, ending
// with `hint`; a failure of the machine (I/O error) is a RuntimeError.
std::filesystem::file_status checked_status(const std::filesystem::path& path, const char* what,
                                            const char* hint);

}  // namespace qlt::tokenizer
