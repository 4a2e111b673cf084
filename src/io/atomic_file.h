// Writing one file atomically: readers see the old file or the complete new one, never a
// half-written file, even if the process dies or the machine loses power mid-write.
//
// Recipe: write to a temporary file in the same folder (rename is atomic only within one file
// system), fsync it, rename it over the target, fsync the folder so the rename is durable.
// If anything fails before the rename, the temporary file is removed and the target is
// untouched. Usage:
//   AtomicFile out(path);            // UserError if the folder is missing / not writable
//   out.write(bytes, n); ...         // UserError on a failed write (disk full, ...)
//   out.commit();                    // without commit, the destructor discards everything
#pragma once

#include <cstddef>
#include <filesystem>
#include <string_view>

namespace qlt::io {

// The whole of `bytes` as `path`, by the recipe above (UserError on failure).
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void commit();

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temp_path() const { return temp_path_; }

 private:
  [[noreturn]] void fail(const char* what, int err);  // discards the temp file, throws
  void discard() noexcept;

  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace qlt::io
