#include "tokenizer/model_path.h"

#include <system_error>

#include "core/errors.h"
#include "io/gguf.h"
#include "tokenizer/tokenizer.h"

namespace qlt::tokenizer {

namespace fs = std::filesystem;

fs::file_status checked_status(const fs::path& path, const char* what, const char* hint) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!ec || ec == std::errc::no_such_file_or_directory) return status;
  if (ec == std::errc::filename_too_long)
    user_error("{}; {}", path_too_long(what, path.native()), hint);
  if (ec == std::errc::not_a_directory) {
    user_error("{} {}: a file on the way is not a folder; {}", what, path.string(), hint);
  }
  if (!is_user_path_errno(ec.value()))
    runtime_error("{} {}: cannot be read: {}", what, path.string(), ec.message());
  user_error("{} {}: cannot be read ({}); {}", what, path.string(), ec.message(), hint);
}

void check_model_path(const fs::path& model_path) {
  const fs::file_status status = checked_status(model_path, "model.path", kModelPathHint);
  if (!fs::exists(status)) {
    user_error("model.path {} does not exist; {}", model_path.string(), kModelPathHint);
  }
  if (fs::is_directory(status)) return;
  if (io::is_gguf_file(model_path)) return;
  if (model_path.extension() == ".gguf") {
    user_error(
        "model.path {} is named .gguf but is not a GGUF file (it does not start with the bytes "
        "\"GGUF\", or cannot be read); download it again, or {}",
        model_path.string(), kModelPathHint);
  }
  user_error("model.path {} is a file, not a folder or a GGUF file; {}", model_path.string(),
             kModelPathHint);
}

}  // namespace qlt::tokenizer
