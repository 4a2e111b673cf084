// Helpers shared by the [config] tests: JSON literals, temporary files, running the binary.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/config.h"
#include "test_common.h"  // read_text

namespace qlt::test {

// Leaves of an effective config: every key once (a list value is one key, not one per item).
inline size_t count_config_leaves(const nlohmann::json& j) {
  if (!j.is_object()) return 1;
  size_t n = 0;
  for (const auto& [name, value] : j.items()) n += count_config_leaves(value);
  return n;
}

inline bool has_config_key(const nlohmann::json& j, const std::string& dotted) {
  std::string pointer = "/" + dotted;
  for (auto& c : pointer)
    if (c == '.') c = '/';
  return j.contains(nlohmann::json::json_pointer(pointer));
}

// The smallest valid config: only the required key.
inline nlohmann::json minimal_config() { return {{"model", {{"path", "models/m"}}}}; }

// A path in the temp directory private to this process: test cases may run in parallel (ctest
// -j, or several build trees at once), so `name` is unique per test case and the pid per run.
inline std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("qlt_test_config_" + std::to_string(::getpid()) + "_" + name);
}

// A file at temp_path(name), removed when the object goes out of scope.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& content) : path_(temp_path(name)) {
    std::ofstream(path_, std::ios::binary) << content;
  }
  ~TempFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs a shell command; returns its exit status (-1 if it did not exit normally).
inline int run_command(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace qlt::test
