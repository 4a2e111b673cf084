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

#include "io/folder_manifest.h"

namespace qlt::train {

using io::file_sha1;
using io::kDoneFile;
using io::kManifestFile;

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

// Removes the temporary folders ("checkpoint-NNNNNN.tmp-<pid>[-k]", "final.tmp-<pid>[-k]")
// and files (".config.json.tmp-<pid>-<r>", ...) that a killed process left in `run_dir`;
// returns how many were removed. Call it with the run lock held: then every temporary not
// of this process is stale.
int remove_stale_temp_checkpoints(const std::filesystem::path& run_dir);

// The entries of a run folder, sorted by what they are, so that `train` can tell a run it
// may continue or reuse from a folder that holds something else.
struct RunDirContents {
  std::optional<std::filesystem::path> newest_complete;  // newest complete checkpoint
  bool has_final = false;                                // final/ exists (intact or not)
  bool has_leftovers = false;        // config.json, metrics.jsonl, incomplete checkpoints, temps
  std::vector<std::string> foreign;  // names qlora-train never writes there
};
// Reads `run_dir` (which may not exist). Verifies checkpoints newest first until a complete
// one is found (warning about the newer broken ones, as newest_complete_checkpoint does).
RunDirContents run_dir_contents(const std::filesystem::path& run_dir);

// Deletes the checkpoint folders of `run_dir` that are not complete (no DONE, or checksums
// that fail): no run can continue from them. Returns how many were deleted.
int remove_incomplete_checkpoints(const std::filesystem::path& run_dir);

}  // namespace qlt::train
