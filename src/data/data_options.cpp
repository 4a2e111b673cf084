#include "data/data_options.h"

#include "core/errors.h"

namespace qlt::data {

void validate(const DataOptions& options) {
  if (options.format != "text" && options.format != "alpaca" && options.format != "chat") {
    user_error("data.format \"{}\" is unknown; use \"text\", \"alpaca\" or \"chat\"",
               options.format);
  }
  if (options.chat_template != "llama2" && options.chat_template != "chatml") {
    user_error("data.chat_template \"{}\" is unknown; use \"llama2\" or \"chatml\"",
               options.chat_template);
  }
  if (options.max_seq_len < 2) {
    user_error("data.max_seq_len is {}; it must be at least 2 (one token to read, one to predict)",
               options.max_seq_len);
  }
}

}  // namespace qlt::data
