// Datasets for evaluation: documents read from JSONL, tokenized, and cut into windows.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace qlt::data {

// Reads the documents of a JSONL dataset. format "text": one {"text": "..."} per line.
// UserError "file:line: ..." for a line without a string "text" field, an unknown format, or
// a file with no documents.
std::vector<std::string> read_documents(const std::filesystem::path& file,
                                        const std::string& format);

// Each document becomes [BOS] + tokens + [EOS] (BOS when tokenizer.add_bos_by_default()), cut into
// consecutive non-overlapping windows of at most max_seq_len tokens. A window of one token predicts
// nothing and is dropped.
std::vector<std::vector<int64_t>> make_eval_windows(const std::vector<std::string>& documents,
                                                    const tokenizer::Tokenizer& tokenizer,
                                                    int64_t max_seq_len);

struct Batch {
  at::Tensor input_ids;  // [B, T] int64, right-padded with pad_id
  at::Tensor labels;     // [B, T] int64, = input_ids, kIgnoreIndex on padding
};

// Windows [begin, end) right-padded to the longest one.
Batch collate(const std::vector<std::vector<int64_t>>& windows, size_t begin, size_t end,
              int64_t pad_id);

}  // namespace qlt::data
