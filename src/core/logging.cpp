#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "core/errors.h"

namespace qlt {

void setup_logging(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  // from_str maps unknown names to "off"; only "off" itself may mean off.
  if (parsed == spdlog::level::off && level != "off") {
    user_error("--log-level: unknown level '{}'; use trace, debug, info, warn, error or off",
               level);
  }
  auto logger = spdlog::get("qlt");
  if (!logger) {
    logger = spdlog::stderr_color_mt("qlt");
    logger->set_pattern("[%H:%M:%S] %^%l%$ %v");
  }
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
}

}  // namespace qlt
