// The ONE JSON reader of the program (DESIGN.md §2, core/): every JSON text that comes from
// outside (config files, --set values, JSONL lines, safetensors headers, model config.json,
// adapter_config.json, trainer_state.json, manifest.json, bitsandbytes quant states) is parsed
// here, so that each one gets the same three guarantees:
//   - nesting deeper than kMaxJsonDepth is refused before it is built (nlohmann's parser is
//     iterative, but copying, dumping and our own walks of a parsed value recurse: 10^5
//     levels overflowed the stack);
//   - a key that appears twice in one object is refused (nlohmann keeps the last one
//     silently, which hides a mistake in a config or a tensor in a header);
//   - every error is a qlt::UserError that names where the text came from, with line and
//     column where there is a position to give, and says how to fix it.
#pragma once

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace qlt {

// Deepest nesting accepted (objects and arrays). The deepest legitimate document we read is a
// trainer_state.json (about 5 levels); 64 leaves room for any tool's metadata.
inline constexpr int kMaxJsonDepth = 64;

struct JsonError {
  std::size_t line = 0, column = 0;  // 1-based position of the error; 0 when there is none
  std::string message;  // "missing ',' ..." or "key \"lr\" appears twice in /optimizer ..."
};

// Parses `text`. On failure returns false and fills `error` (no exception), for callers
// that add their own context (a JSONL line, a --set argument, a tensor name).
bool try_parse_json(std::string_view text, nlohmann::json& out, JsonError& error,
                    int max_depth = kMaxJsonDepth);
// The same for an ordered_json (keys kept in file order, e.g. a safetensors header).
bool try_parse_json(std::string_view text, nlohmann::ordered_json& out, JsonError& error,
                    int max_depth = kMaxJsonDepth);

// Parses `text` that came from `origin` (a file name, "--set key=value", a tensor name);
// UserError "<origin>:<line>:<column>: not valid JSON: <what and how to fix it>" otherwise
// (the position is left out for errors that have none, such as a duplicate key, which is
// named by its path instead).
nlohmann::json parse_json(std::string_view text, std::string_view origin,
                          int max_depth = kMaxJsonDepth);

// Reads and parses a whole file. UserError naming the file when it does not exist, is a
// folder, cannot be read (`open_hint` is appended to that message, e.g. "; the checkpoint is
// incomplete"), or is not valid JSON.
nlohmann::json read_json_file(const std::filesystem::path& file, std::string_view open_hint = {},
                              int max_depth = kMaxJsonDepth);

// Reads a whole file as bytes; UserError naming the file when it does not exist, is a
// folder or cannot be read.
std::string read_text_file(const std::filesystem::path& file, std::string_view open_hint = {});

}  // namespace qlt
