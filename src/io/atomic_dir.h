// Writing a whole folder atomically (checkpoints, exported models): readers see no folder,
// the old folder, or the complete new one, never a half-written one.
//
// Recipe (as io/atomic_file.h, one level up): write everything into a sibling temporary
// folder `<final>.tmp-<pid>` (same file system, so rename is atomic), fsync every file and
// folder in it, rename it to `<final>`, fsync the parent so the rename is durable.
// Replacing an existing folder (overwrite = true) swaps the two atomically with
// renameat2(RENAME_EXCHANGE) and then deletes the old contents; on file systems without it,
// the old folder is renamed aside first (a crash between the two renames leaves it as
// `<final>.old-<pid>`, never a partial `<final>`).
// Usage:
//   AtomicDir dir(out_path);                  // UserError if out_path exists (no overwrite)
//   save_safetensors(dir.path() / "model.safetensors", ...);  ...
//   dir.commit();                             // without commit, the destructor removes it all
#pragma once

#include <filesystem>

namespace qlt::io {

class AtomicDir {
 public:
  // Creates the temporary folder. UserError when the parent folder is missing or not
  // writable, or when `final_path` exists and `overwrite` is false (checked again at commit).
  explicit AtomicDir(std::filesystem::path final_path, bool overwrite = false);
  ~AtomicDir();  // removes the temporary folder (and everything in it) unless committed
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  // Where to write the files: the temporary folder until commit().
  const std::filesystem::path& path() const { return temp_path_; }
  const std::filesystem::path& final_path() const { return final_path_; }
  bool committed() const { return committed_; }

  // fsync + rename into place. UserError on failure (the temporary folder is then removed and
  // an existing target is left as it was).
  void commit();

 private:
  void discard() noexcept;

  std::filesystem::path final_path_;
  std::filesystem::path temp_path_;
  bool overwrite_ = false;
  bool committed_ = false;
};

// The file counterpart, for a writer that creates one file by itself at a path it is given
// (e.g. a GGUF exporter): the writer writes path() ("<final>.tmp-<pid>"), commit() fsyncs it
// and renames it to `final_path` (RENAME_NOREPLACE unless overwriting; link() where the file
// system lacks it), then fsyncs the folder. The destructor removes it unless committed.
// UserError when `final_path` exists (and overwrite is false) or is not a regular file.
class StagedFile {
 public:
  StagedFile(std::filesystem::path final_path, bool overwrite);
  ~StagedFile();
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  const std::filesystem::path& path() const { return temp_; }
  // RuntimeError when the writer did not create path(); UserError / RuntimeError on failure.
  void commit();

 private:
  std::filesystem::path out_, temp_;
  bool overwrite_ = false;
  bool committed_ = false;
};

}  // namespace qlt::io
