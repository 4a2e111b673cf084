#include "io/json_file.h"

#include <fstream>

#include "core/errors.h"

namespace qlt::io {

nlohmann::json read_json_file(const std::filesystem::path& file, std::string_view open_hint) {
  std::ifstream in(file);
  if (!in) user_error("{}: cannot open{}", file.string(), open_hint);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    user_error("{}: not valid JSON ({})", file.string(), e.what());
  }
}

}  // namespace qlt::io
