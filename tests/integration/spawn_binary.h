// Starts the built qlora-train binary in the background (fork + exec), so a test can watch
// its run directory while it works, send it a signal, and then collect its exit status,
// stdout and stderr. The blocking counterpart is run_binary.h.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

#include "integration/run_binary.h"
#include "test_paths.h"

namespace qlt::test {

class SpawnedRun {
 public:
  // `args` is appended to the binary's path as is (a shell word list, as run_qlora_train
  // takes); runs in the repo root. The shell execs the binary, so pid() is the binary's.
  explicit SpawnedRun(const std::string& args) {
    namespace fs = std::filesystem;
    static int counter = 0;
    dir_ = fs::temp_directory_path() /
           ("qlt-spawn-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(dir_);
    const std::string cmd = "cd '" QLT_SOURCE_DIR "' && exec '" QLT_BINARY "' " + args;
    const std::string out = (dir_ / "out").string(), err = (dir_ / "err").string();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      // Child: only async-signal-safe calls until exec.
      const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (out_fd < 0 || err_fd < 0) ::_exit(127);
      ::dup2(out_fd, STDOUT_FILENO);
      ::dup2(err_fd, STDERR_FILENO);
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~SpawnedRun() {
    if (!reaped_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  SpawnedRun(const SpawnedRun&) = delete;
  SpawnedRun& operator=(const SpawnedRun&) = delete;

  pid_t pid() const { return pid_; }

  // False once the process has exited (it is then reaped; wait() returns its status).
  bool running() {
    if (reaped_) return false;
    const pid_t r = ::waitpid(pid_, &status_, WNOHANG);
    if (r == pid_) reaped_ = true;
    return !reaped_;
  }

  // Polls `condition` every 10 ms. True as soon as it holds; false when the process exits
  // first (the condition is checked once more after the exit) or `timeout` passes.
  bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (condition()) return true;
      if (!running()) return condition();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  bool wait_for_file(const std::filesystem::path& file, std::chrono::milliseconds timeout) {
    return wait_until([&] { return std::filesystem::exists(file); }, timeout);
  }

  // Sends `signal` unless the process has already exited; true when it was sent.
  bool send(int signal) {
    if (!running()) return false;
    return ::kill(pid_, signal) == 0;
  }

  // Waits for the exit (SIGKILL after `timeout`) and returns the exit code (-1 when a signal
  // ended it: see term_signal()) with stdout and stderr.
  RunResult wait(std::chrono::milliseconds timeout = std::chrono::minutes(5)) {
    if (!wait_until([] { return false; }, timeout) && running()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
      reaped_ = true;
    }
    RunResult r;
    r.exit_code = WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
    r.out = read_text(dir_ / "out");
    r.err = read_text(dir_ / "err");
    return r;
  }

  // The signal that ended the process (0 when it exited by itself); valid after wait().
  int term_signal() const { return reaped_ && WIFSIGNALED(status_) ? WTERMSIG(status_) : 0; }

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1;
  int status_ = 0;
  bool reaped_ = false;
};

}  // namespace qlt::test
