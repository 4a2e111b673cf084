#include "train/fault_point.h"

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <string>

namespace qlt::train {
namespace {

struct Fault {
  std::string point;
  int signal = 0;
  bool fired = false;
};

Fault& configured_fault() {
  static Fault fault = [] {
    Fault f;
    const char* env = std::getenv("QLT_FAULT_AT");
    if (env == nullptr) return f;
    const std::string spec = env;
    const auto colon = spec.rfind(':');
    const std::string name = colon == std::string::npos ? "INT" : spec.substr(colon + 1);
    f.point = spec.substr(0, colon);
    f.signal = name == "KILL" ? SIGKILL : name == "TERM" ? SIGTERM : name == "INT" ? SIGINT : 0;
    if (f.signal == 0) spdlog::warn("QLT_FAULT_AT={}: unknown signal {}; ignored", spec, name);
    return f;
  }();
  return fault;
}

}  // namespace

void fault_point(const char* point) {
  Fault& f = configured_fault();
  if (f.fired || f.signal == 0 || f.point != point) return;
  f.fired = true;
  spdlog::warn("QLT_FAULT_AT: raising signal {} at {}", f.signal, point);
  std::raise(f.signal);
}

}  // namespace qlt::train
