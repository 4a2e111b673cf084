// Logging setup: spdlog to stderr, one line per message, level from the command line.
#pragma once

#include <string>

namespace qlt {

// level: "trace" | "debug" | "info" | "warn" | "error" | "off". Throws UserError otherwise.
void setup_logging(const std::string& level);

}  // namespace qlt
