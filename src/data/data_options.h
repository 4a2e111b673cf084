// Options of the training data pipeline: the config's data section itself (core/config.h), so
// its defaults and its validation (the config key table) are the only ones. The pipeline reads
// format ("text" | "alpaca" | "chat"), chat_template, max_seq_len, packing and train_on_inputs:
//   "text"   {"text": "..."}
//   "alpaca" {"instruction": "...", "input": "..." (optional), "output": "..."}
//   "chat"   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
#pragma once

#include "core/config.h"

namespace qlt::data {

using DataOptions = DataConfig;

}  // namespace qlt::data
