#include "train/run_checkpoint.h"

#include <c10/util/hash.h>
#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/errors.h"
#include "io/atomic_dir.h"
#include "io/atomic_file.h"

namespace qlt::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kPrefix = "checkpoint-";

// Files under `dir` (recursively), as sorted relative paths; the manifest and DONE excluded.
std::vector<std::string> content_files(const fs::path& dir) {
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string rel = fs::relative(entry.path(), dir).generic_string();
    if (rel == kManifestFile || rel == kDoneFile) continue;
    files.push_back(rel);
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::string file_sha1(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) user_error("{}: cannot read", file.string());
  std::ostringstream bytes;
  bytes << in.rdbuf();
  // c10::sha1 (LibTorch) hashes a whole string; checkpoint files are adapter-sized.
  return c10::sha1(bytes.str()).str();
}

fs::path checkpoint_path(const fs::path& run_dir, int64_t step) {
  return run_dir / fmt::format("{}{:06d}", kPrefix, step);
}

std::optional<int64_t> checkpoint_step(const fs::path& dir) {
  const std::string name = dir.filename().string();
  if (name.rfind(kPrefix, 0) != 0) return std::nullopt;
  const std::string digits = name.substr(std::string(kPrefix).size());
  if (digits.size() < 6 || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c); }))
    return std::nullopt;
  return std::stoll(digits);
}

void write_checkpoint_folder(const fs::path& final_dir,
                             const std::function<void(const fs::path&)>& write_files) {
  io::AtomicDir dir(final_dir, /*overwrite=*/true);
  write_files(dir.path());
  json manifest = {{"format", "qlora-train checkpoint 1"}, {"files", json::object()}};
  for (const auto& rel : content_files(dir.path())) {
    const fs::path file = dir.path() / rel;
    manifest["files"][rel] = {{"bytes", fs::file_size(file)}, {"sha1", file_sha1(file)}};
  }
  io::write_file_atomically(dir.path() / kManifestFile, manifest.dump(2) + "\n");
  io::write_file_atomically(dir.path() / kDoneFile, "");
  dir.commit();
}

std::string checkpoint_problem(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return "not a folder";
  if (!fs::exists(dir / kDoneFile)) return "no DONE marker (its write was interrupted)";
  json manifest;
  try {
    std::ifstream in(dir / kManifestFile);
    if (!in) return "no manifest.json";
    manifest = json::parse(in);
  } catch (const json::exception& e) {
    return fmt::format("manifest.json is not valid JSON ({})", e.what());
  }
  if (!manifest.contains("files") || !manifest["files"].is_object())
    return "manifest.json has no \"files\" object";
  const auto present = content_files(dir);
  for (const auto& [rel, entry] : manifest["files"].items()) {
    const fs::path file = dir / rel;
    if (!fs::exists(file)) return fmt::format("file {} listed in the manifest is missing", rel);
    try {
      if (fs::file_size(file) != entry.at("bytes").get<uint64_t>())
        return fmt::format("file {} has {} bytes, the manifest says {}", rel, fs::file_size(file),
                           entry.at("bytes").dump());
      if (file_sha1(file) != entry.at("sha1").get<std::string>())
        return fmt::format("file {}: SHA-1 differs from the manifest (the file is corrupted)", rel);
    } catch (const json::exception& e) {
      return fmt::format("manifest.json entry {} is malformed ({})", rel, e.what());
    }
  }
  for (const auto& rel : present) {
    if (!manifest["files"].contains(rel)) return fmt::format("file {} is not in the manifest", rel);
  }
  return "";
}

std::vector<fs::path> list_checkpoints(const fs::path& run_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(run_dir)) {
    if (!entry.is_directory()) continue;
    if (auto step = checkpoint_step(entry.path())) found.emplace_back(*step, entry.path());
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<fs::path> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

std::optional<fs::path> newest_complete_checkpoint(const fs::path& run_dir) {
  for (const auto& dir : list_checkpoints(run_dir)) {
    const std::string problem = checkpoint_problem(dir);
    if (problem.empty()) return dir;
    spdlog::warn("skipping checkpoint {}: {}", dir.string(), problem);
  }
  return std::nullopt;
}

void prune_checkpoints(const fs::path& run_dir, int64_t keep_last) {
  if (keep_last <= 0) return;
  int64_t kept = 0;
  for (const auto& dir : list_checkpoints(run_dir)) {
    if (kept < keep_last) {
      // Only a complete checkpoint counts as kept: DONE is enough here (checksums were
      // written by this process a moment ago; resume verifies them).
      if (fs::exists(dir / kDoneFile)) ++kept;
      continue;
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (ec) spdlog::warn("could not delete old checkpoint {}: {}", dir.string(), ec.message());
  }
}

int remove_stale_temp_checkpoints(const fs::path& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return 0;
  int removed = 0;
  for (const auto& entry : fs::directory_iterator(run_dir)) {
    const std::string name = entry.path().filename().string();
    const size_t tmp = name.find(".tmp-");
    if (!entry.is_directory() || tmp == std::string::npos || !checkpoint_step(name.substr(0, tmp)))
      continue;
    // "<pid>" or "<pid>-<k>" (io::AtomicDir's naming).
    const std::string pid_text = name.substr(tmp + 5, name.find('-', tmp + 5) - (tmp + 5));
    if (pid_text.empty() || !std::all_of(pid_text.begin(), pid_text.end(),
                                         [](unsigned char c) { return std::isdigit(c); }))
      continue;
    const auto pid = static_cast<pid_t>(std::stoll(pid_text));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive, or unknown
    fs::remove_all(entry.path(), ec);
    if (ec) {
      spdlog::warn("could not remove {}: {}", entry.path().string(), ec.message());
      continue;
    }
    spdlog::info("removed {} (left by an interrupted checkpoint write)", entry.path().string());
    ++removed;
  }
  return removed;
}

}  // namespace qlt::train
