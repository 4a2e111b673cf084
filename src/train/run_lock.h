// One process per run directory (DESIGN.md §5). `train` takes an exclusive lock on the run
// folder itself before it writes anything there, and holds it until it exits. The lock is
// flock(2) on the folder's descriptor: the kernel releases it when the process dies, however
// it dies, so a run killed with SIGKILL never blocks its own --resume; and no lock file is
// created, so a refused start leaves the folder exactly as it was. A second process learns
// who holds the lock from /proc/locks (Linux), which lists each flock with its pid.
#pragma once

#include <filesystem>

namespace qlt::train {

class RunDirLock {
 public:
  RunDirLock() = default;
  // Creates `run_dir` if needed and locks it. UserError (exit 2) when another process holds
  // the lock, naming its pid (and its command line, when /proc shows it); or when the folder
  // cannot be created or opened.
  static RunDirLock acquire(const std::filesystem::path& run_dir);

  RunDirLock(RunDirLock&& other) noexcept;
  RunDirLock& operator=(RunDirLock&& other) noexcept;
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;
  ~RunDirLock();  // releases the lock

  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace qlt::train
