#include "data/data_options.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "core/errors.h"
#include "data/templates.h"

namespace qlt::data {

void validate(const DataOptions& options) {
  if (options.format != "text" && options.format != "alpaca" && options.format != "chat") {
    user_error("data.format \"{}\" is unknown; use \"text\", \"alpaca\" or \"chat\"",
               options.format);
  }
  const auto& names = chat_template_names();
  if (options.chat_template != "auto" &&
      std::find(names.begin(), names.end(), options.chat_template) == names.end()) {
    user_error("data.chat_template \"{}\" is unknown; use one of {} or auto", options.chat_template,
               fmt::join(names, ", "));
  }
  if (options.max_seq_len < 2) {
    user_error("data.max_seq_len is {}; it must be at least 2 (one token to read, one to predict)",
               options.max_seq_len);
  }
}

}  // namespace qlt::data
