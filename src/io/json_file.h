// Reading a whole JSON file (config.json, trainer_state.json, ...) with errors that name it.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>

namespace qlt::io {

// UserError "<file>: cannot open<open_hint>" or "<file>: not valid JSON (<parser message>)".
nlohmann::json read_json_file(const std::filesystem::path& file, std::string_view open_hint = {});

}  // namespace qlt::io
