// Writing one file atomically: readers see the old file or the complete new one, never a
// half-written file, even if the process dies or the machine loses power mid-write.
//
// Recipe: write to a temporary file in the same folder (rename is atomic only within one file
// system), fsync it, rename it over the target, fsync the folder so the rename is durable.
// If anything fails before the rename, the temporary file is removed and the target is
// untouched. Usage:
//   AtomicFile out(path);            // UserError if the folder is missing / not writable
//   out.write(bytes, n); ...         // RuntimeError on a full disk, UserError on a bad path
//   out.commit();                    // without commit, the destructor discards everything
//
// Failures are classed by errno (is_user_path_errno in core/errors.h): a path the user can fix
// (missing folder, no permission, read-only file system) is a UserError (exit 2); a full disk
// or quota, an I/O error or a file size limit is a RuntimeError (exit 1) that names the file
// and says to free space and run again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

namespace qlt::io {

// The folder holding `path` ("." for a bare file name): where its temporary file goes.
std::filesystem::path folder_of(const std::filesystem::path& path);

// The whole of `bytes` as `path`, by the recipe above (UserError / RuntimeError on failure).
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

// Throws the error for writing `target` when `what` ("write failed", "cannot create the folder
// X", ...) failed with `err`: a RuntimeError with what to do for a failure of the machine (disk
// full, quota, I/O error, file size limit), else a UserError. `hint` (may be empty) is added to a
// UserError.
[[noreturn]] void throw_write_error(const std::filesystem::path& target, const std::string& what,
                                    int err, const std::string& hint = "");

class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends (sequentially, like ::write).
  void write(const void* data, size_t size);
  // Overwrites bytes already written, at `offset` (< the bytes written so far; a header
  // reserved at the start and filled in last, io/safetensors.h SafetensorsStreamWriter).
  void write_at(uint64_t offset, const void* data, size_t size);
  void commit();

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temp_path() const { return temp_path_; }

 private:
  [[noreturn]] void fail(const char* what, int err);  // discards the temp file, throws
  void discard() noexcept;

  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  uint64_t written_ = 0;  // bytes appended by write()
  bool committed_ = false;
};

}  // namespace qlt::io
