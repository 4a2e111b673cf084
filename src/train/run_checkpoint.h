// Run-state checkpoint folders (DESIGN.md §5): `<run_dir>/checkpoint-NNNNNN/`, written under a
// temporary name and renamed into place (io::AtomicDir), holding a manifest with the size and
// SHA-1 of every file and a DONE marker written last. A folder without DONE, or whose files do
// not match the manifest, is never resumed from.
//
// This file knows folders and checksums, not what the trainer puts inside (see trainer.cpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace qlt::train {

inline constexpr const char* kDoneFile = "DONE";
inline constexpr const char* kManifestFile = "manifest.json";

// "<run_dir>/checkpoint-000123" (6 digits, more when the step needs them).
std::filesystem::path checkpoint_path(const std::filesystem::path& run_dir, int64_t step);

// The step of a folder named checkpoint-NNNNNN; nullopt for any other name (including the
// temporary "checkpoint-NNNNNN.tmp-<pid>" of an interrupted write).
std::optional<int64_t> checkpoint_step(const std::filesystem::path& dir);

// Creates `final_dir` atomically: `write_files(tmp)` writes the content into a temporary
// folder, then manifest.json (every file's size and SHA-1, recursively) and DONE are added,
// and the folder is renamed into place. An existing `final_dir` is replaced atomically.
// Throws (and leaves no folder behind) when write_files throws.
void write_checkpoint_folder(const std::filesystem::path& final_dir,
                             const std::function<void(const std::filesystem::path&)>& write_files);

// Why `dir` cannot be resumed from ("no DONE marker (the write was interrupted)", "file
// adapter/adapter_model.safetensors: SHA-1 differs from the manifest", ...), or "" when it is
// complete and intact. Reads every file.
std::string checkpoint_problem(const std::filesystem::path& dir);

// Checkpoint folders of `run_dir`, newest (highest step) first, complete or not.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& run_dir);

// The newest complete checkpoint of `run_dir`; each newer one that is incomplete or corrupted
// is skipped with a warning naming the problem. nullopt when there is none.
std::optional<std::filesystem::path> newest_complete_checkpoint(
    const std::filesystem::path& run_dir);

// Keeps the `keep_last` newest complete checkpoints and deletes older checkpoint folders
// (incomplete ones older than the oldest kept too). keep_last 0 keeps everything.
void prune_checkpoints(const std::filesystem::path& run_dir, int64_t keep_last);

// Removes the temporary folders ("checkpoint-NNNNNN.tmp-<pid>[-k]") that a killed process
// left in `run_dir`, when that process is gone; returns how many were removed.
int remove_stale_temp_checkpoints(const std::filesystem::path& run_dir);

// SHA-1 (hex) of a file's bytes.
std::string file_sha1(const std::filesystem::path& file);

}  // namespace qlt::train
