// safetensors: memory-mapped reader (single file and the sharded Hugging Face form) and writer.
//
// Format (github.com/huggingface/safetensors): u64 little-endian header length N, N bytes of
// JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data buffer; offsets are relative to the start of the buffer.
// The reader never trusts the header: every length, offset and shape is bounds- and
// overflow-checked, and a bad file gives a UserError naming the file (and tensor), never a
// crash or an out-of-bounds read.
//
// Accepted files (the reference Rust implementation's rules, so anything we accept Python
// accepts too): header at most 100 MB, a JSON object with no duplicate names; "__metadata__"
// (optional) maps strings to strings; every tensor has a supported dtype, non-negative dims
// and data_offsets whose length equals numel * element size; and the tensors, sorted by
// offset, tile the data buffer exactly — no overlap, no gap, no trailing bytes
// ("MetadataIncompleteBuffer"). Unknown keys inside a tensor entry are ignored. BOOL bytes
// must be 0 or 1 (checked when the tensor is read).
// Dtypes: BOOL U8 I8 U16 I16 U32 I32 U64 I64 F16 BF16 F32 F64 C64 F8_E4M3 F8_E5M2 F8_E8M0;
// the sub-byte F4 / F6_* are refused with a UserError.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace qlt::io {

struct TensorInfo {
  std::string name;
  std::string dtype;  // safetensors spelling: "F32", "BF16", "I64", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range in the data buffer
};

class MappedFile;  // read-only-to-disk mapping (private copy-on-write), shared by tensors

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws UserError on any malformed header.
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  // In data-buffer order (by data_offsets); ties (zero-size tensors) in header order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // UserError if absent

  // CPU tensor of the stored dtype and shape. Shares the mapping (no copy) when the data is
  // aligned for its dtype; otherwise a copy. The mapping stays alive while any tensor does.
  // Writing to the tensor never changes the file (private mapping), but it is seen by later
  // tensor() calls for that name on this object, which share the mapping: clone() before
  // modifying in place if the original values are needed again. A BOOL byte other than 0/1
  // is a UserError.
  at::Tensor tensor(const std::string& name) const;

  // Drops the pages of tensor `name` from memory (MappedFile::release): for a loader that
  // copied it and keeps no tensor() of it that is written to.
  void release(const std::string& name) const;

 private:
  std::filesystem::path path_;
  std::shared_ptr<MappedFile> file_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_start_ = 0;
};

// The tensors of a Hugging Face model directory: model.safetensors, or the shards listed in
// model.safetensors.index.json ("weight_map": {tensor: shard file}). Shards open lazily (a
// tensor the index promises but its shard lacks is reported when first asked for). A single
// model.safetensors wins over an index, as in transformers. Safe to use from several threads.
class SafetensorsCheckpoint {
 public:
  // Throws UserError if neither form exists, the index is malformed, or names a missing shard.
  static SafetensorsCheckpoint open(const std::filesystem::path& directory);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // UserError if absent
  at::Tensor tensor(const std::string& name) const;       // as SafetensorsFile::tensor
  void release(const std::string& name) const;            // as SafetensorsFile::release
  std::filesystem::path file_of(const std::string& name) const;

 private:
  std::filesystem::path directory_;
  std::map<std::string, std::filesystem::path> weight_map_;  // tensor -> shard path
  mutable std::map<std::filesystem::path, std::shared_ptr<SafetensorsFile>> shards_;
  std::shared_ptr<std::mutex> shards_mutex_ = std::make_shared<std::mutex>();  // guards shards_
  const SafetensorsFile& shard(const std::filesystem::path& file) const;
};

// at::ScalarType <-> safetensors dtype string. UserError for a dtype with no equivalent.
std::string safetensors_dtype(at::ScalarType type);
at::ScalarType scalar_type_of(const std::string& safetensors_dtype);

// Writes `tensors` (any device, any strides; written contiguous, in the given order) and
// `metadata` to `path` atomically: a temporary file in the same folder, fsync, rename.
// A reader never sees a half-written file, and on failure an existing file is untouched.
// The header is padded so the data buffer starts 8-byte aligned; tensors are packed without
// gaps, so a tensor is aligned when the bytes before it are (else the reader copies it).
// Throws UserError on duplicate names, an unsupported dtype, or an unwritable path;
// RuntimeError when the disk or quota is full or the device fails (io/atomic_file.h).
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Writes a safetensors file one tensor at a time, so that only the tensor being added is in
// memory (exports of large models, export/hf_export.cpp). The header comes first in the file
// but is known only when every tensor has been added: the constructor reserves
// `header_capacity` bytes for it (safetensors_header_capacity: a bound from the names that will
// be added) and commit() writes it there, padded with spaces (valid JSON whitespace; readers
// skip it). Same checks and atomicity as save_safetensors; without commit() nothing is left.
class SafetensorsStreamWriter {
 public:
  SafetensorsStreamWriter(std::filesystem::path path, uint64_t header_capacity,
                          const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  void add(const std::string& name, const at::Tensor& t);  // written now, contiguous
  void commit();  // internal error if the header outgrew its capacity

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// An upper bound of the header of a file holding tensors named `names` of at most `max_dims`
// dimensions and `metadata`.
uint64_t safetensors_header_capacity(const std::vector<std::string>& names,
                                     const std::map<std::string, std::string>& metadata = {},
                                     int max_dims = 4);

}  // namespace qlt::io
