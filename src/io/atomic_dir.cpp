#include "io/atomic_dir.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE, RENAME_EXCHANGE (glibc >= 2.28, _GNU_SOURCE)
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include "core/errors.h"
#include "io/atomic_file.h"

namespace qlt::io {
namespace fs = std::filesystem;
namespace {

// The first of `<base>`, `<base>-1`, `<base>-2`, ... that does not exist yet.
fs::path unused_sibling(const fs::path& path, const std::string& suffix) {
  const std::string base = path.filename().string() + suffix + std::to_string(::getpid());
  for (int i = 0;; ++i) {
    const fs::path candidate = folder_of(path) / (i == 0 ? base : base + "-" + std::to_string(i));
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(candidate, ec))) return candidate;
  }
}

bool is_unsupported(int err) { return err == EINVAL || err == ENOSYS || err == ENOTSUP; }

// fsync of one file or folder; 0 or errno.
int fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) return errno;
  int err = 0;
  if (::fsync(fd) != 0) err = errno;
  ::close(fd);
  return err;
}

}  // namespace

AtomicDir::AtomicDir(fs::path final_path, bool overwrite)
    : final_path_(std::move(final_path)), overwrite_(overwrite) {
  if (!final_path_.has_filename()) final_path_ = final_path_.parent_path();  // "out/" -> "out"
  const std::string name = final_path_.filename().string();
  if (name.empty() || name == "." || name == "..")
    user_error("cannot write the folder {}: give it a name", final_path_.string());

  std::error_code ec;
  const fs::file_status status = fs::symlink_status(final_path_, ec);
  if (fs::exists(status)) {
    if (!overwrite_)
      user_error("cannot write {}: it already exists (choose another path, or remove it first)",
                 final_path_.string());
    if (!fs::is_directory(status))
      user_error("cannot write {}: it exists and is not a folder, so it is not replaced",
                 final_path_.string());
  }

  for (int attempt = 0; attempt < 16; ++attempt) {
    temp_path_ = unused_sibling(final_path_, ".tmp-");
    if (::mkdir(temp_path_.c_str(), 0777) == 0) return;  // minus umask, like any new folder
    if (errno != EEXIST) break;  // EEXIST: another writer took the name just now
  }
  const int err = errno;
  const fs::path tried = temp_path_;
  temp_path_.clear();
  const bool missing = err == ENOENT || err == ENOTDIR;
  throw_write_error(final_path_, "cannot create the folder " + tried.string(), err,
                    missing ? " (create the parent folder first)" : "");
}

AtomicDir::~AtomicDir() {
  if (!committed_) discard();
}

void AtomicDir::discard() noexcept {
  if (temp_path_.empty()) return;
  std::error_code ec;
  fs::remove_all(temp_path_, ec);
  temp_path_.clear();
}

