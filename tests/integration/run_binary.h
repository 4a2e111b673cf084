// Runs the built qlora-train binary and captures its exit code, stdout and stderr.
#pragma once

#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_common.h"  // read_text
#include "test_paths.h"

namespace qlt::test {

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

// Whether SIGKILL ended the run (the shell reports 128 + 9; -1: the binary itself was killed).
inline bool killed(const RunResult& r) { return r.exit_code == 128 + 9 || r.exit_code == -1; }

// `args` is appended to the binary's path as is (a shell word list); runs in the repo root.
// `env` ("NAME=value ...") is set for the binary only.
inline RunResult run_qlora_train(const std::string& args, const std::string& env = "") {
  namespace fs = std::filesystem;
  static int counter = 0;
  const fs::path dir = fs::temp_directory_path() /
                       ("qlt-run-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::create_directories(dir);
  const std::string cmd = "cd '" QLT_SOURCE_DIR "' && " + (env.empty() ? "" : "env " + env + " ") +
                          "'" QLT_BINARY "' " + args + " >'" + (dir / "out").string() + "' 2>'" +
                          (dir / "err").string() + "'";
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(dir / "out");
  r.err = read_text(dir / "err");
  fs::remove_all(dir);
  return r;
}

// A bad-input run: exit code 2 and an "error: " message on stderr naming every one of `parts`.
inline void check_bad_input(const RunResult& r, const std::vector<std::string>& parts) {
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Matchers::Contains("error: "));
  for (const auto& part : parts) CHECK_THAT(r.err, Catch::Matchers::Contains(part));
}

}  // namespace qlt::test
