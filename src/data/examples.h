// Training examples read from a JSONL dataset: parse each record in the configured format,
// render its template, tokenize segment by segment, truncate.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "data/data_options.h"
#include "data/example.h"
#include "data/segments.h"
#include "tokenizer/tokenizer.h"

namespace qlt::data {

struct ExampleSet {
  std::vector<Example> examples;  // in file order, dropped ones left out
  int64_t records = 0;            // non-blank lines read
  int64_t truncated = 0;          // examples cut to max_seq_len (kept or dropped)
  int64_t dropped = 0;            // examples left with no trained token after truncation
  int64_t trained_tokens = 0;     // sum over kept examples
};

// Reads `file` (one JSON object per line; formats in data_options.h). An example longer
// than options.max_seq_len keeps its first max_seq_len tokens (the end is cut, as Hugging
// Face's default truncation_side "right"), and the text past them is not tokenized at all
// (tokenize_truncated); one then left without a trained token is dropped and counted
// (spdlog::warn).
// UserError "file:line: what; how to fix" for invalid JSON, a missing or non-string field,
// an unknown role, a chat of the wrong shape (see chat_shape_problem); UserError naming the
// file when it holds no record or no example has a trained token; UserError for unknown
// options (validate()).
ExampleSet read_examples(const std::filesystem::path& file, const tokenizer::Tokenizer& tokenizer,
                         const DataOptions& options);

}  // namespace qlt::data
