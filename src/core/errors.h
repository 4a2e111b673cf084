// Errors a user can fix (bad config, data, checkpoint, command line) versus internal failures.
//
// A UserError message says what is wrong, where (JSON path, file:line, tensor name) and how
// to fix it; main() prints it on one line and exits with kExitBadInput. Internal invariants
// use TORCH_CHECK / assertions and exit with kExitRuntime.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace qlt {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;
inline constexpr int kExitBadInput = 2;
inline constexpr int kExitInterrupted = 130;

class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws a UserError with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void user_error(fmt::format_string<Args...> format, Args&&... args) {
  throw UserError(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace qlt
