// Options of the training data pipeline, as plain typed values (the config layer maps its
// JSON keys onto this struct; nothing here knows about JSON configs).
#pragma once

#include <cstdint>
#include <string>

namespace qlt::data {

struct DataOptions {
  // "text"   {"text": "..."}
  // "alpaca" {"instruction": "...", "input": "..." (optional), "output": "..."}
  // "chat"   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
  std::string format = "text";
  std::string chat_template = "llama2";  // "llama2" | "chatml" (format "chat" only)
  int64_t max_seq_len = 256;             // tokens per example (per packed row with packing)
  bool packing = false;                  // several examples per row, attention kept apart
  bool train_on_inputs = false;          // false: only output / assistant tokens have labels
};

// UserError when a field holds a value the pipeline does not know (format, chat_template,
// max_seq_len < 2).
void validate(const DataOptions& options);

}  // namespace qlt::data
