// JSON Lines reading with errors that name file and line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

namespace qlt::data {

// Calls fn(object, line_number) for each non-blank line of `file` (1-based line numbers).
// UserError "file:line: ..." when a line is not valid JSON or not a JSON object, and a
// one-line error naming the file when it cannot be opened.
void for_each_jsonl(const std::filesystem::path& file,
                    const std::function<void(const nlohmann::json&, int64_t)>& fn);

}  // namespace qlt::data