void AtomicDir::commit() {
  if (committed_ || temp_path_.empty())
    user_error("cannot write {}: the folder was already committed or discarded",
               final_path_.string());
  const auto fail = [&](const std::string& what, int err) {
    discard();
    throw_write_error(final_path_, what + " failed", err);
  };

  // 1. Everything written so far reaches the disk before the folder becomes visible.
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(temp_path_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::file_status status = it->symlink_status(ec);
    if (ec) break;
    if (!fs::is_regular_file(status) && !fs::is_directory(status)) continue;
    if (const int err = fsync_path(it->path(), fs::is_directory(status)))
      fail("fsync of " + it->path().string(), err);
  }
  if (ec) fail("listing " + temp_path_.string(), ec.value());
  if (const int err = fsync_path(temp_path_, true)) fail("fsync of " + temp_path_.string(), err);

  // 2. Into place.
  const fs::file_status target = fs::symlink_status(final_path_, ec);
  if (!fs::exists(target)) {
    // RENAME_NOREPLACE: a plain rename would silently replace an empty folder created since.
    int rc =
        ::renameat2(AT_FDCWD, temp_path_.c_str(), AT_FDCWD, final_path_.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && is_unsupported(errno)) {
      if (fs::exists(fs::symlink_status(final_path_, ec)))
        errno = EEXIST;
      else
        rc = ::rename(temp_path_.c_str(), final_path_.c_str());
    }
    if (rc != 0) {
      if (errno == EEXIST || errno == ENOTEMPTY) {
        discard();
        user_error(
            "cannot write {}: it was created by someone else while this was being "
            "written; nothing was changed",
            final_path_.string());
      }
      fail("rename of " + temp_path_.string(), errno);
    }
    committed_ = true;
    temp_path_.clear();
  } else {
    if (!overwrite_) {
      discard();
      user_error("cannot write {}: it already exists (choose another path, or remove it first)",
                 final_path_.string());
    }
    if (!fs::is_directory(target)) {
      discard();
      user_error("cannot write {}: it exists and is not a folder, so it is not replaced",
                 final_path_.string());
    }
    fs::path old;  // where the previous contents end up
    if (::renameat2(AT_FDCWD, temp_path_.c_str(), AT_FDCWD, final_path_.c_str(), RENAME_EXCHANGE) ==
        0) {
      old = temp_path_;  // the swap leaves the old folder under the temporary name
    } else {
      if (!is_unsupported(errno)) fail("rename of " + temp_path_.string(), errno);
      // No atomic swap on this file system: move the old folder aside, then the new one in.
      old = unused_sibling(final_path_, ".old-");
      if (::rename(final_path_.c_str(), old.c_str()) != 0)
        fail("moving the existing folder aside to " + old.string(), errno);
      if (::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
        const int err = errno;
        ::rename(old.c_str(), final_path_.c_str());  // put the old folder back
        fail("rename of " + temp_path_.string(), err);
      }
    }
    committed_ = true;
    temp_path_.clear();
    // The swap must be durable before the old contents go (else a power loss could bring
    // back the old name with deleted contents).
    fsync_path(folder_of(final_path_), true);
    fs::remove_all(old, ec);  // best effort: the new folder is in place either way
  }

  // 3. Make the rename durable. Not fatal: the data is complete and in place.
  fsync_path(folder_of(final_path_), true);
}

StagedFile::StagedFile(fs::path out, bool overwrite) : out_(std::move(out)), overwrite_(overwrite) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(out_, ec);
  if (fs::exists(status)) {
    if (!overwrite_)
      user_error("cannot write {}: it already exists (choose another path, or remove it first)",
                 out_.string());
    if (!fs::is_regular_file(status))
      user_error("cannot write {}: it exists and is not a file, so it is not replaced",
                 out_.string());
  }
  temp_ = folder_of(out_) / (out_.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(temp_, ec);  // a leftover of an earlier process with this pid
}

StagedFile::~StagedFile() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(temp_, ec);
  }
}

void StagedFile::commit() {
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(temp_, ec)))
    runtime_error("the writer did not create {}", temp_.string());
  if (const int err = fsync_path(temp_, false))
    throw_write_error(out_, "fsync of " + temp_.string() + " failed", err);
  int rc = 0;
  if (overwrite_) {
    if (fs::is_directory(fs::symlink_status(out_, ec)))
      user_error("cannot write {}: it exists and is not a file, so it is not replaced",
                 out_.string());
    rc = ::rename(temp_.c_str(), out_.c_str());
  } else {
    rc = ::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, out_.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && is_unsupported(errno)) {
      // No RENAME_NOREPLACE on this file system: link() refuses an existing name too.
      rc = ::link(temp_.c_str(), out_.c_str());
      if (rc == 0) ::unlink(temp_.c_str());
    }
  }
  if (rc != 0) {
    if (errno == EEXIST)
      user_error(
          "cannot write {}: it was created by someone else while this was being written; "
          "nothing was changed",
          out_.string());
    throw_write_error(out_, "rename of " + temp_.string() + " failed", errno);
  }
  committed_ = true;
  fsync_path(folder_of(out_), true);  // not fatal: the file is complete and in place
}

}  // namespace qlt::io
