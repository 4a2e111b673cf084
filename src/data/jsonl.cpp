#include "data/jsonl.h"

#include <fstream>
#include <string>

#include "core/errors.h"

namespace qlt::data {

void for_each_jsonl(const std::filesystem::path& file,
                    const std::function<void(const nlohmann::json&, int64_t)>& fn) {
  if (!std::filesystem::is_regular_file(file)) {
    user_error(
        "dataset {} does not exist; check data.train / data.eval in the config (relative "
        "paths are relative to the working directory)",
        file.string());
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) user_error("dataset {}: cannot be opened for reading", file.string());
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (object.is_discarded()) {
      user_error("{}:{}: not valid JSON; each line must be one JSON object", file.string(), number);
    }
    if (!object.is_object()) {
      user_error("{}:{}: expected a JSON object, got {}", file.string(), number,
                 object.type_name());
    }
    fn(object, number);
  }
}

}  // namespace qlt::data
