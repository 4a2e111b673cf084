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
#include "core/json_reader.h"
#include "io/atomic_dir.h"
#include "io/atomic_file.h"
#include "io/folder_manifest.h"

namespace qlt::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kPrefix = "checkpoint-";

}  // namespace

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
  io::write_folder_manifest(dir.path(), kDoneFile);
  io::write_file_atomically(dir.path() / kDoneFile, "");
  dir.commit();
}

std::string checkpoint_problem(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return ec == std::errc::filename_too_long ? path_too_long("the path", dir.native())
                                              : std::string("not a folder");
  if (!fs::exists(dir / kDoneFile, ec)) return "no DONE marker (its write was interrupted)";
  return io::folder_manifest_problem(dir, kDoneFile);
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

namespace {

// Where ".tmp-" starts in the name of a temporary entry this program writes into a run folder,
// or npos: io::AtomicDir's "<folder>.tmp-<pid>[-k]" (checkpoint-NNNNNN, final) and
// io::write_file_atomically's ".<file>.tmp-<pid>-<random>" (config.json, metrics.jsonl).
size_t temp_marker(const fs::directory_entry& entry) {
  const std::string name = entry.path().filename().string();
  const size_t tmp = name.find(".tmp-");
  if (tmp == std::string::npos) return tmp;
  const std::string target = name.substr(0, tmp);
  const bool temp_dir = entry.is_directory() && (checkpoint_step(target) || target == "final");
  const bool temp_file =
      entry.is_regular_file() && (target == ".config.json" || target == ".metrics.jsonl");
  return temp_dir || temp_file ? tmp : std::string::npos;
}

}  // namespace

int remove_stale_temp_checkpoints(const fs::path& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return 0;
  int removed = 0;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const size_t tmp = temp_marker(entry);
    if (tmp == std::string::npos) continue;
    // "<pid>" or "<pid>-<k>...": ours are still being written; any other is stale, since the
    // caller holds the run lock (no other process writes here).
    const std::string name = entry.path().filename().string();
    const std::string pid_text = name.substr(tmp + 5, name.find('-', tmp + 5) - (tmp + 5));
    if (pid_text == std::to_string(::getpid())) continue;
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

RunDirContents run_dir_contents(const fs::path& run_dir) {
  RunDirContents c;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return c;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "final") {
      c.has_final = true;
    } else if (name == "config.json" || name == "metrics.jsonl" ||
               temp_marker(entry) != std::string::npos ||
               (checkpoint_step(entry.path()) && entry.is_directory())) {
      c.has_leftovers = true;
    } else {
      c.foreign.push_back(name);
    }
  }
  std::sort(c.foreign.begin(), c.foreign.end());
  c.newest_complete = newest_complete_checkpoint(run_dir);
  return c;
}

int remove_incomplete_checkpoints(const fs::path& run_dir) {
  int removed = 0;
  for (const auto& dir : list_checkpoints(run_dir)) {
    const std::string problem = checkpoint_problem(dir);
    if (problem.empty()) continue;
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (ec) {
      spdlog::warn("could not delete incomplete checkpoint {}: {}", dir.string(), ec.message());
      continue;
    }
    spdlog::info("deleted incomplete checkpoint {} ({})", dir.string(), problem);
    ++removed;
  }
  return removed;
}

}  // namespace qlt::train
