// A whole file mapped into memory, private copy-on-write (the safetensors reader's backing).
//
// mmap(MAP_PRIVATE, PROT_READ | PROT_WRITE): tensors built on the mapping may be written to
// (LibTorch ops expect writable storage), but every written page becomes a private copy and
// nothing ever reaches the file. Pages are read from disk lazily, so opening a 14 GB model
// costs nothing until a tensor is touched. MAP_NORESERVE keeps the kernel from reserving
// memory for copies that are never made.
// Caveat (inherent to mmap): if another process truncates the file while it is mapped, a
// later read of the vanished pages raises SIGBUS. Never rewrite a model in place while it is
// being read; our own writers replace files by rename (atomic_file.h), which is safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace qlt::io {

class MappedFile {
 public:
  // Maps all of `path`. UserError (naming the path) if it cannot be opened or mapped, or is
  // not a regular file. An empty file gives data() == nullptr, size() == 0.
  static std::shared_ptr<MappedFile> open(const std::filesystem::path& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

  // Drops the whole pages inside [offset, offset + size) from this process's memory
  // (madvise MADV_DONTNEED): a loader that has copied a tensor out of the mapping calls it so
  // that reading a model larger than memory does not keep every page it touched resident (they
  // count in the RSS until the mapping goes). A later read of those pages reads the file again;
  // a page written to (a private copy) loses what was written, so release only ranges no live
  // tensor writes to. Pages that only partly overlap the range are kept.
  void release(size_t offset, size_t size) const;

 private:
  MappedFile() = default;
  std::filesystem::path path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qlt::io
