#include "data/jsonl.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "core/errors.h"
#include "core/json_reader.h"

namespace qlt::data {
namespace fs = std::filesystem;

namespace {

void check_dataset_file(const fs::path& file) {
  std::error_code ec;
  const auto status = fs::status(file, ec);
  if (ec == std::errc::filename_too_long)
    user_error("dataset: {}; check data.train / data.eval in the config",
               path_too_long("the path", file.native()));
  if (ec && ec != std::errc::no_such_file_or_directory)
    user_error("dataset {}: cannot be read ({}); check data.train / data.eval in the config",
               file.string(), ec.message());
  if (!fs::exists(status))
    user_error(
        "dataset {} does not exist; check data.train / data.eval in the config (relative "
        "paths are relative to the working directory)",
        file.string());
  if (fs::is_directory(status))
    user_error(
        "dataset {} is a folder; data.train / data.eval must name a JSONL file (one JSON "
        "object per line)",
        file.string());
}

// Reads `in` line by line without ever holding more than kMaxJsonlLineBytes of one line.
class BoundedLineReader {
 public:
  BoundedLineReader(std::istream& in, const fs::path& file) : in_(in), file_(file) {}

  // The next line (without '\n') into `line`; false at the end of the input.
  bool next(std::string& line, int64_t number) {
    line.clear();
    while (true) {
      if (pos_ == end_) {
        in_.read(buffer_, sizeof buffer_);
        end_ = static_cast<size_t>(in_.gcount());
        pos_ = 0;
        if (end_ == 0) {
          if (in_.bad()) user_error("dataset {}: read failed at line {}", file_.string(), number);
          return !line.empty();
        }
      }
      const char* start = buffer_ + pos_;
      const auto* newline = static_cast<const char*>(std::memchr(start, '\n', end_ - pos_));
      const size_t take = newline ? static_cast<size_t>(newline - start) : end_ - pos_;
      if (static_cast<int64_t>(line.size() + take) > kMaxJsonlLineBytes)
        user_error(
            "{}:{}: the line is longer than {} MiB, the limit for one JSONL example; split "
            "the example, or check that the file is JSON Lines (one object per line)",
            file_.string(), number, kMaxJsonlLineBytes >> 20);
      line.append(start, take);
      pos_ += take;
      if (newline) {
        ++pos_;
        return true;
      }
    }
  }

 private:
  std::istream& in_;
  const fs::path& file_;
  char buffer_[1 << 16];
  size_t pos_ = 0, end_ = 0;
};

}  // namespace

void for_each_jsonl(const fs::path& file,
                    const std::function<void(const nlohmann::json&, int64_t)>& fn) {
  check_dataset_file(file);
  std::ifstream in(file, std::ios::binary);
  if (!in)
    user_error("dataset {}: cannot be opened for reading ({})", file.string(),
               std::strerror(errno));
  auto reader = std::make_unique<BoundedLineReader>(in, file);
  std::string line;
  nlohmann::json object;
  JsonError error;
  for (int64_t number = 1; reader->next(line, number); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!try_parse_json(line, object, error)) {
      user_error("{}:{}: not valid JSON{}: {}; each line must be one JSON object", file.string(),
                 number,
                 error.column == 0 ? std::string() : fmt::format(" (column {})", error.column),
                 error.message);
    }
    if (!object.is_object()) {
      user_error("{}:{}: expected a JSON object, got {}", file.string(), number,
                 object.type_name());
    }
    fn(object, number);
  }
}

}  // namespace qlt::data
