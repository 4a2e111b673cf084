// Errors a user can fix (bad config, data, checkpoint, command line) versus failures of the
// environment (disk full, I/O error) and internal failures.
//
// A UserError message says what is wrong, where (JSON path, file:line, tensor name) and how
// to fix it; main() prints it on one line and exits with kExitBadInput. A RuntimeError is a
// failure the input is not to blame for (the disk filled up, a device returned an I/O error):
// its message names the file and says what to do, and main() exits with kExitRuntime.
// Internal invariants use TORCH_CHECK / assertions and exit with kExitRuntime too.
#pragma once

#include <fmt/format.h>

#include <cerrno>
#include <climits>
#include <stdexcept>
#include <string>
#include <string_view>

namespace qlt {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntime = 1;
inline constexpr int kExitBadInput = 2;
inline constexpr int kExitInterrupted = 130;

class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Not derived from UserError: a `catch (const UserError&)` that adds context to bad input
// must not turn a full disk into bad input.
class RuntimeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws a UserError with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void user_error(fmt::format_string<Args...> format, Args&&... args) {
  throw UserError(fmt::format(format, std::forward<Args>(args)...));
}

// Throws a RuntimeError with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void runtime_error(fmt::format_string<Args...> format, Args&&... args) {
  throw RuntimeError(fmt::format(format, std::forward<Args>(args)...));
}

// Whether a failed system call's errno is the user's to fix by choosing another path or input
// (a missing or misspelt folder, a file where a folder is expected, no permission, a
// read-only file system, a name that is too long) rather than a failure of the machine (the
// disk or quota is full, an I/O error, out of memory or file descriptors, a file size limit),
// which is the same whatever the input. Decides UserError (exit 2) versus RuntimeError
// (exit 1) for file-system errors; an errno not listed counts as the environment's.
inline bool is_user_path_errno(int err) {
  switch (err) {
    case ENOENT:     // a folder on the way does not exist
    case ENOTDIR:    // a file where a folder is expected
    case EISDIR:     // a folder where a file is expected
    case EEXIST:     // the target exists
    case ENOTEMPTY:  // a non-empty folder in the way
    case EACCES:     // no permission on a path the user chose
    case EPERM:
    case EROFS:         // a read-only file system: choose an output path elsewhere
    case ENAMETOOLONG:  // a path or one of its names is too long
    case ELOOP:         // a symbolic-link loop in the path
    case EXDEV:         // a rename across file systems
    case ENXIO:         // a device file (FIFO without reader, missing device) as a path
    case ENODEV:
      return true;
    default:  // ENOSPC, EDQUOT, EIO, EFBIG, ENOMEM, EMFILE, ENFILE, ...
      return false;
  }
}

// `text` (a path) for a message: one longer than `max` characters keeps its start and end and
// says how long it was, so that a path of 100,000 characters does not bury the message.
inline std::string abridged(std::string_view text, size_t max = 240) {
  if (text.size() <= max) return std::string(text);
  return fmt::format("{}...{} ({} characters)", text.substr(0, max / 2),
                     text.substr(text.size() - max / 4), text.size());
}

// "<what> is too long (N characters; the system allows PATH_MAX per path and NAME_MAX per
// name): <the path, its start only when long>", for ENAMETOOLONG.
inline std::string path_too_long(std::string_view what, std::string_view path) {
  return fmt::format(
      "{} is too long ({} characters; the system allows {} per path and {} per name): {}{}", what,
      path.size(), PATH_MAX, NAME_MAX, path.substr(0, 100), path.size() > 100 ? "..." : "");
}

}  // namespace qlt
