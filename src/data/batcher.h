// Micro-batches for training: a seeded permutation of the examples per epoch, optional
// packing of several examples per row, and a cursor that resumes the exact sequence.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/data_options.h"
#include "data/example.h"

namespace qlt::data {

struct TrainBatch {
  at::Tensor input_ids;        // [B, T] int64, right-padded with the pad id
  at::Tensor labels;           // [B, T] int64, kIgnoreIndex on padding, untrained tokens and the
                               //   first token of every example (so no example predicts the next)
  at::Tensor position_ids;     // [B, T] int64, 0.. within each example, 0 on padding
  at::Tensor segment_ids;      // [B, T] int64, 1..k for the k examples of a row, 0 on padding;
                               //   attention must be causal AND within one segment
  int64_t trained_tokens = 0;  // labels != kIgnoreIndex: the positions the loss counts
  int64_t examples = 0;        // examples in the batch
};

// Where the batcher stands in its example stream (epoch 0's permutation, then epoch 1's...).
// The other fields identify the stream; restore() refuses a cursor made for another one.
struct DataCursor {
  int64_t epoch = 0;         // completed epochs
  int64_t position = 0;      // index into this epoch's permutation of the next example
  uint64_t seed = 0;         // the permutation seed
  int64_t num_examples = 0;  // examples per epoch
  std::string data_hash;     // 16 hex digits: FNV-1a of the examples, packing, max_seq_len
};

nlohmann::json cursor_to_json(const DataCursor& cursor);
// UserError naming `where` (e.g. the checkpoint file) for a missing or mistyped field.
DataCursor cursor_from_json(const nlohmann::json& json, const std::string& where);

// Examples [begin, end) in file order, one per row, right-padded to the longest: for
// evaluation over alpaca / chat data (no shuffle, no cursor).
TrainBatch collate_examples(const std::vector<Example>& examples, size_t begin, size_t end,
                            int64_t pad_id);

class Batcher {
 public:
  // examples: each no longer than options.max_seq_len (read_examples guarantees it).
  // Uses options.max_seq_len and options.packing; pad_id fills the padding of input_ids.
  Batcher(std::vector<Example> examples, const DataOptions& options, uint64_t seed, int64_t pad_id);

  // The next micro_batch_size rows. Without packing a row is one example and T is the
  // longest in the batch; with packing a row holds consecutive examples of the stream as
  // long as they fit in max_seq_len (an example is never split) and T is the longest row.
  // Rows continue into the next epoch's permutation when an epoch ends.
  TrainBatch next(int64_t micro_batch_size);

  DataCursor cursor() const;
  // UserError when the cursor was made for a different seed or dataset (count or hash).
  void restore(const DataCursor& cursor);

  int64_t num_examples() const { return static_cast<int64_t>(examples_.size()); }
  // Completed epochs plus the fraction of the current one, for logs.
  double epoch_progress() const;

 private:
  const Example& peek() const;
  void advance();

  std::vector<Example> examples_;
  int64_t max_seq_len_;
  bool packing_;
  uint64_t seed_;
  int64_t pad_id_;
  std::string data_hash_;
  int64_t epoch_ = 0;
  int64_t position_ = 0;
  std::vector<int64_t> order_;  // epoch_permutation(n, seed_, epoch_)
};

}  // namespace qlt::data
