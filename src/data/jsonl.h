// JSON Lines reading with errors that name file and line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

namespace qlt::data {

// The longest JSONL line accepted, in bytes. One example is at most max_seq_len tokens, so
// even a 128k-token chat is well under this; a longer line is almost always a file that is
// not JSON Lines (one JSON document over many MB, a binary file) and is refused before it
// is read whole.
inline constexpr int64_t kMaxJsonlLineBytes = 16 << 20;

// Calls fn(object, line_number) for each non-blank line of `file` (1-based line numbers).
// UserError "file:line: ..." when a line is not valid JSON (with the column and the reason:
// invalid UTF-8, an unescaped control character, ...), is not a JSON object, or is longer
// than kMaxJsonlLineBytes; and a one-line error naming the file when it does not exist, is a
// folder or cannot be read.
void for_each_jsonl(const std::filesystem::path& file,
                    const std::function<void(const nlohmann::json&, int64_t)>& fn);

}  // namespace qlt::data
