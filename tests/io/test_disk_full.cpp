// A full disk (ENOSPC) or a file size limit (EFBIG) while writing is a RuntimeError (exit 1)
// naming the file and saying what to do; a path the user chose badly stays a UserError (exit 2).
//
// How the failures are made without root: ENOSPC from a 64 KiB tmpfs mounted in a private
// user + mount namespace of a forked child (unshare(2); skipped with a warning where
// unprivileged user namespaces are not allowed), EFBIG from RLIMIT_FSIZE in a forked child with
// SIGXFSZ ignored (works everywhere).
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>

#include "core/errors.h"
#include "io/atomic_dir.h"
#include "io/atomic_file.h"
#include "io/safetensors_test_util.h"

namespace {

namespace fs = std::filesystem;
using qlt::test::TempDir;

// Outcome of `body` run in a forked child, reported through a pipe: the class of what it threw
// and the message.
struct ChildResult {
  int status = -1;   // exit status of the child; 77 = the setup was not allowed
  std::string what;  // "runtime: <message>", "user: <message>", "none", "other: ..."
};

ChildResult in_child(const std::function<bool()>& setup, const std::function<void()>& body) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    if (!setup()) ::_exit(77);
    std::string what = "none";
    try {
      body();
    } catch (const qlt::RuntimeError& e) {
      what = std::string("runtime: ") + e.what();
    } catch (const qlt::UserError& e) {
      what = std::string("user: ") + e.what();
    } catch (const std::exception& e) {
      what = std::string("other: ") + e.what();
    }
    (void)!::write(fds[1], what.data(), what.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  ChildResult r;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) r.what.append(buffer, n);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

bool write_text_in_child(const char* file, const std::string& text) {
  const int fd = ::open(file, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

// In the (single-threaded) child: a user + mount namespace where `dir` is a 64 KiB tmpfs.
bool mount_small_tmpfs(const fs::path& dir) {
  const uid_t uid = ::getuid();
  const gid_t gid = ::getgid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return false;
  write_text_in_child("/proc/self/setgroups", "deny");
  if (!write_text_in_child("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
      !write_text_in_child("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1"))
    return false;
  if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  return ::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=64k") == 0;
}

// In the child: writes past 16 KiB fail with EFBIG (SIGXFSZ, which would kill, is ignored).
bool limit_file_size() {
  std::signal(SIGXFSZ, SIG_IGN);
  const rlimit limit{16 << 10, 16 << 10};
  return ::setrlimit(RLIMIT_FSIZE, &limit) == 0;
}

const std::string kMegabyte(1 << 20, 'x');

}  // namespace

TEST_CASE("errno classes: a path the user can fix versus a failure of the machine",
          "[io][disk_full]") {
  for (int err : {ENOENT, ENOTDIR, EISDIR, EEXIST, EACCES, EPERM, EROFS, ENAMETOOLONG, ELOOP})
    CHECK(qlt::is_user_path_errno(err));
  for (int err : {ENOSPC, EDQUOT, EIO, EFBIG, ENOMEM, EMFILE, ENFILE})
    CHECK_FALSE(qlt::is_user_path_errno(err));
}

TEST_CASE("write_file_atomically on a full disk: RuntimeError naming the file, nothing left",
          "[io][disk_full]") {
  TempDir tmp;
  const fs::path dir = tmp / "small";
  fs::create_directories(dir);
  const fs::path target = dir / "model.safetensors";
  const auto r = in_child([&] { return mount_small_tmpfs(dir); },
                          [&] {
                            try {
                              qlt::io::write_file_atomically(target, kMegabyte);
                            } catch (...) {
                              // The temporary file is gone: only the mount's own folder is left.
                              if (!fs::is_empty(dir)) throw std::runtime_error("leftovers");
                              throw;
                            }
                          });
  if (r.status == 77) {
    WARN("no private user + mount namespace allowed here: ENOSPC test skipped");
    return;
  }
  INFO(r.what);
  CHECK(r.status == 0);
  CHECK(r.what.rfind("runtime: cannot write " + target.string() + ": write failed: ", 0) == 0);
  CHECK_THAT(r.what, Catch::Matchers::Contains("No space left on device"));
  CHECK_THAT(r.what, Catch::Matchers::Contains("free space on the device holding " + dir.string()));
  CHECK_THAT(r.what, Catch::Matchers::Contains("--resume"));
}

TEST_CASE("AtomicDir on a full disk: RuntimeError, the temporary folder removed",
          "[io][disk_full]") {
  TempDir tmp;
  const fs::path dir = tmp / "small";
  fs::create_directories(dir);
  const auto r = in_child([&] { return mount_small_tmpfs(dir); },
                          [&] {
                            try {
                              qlt::io::AtomicDir out(dir / "export");
                              qlt::io::write_file_atomically(out.path() / "a.bin", kMegabyte);
                              out.commit();
                            } catch (...) {
                              if (!fs::is_empty(dir)) throw std::runtime_error("leftovers");
                              throw;
                            }
                          });
  if (r.status == 77) {
    WARN("no private user + mount namespace allowed here: ENOSPC test skipped");
    return;
  }
  INFO(r.what);
  CHECK(r.status == 0);
  CHECK(r.what.rfind("runtime: cannot write " + (dir / "export").string(), 0) == 0);
  CHECK_THAT(r.what, Catch::Matchers::Contains("No space left on device"));
}

TEST_CASE("a write past the file size limit: RuntimeError naming the file", "[io][disk_full]") {
  TempDir tmp;
  const fs::path target = tmp / "big.bin";
  const auto r =
      in_child(limit_file_size, [&] { qlt::io::write_file_atomically(target, kMegabyte); });
  INFO(r.what);
  REQUIRE(r.status == 0);
  CHECK(r.what.rfind("runtime: cannot write " + target.string() + ": write failed: ", 0) == 0);
  CHECK_THAT(r.what, Catch::Matchers::Contains("File too large"));
  CHECK_THAT(r.what, Catch::Matchers::Contains("ulimit -f"));
  CHECK(fs::is_empty(tmp.path));  // the temporary file was removed
}

TEST_CASE("a bad output path stays a UserError", "[io][disk_full]") {
  TempDir tmp;
  const auto user_error_of = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const qlt::RuntimeError& e) {
      return std::string("runtime: ") + e.what();
    } catch (const qlt::UserError& e) {
      return std::string("user: ") + e.what();
    }
    return std::string("none");
  };
  CHECK_THAT(user_error_of([&] { qlt::io::write_file_atomically(tmp / "no/such/dir/f", "x"); }),
             Catch::Matchers::StartsWith("user: ") &&
                 Catch::Matchers::Contains("create the folder first"));
  std::ofstream(tmp / "file") << "x";
  CHECK_THAT(user_error_of([&] { qlt::io::AtomicDir out(tmp / "file" / "sub"); }),
             Catch::Matchers::StartsWith("user: "));
  const std::string long_name = (tmp / std::string(300, 'a')).string();
  CHECK_THAT(user_error_of([&] { qlt::io::write_file_atomically(long_name, "x"); }),
             Catch::Matchers::StartsWith("user: cannot write: the path is too long (") &&
                 Catch::Matchers::Contains("choose a shorter path"));
}
