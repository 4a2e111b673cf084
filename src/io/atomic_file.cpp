#include "io/atomic_file.h"

#include <c10/util/Exception.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>

#include "core/errors.h"

namespace qlt::io {
std::filesystem::path folder_of(const std::filesystem::path& path) {
  const auto parent = path.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

namespace {

// ".<name>.tmp-<pid>-<random>": hidden, and unique even for concurrent writers of one target.
std::filesystem::path temp_name_for(const std::filesystem::path& path) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string name = "." + path.filename().string() + ".tmp-" + std::to_string(::getpid()) +
                           "-" + std::to_string(rng() % 1000000007);
  return folder_of(path) / name;
}

}  // namespace

void throw_write_error(const std::filesystem::path& target, const std::string& what, int err,
                       const std::string& hint) {
  if (err == ENAMETOOLONG) {
    user_error("cannot write: {}; choose a shorter path",
               path_too_long("the path", target.native()));
  }
  if (is_user_path_errno(err)) {
    user_error("cannot write {}: {}: {}{}", target.string(), what, std::strerror(err), hint);
  }
  const std::string folder = folder_of(target).string();
  std::string todo;
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      todo = fmt::format("free space on the device holding {} (or raise the quota)", folder);
      break;
    case EFBIG:
      todo =
          "the file would exceed the file size limit of this process (`ulimit -f`) or of "
          "the file system; raise the limit or write elsewhere";
      break;
    case EIO:
      todo = fmt::format("the device holding {} reported an I/O error; check it", folder);
      break;
    default:
      todo = "check the machine (memory, open files, the device)";
      break;
  }
  runtime_error(
      "cannot write {}: {}: {}; {}, then run the command again (a training run "
      "continues from its last complete checkpoint with --resume); nothing was written in its "
      "place",
      target.string(), what, std::strerror(err), todo);
}

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
  if (path_.filename().empty())
    user_error("cannot write {}: the path names a folder", path_.string());
  for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
    temp_path_ = temp_name_for(path_);
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                 0666);  // minus umask, like any new file
    if (fd_ < 0 && errno != EEXIST) break;
  }
  if (fd_ < 0) {
    const int err = errno;
    const bool missing = err == ENOENT || err == ENOTDIR;
    throw_write_error(path_, "cannot create a file in " + folder_of(path_).string(), err,
                      missing ? " (create the folder first)" : "");
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
  temp_path_.clear();
}

void AtomicFile::fail(const char* what, int err) {
  discard();
  throw_write_error(path_, std::string(what) + " failed", err);
}

void AtomicFile::write(const void* data, size_t size) {
  if (fd_ < 0)
    user_error("cannot write {}: the file was already committed or discarded", path_.string());
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    // write() may be partial (signals, huge sizes: Linux caps one call at ~2 GiB).
    const ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", errno);
    }
    p += n;
    size -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t size) {
  if (fd_ < 0)
    user_error("cannot write {}: the file was already committed or discarded", path_.string());
  TORCH_CHECK(offset <= written_ && size <= written_ - offset, "AtomicFile::write_at(", offset,
              ", ", size, " bytes) past the ", written_, " bytes written to ", path_.string());
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd_, p, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", errno);
    }
    p += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  if (fd_ < 0)
    user_error("cannot write {}: the file was already committed or discarded", path_.string());
  if (::fsync(fd_) != 0) fail("fsync", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("close", errno);
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) fail("rename", errno);
  committed_ = true;
  // Make the rename itself durable. Failure here is not fatal: the data is complete and in
  // place; only a power loss in the next seconds could undo the rename.
  const int dir = ::open(folder_of(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFile out(path);
  out.write(bytes.data(), bytes.size());
  out.commit();
}

}  // namespace qlt::io
