#include "train/run_lock.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "core/errors.h"

namespace qlt::train {
namespace fs = std::filesystem;

namespace {

// The pid holding a FLOCK on the file `st` describes, from /proc/locks lines such as
// "3: FLOCK  ADVISORY  WRITE 12345 08:01:1234567 0 EOF" (major:minor in hex, inode decimal).
std::optional<pid_t> flock_holder(const struct stat& st) {
  std::ifstream locks("/proc/locks");
  std::string line;
  const std::string device =
      fmt::format("{:02x}:{:02x}:{}", major(st.st_dev), minor(st.st_dev), st.st_ino);
  const std::string inode_suffix = fmt::format(":{}", st.st_ino);
  std::optional<pid_t> inode_only;
  while (std::getline(locks, line)) {
    std::istringstream fields(line);
    std::string id, kind, mode, access, pid, where;
    if (!(fields >> id >> kind) || kind != "FLOCK") continue;
    if (!(fields >> mode >> access >> pid >> where)) continue;
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos || pid.size() > 9)
      continue;
    if (where == device) return static_cast<pid_t>(std::stol(pid));
    // Overlay and other stacked file systems may report another device: same inode then.
    if (where.size() > inode_suffix.size() && where.ends_with(inode_suffix))
      inode_only = static_cast<pid_t>(std::stol(pid));
  }
  return inode_only;
}

// "1234 (qlora-train train --config x.json)" from /proc; the pid alone when unreadable.
std::string describe_process(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!cmdline.empty() && cmdline.back() == '\0') cmdline.pop_back();
  for (char& c : cmdline)
    if (c == '\0') c = ' ';
  if (cmdline.size() > 200) cmdline = cmdline.substr(0, 200) + "...";
  return cmdline.empty() ? fmt::format("{}", pid) : fmt::format("{}: {}", pid, cmdline);
}

}  // namespace

RunDirLock RunDirLock::acquire(const fs::path& run_dir) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec == std::errc::filename_too_long)
    user_error("checkpoint.output_dir: {}; choose a shorter path",
               path_too_long("the path", run_dir.native()));
  if (ec && !is_user_path_errno(ec.value()))
    runtime_error(
        "checkpoint.output_dir {}: cannot create the run folder: {}; free space on its device "
        "(or check it), then run again",
        run_dir.string(), ec.message());
  if (ec || !fs::is_directory(run_dir))
    user_error(
        "checkpoint.output_dir {}: cannot create the run folder ({}); choose a path you can "
        "write to",
        run_dir.string(), ec ? ec.message() : std::string("it exists and is not a folder"));
  RunDirLock lock;
  lock.fd_ = ::open(run_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock.fd_ < 0)
    user_error("checkpoint.output_dir {}: cannot open the run folder ({})", run_dir.string(),
               std::strerror(errno));
  if (::flock(lock.fd_, LOCK_EX | LOCK_NB) == 0) return lock;
  const int err = errno;
  if (err != EWOULDBLOCK)
    user_error(
        "checkpoint.output_dir {}: cannot lock the run folder ({}); put it on a local file "
        "system",
        run_dir.string(), std::strerror(err));
  struct stat st {};
  std::optional<pid_t> holder;
  if (::fstat(lock.fd_, &st) == 0) holder = flock_holder(st);
  user_error(
      "checkpoint.output_dir {} is in use by another qlora-train process{}; wait for it to "
      "finish (or stop it with Ctrl-C or kill -INT: it saves a checkpoint), or choose another "
      "checkpoint.output_dir",
      run_dir.string(), holder ? fmt::format(" (pid {})", describe_process(*holder)) : "");
}

RunDirLock::RunDirLock(RunDirLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

RunDirLock& RunDirLock::operator=(RunDirLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace qlt::train
