// GGUF writer: a version 3 file from metadata (the reader's GgufValue) and tensors given as
// raw ggml bytes. The layout is the one the `gguf` Python package's GGUFWriter produces, byte
// for byte (tests/io/test_gguf.cpp rewrites a file written by it and compares): header,
// metadata in the order added, tensor infos in the order added with offsets that are running
// sums of the tensor sizes rounded up to the alignment, zero padding to the alignment after
// the tensor infos and after every tensor (the last one included).
//
// Usage:
//   GgufWriter w;
//   w.add("general.architecture", GgufValue::str("llama"));
//   w.add("general.alignment", GgufValue::u32(64));   // optional; 32 when absent
//   w.add_tensor("token_embd.weight", GgmlType::Q8_0, {576, 49152}, std::move(bytes));
//   w.add_tensor_deferred("blk.0.attn_q.weight", GgmlType::Q4_1, {576, 576},
//                         [&] { return encode(...); });  // called by write(), then dropped
//   w.write(path);                                      // atomically (io/atomic_file.h)
// Dims are in GGUF order, ne[0] (the row length, fastest varying) first: a PyTorch [out, in]
// weight has dims {in, out}.
//
// llama.cpp reads what this writes (its gguf.cpp wants exactly these offsets) except nested
// arrays, which it refuses ("invalid GGUF type"): a file meant for llama.cpp must not hold
// an ARRAY of ARRAY (the gguf Python package reads them).
//
// Refused with a UserError naming the key or tensor: a key added twice, an empty key or one
// over 65535 bytes; a value whose held alternative or range does not fit its type, an array
// item of another type than the array's, arrays nested deeper than kMaxArrayDepth;
// general.alignment that is not a UINT32 power of two; a tensor name added twice, empty or
// of 64 bytes or more (llama.cpp's GGML_MAX_NAME); 0 or more than 4 dims, a dim < 1; ne[0]
// not a multiple of the type's block; bytes of another size than the dims and type need.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "io/ggml_types.h"
#include "io/gguf.h"

namespace qlt::io {

class GgufWriter {
 public:
  void add(const std::string& key, GgufValue value);

  // Takes the bytes.
  void add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> dims,
                  std::vector<uint8_t> bytes);
  // Does not copy: `bytes` must stay valid until the last write() / to_bytes().
  void add_tensor_view(const std::string& name, GgmlType type, std::vector<int64_t> dims,
                       std::span<const uint8_t> bytes);
  // Streaming: `produce` is called when write() / to_bytes() reaches the tensor, and its bytes
  // are dropped once written, so a file of any size is written with one tensor in memory. It
  // must return exactly the bytes that `type` and `dims` need (else an internal error); it is
  // called once per write() / to_bytes().
  using TensorProducer = std::function<std::vector<uint8_t>()>;
  void add_tensor_deferred(const std::string& name, GgmlType type, std::vector<int64_t> dims,
                           TensorProducer produce);

  uint64_t alignment() const;  // general.alignment if added, else 32
  // The size of the file to be written.
  uint64_t file_size() const;

  // The whole file in memory (tests, small files).
  std::string to_bytes() const;
  // Writes the file at `path` atomically. UserError for a bad path, RuntimeError for a full
  // disk or an I/O error (io/atomic_file.h).
  void write(const std::filesystem::path& path) const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    uint64_t nbytes = 0;
    std::vector<uint8_t> owned;     // add_tensor
    std::span<const uint8_t> view;  // add_tensor_view
    TensorProducer produce;         // add_tensor_deferred
    std::span<const uint8_t> data() const { return owned.empty() ? view : owned; }
  };
  // The bytes `type` and `dims` need; UserError naming the tensor for a bad name, type or dims.
  uint64_t check_tensor(const std::string& name, GgmlType type,
                        const std::vector<int64_t>& dims) const;
  std::string header_bytes() const;  // header, metadata, tensor infos (no padding)
  template <typename Sink>
  void emit(Sink&& sink) const;

  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t> keys_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t> names_;
};

}  // namespace qlt::io
