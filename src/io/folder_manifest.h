// manifest.json of a folder the program writes (checkpoints, final/): the size and SHA-1 of
// every file under it, so that a reader can tell an intact folder from a damaged one before
// trusting it. The manifest lists itself and the DONE marker of checkpoints out.
#pragma once

#include <filesystem>
#include <string>

namespace qlt::io {

inline constexpr const char* kManifestFile = "manifest.json";
// Written last into a finished folder (after the manifest): its absence means the write was
// interrupted. Not listed in the manifest.
inline constexpr const char* kDoneFile = "DONE";

// Writes `dir`/manifest.json (atomically) for every regular file under `dir`, recursively,
// except manifest.json and `skip` (a top-level file name, e.g. "DONE").
void write_folder_manifest(const std::filesystem::path& dir, const std::string& skip = "");

// Why `dir` does not match its manifest ("file adapter_model.safetensors: SHA-1 differs from
// the manifest (the file is corrupted)", "no manifest.json", ...), or "" when every file is
// present with its recorded size and SHA-1 and no file is unlisted. Never throws for bad
// content. Reads every file.
std::string folder_manifest_problem(const std::filesystem::path& dir, const std::string& skip = "");

// SHA-1 (hex) of a file's bytes, streamed in 1 MiB chunks (memory does not grow with the file;
// optimizer state can be gigabytes). UserError naming the file when it cannot be read.
std::string file_sha1(const std::filesystem::path& file);

}  // namespace qlt::io
