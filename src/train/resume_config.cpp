#include "train/resume_config.h"

#include <c10/util/hash.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <string_view>

#include "core/config.h"
#include "core/config_schema.h"
#include "optim/optimizer.h"

namespace qlt::train {
namespace {

using nlohmann::json;

// Exact keys, or whole sections when the entry ends with a dot.
constexpr std::array<std::string_view, 11> kMayChange = {
    "model.allow_non_finite",
    "training.distributed",  // the world size may change too, when training.grad_accum divides
    "training.distributed_timeout_s",
    "training.max_steps",
    "training.threads",
    "training.device",
    "training.activation_checkpointing",
    "checkpoint.",
    "logging.",
    "eval.",
    "data.eval",
};

json value_at(const json& config, const std::string& key) {
  std::string pointer = "/" + key;
  std::replace(pointer.begin(), pointer.end(), '.', '/');
  const json::json_pointer p(pointer);
  return config.contains(p) ? config.at(p) : json();
}

}  // namespace

bool may_change_on_resume(const std::string& key) {
  for (std::string_view prefix : kMayChange) {
    if (prefix.back() == '.' ? key.rfind(prefix, 0) == 0 : key == prefix) return true;
  }
  return false;
}

std::vector<std::string> resume_incompatibilities(const json& checkpoint_config,
                                                  const json& current_config) {
  std::vector<std::string> out;
  for (const auto& key : config_keys()) {
    if (may_change_on_resume(key.path)) continue;
    const json then = value_at(checkpoint_config, key.path);
    const json now = value_at(current_config, key.path);
    // A paged optimizer type and its non-paged twin keep the same state (optim/optimizer.h).
    if (key.path == "optimizer.type" && then.is_string() && now.is_string() &&
        optim::same_optimizer_state(then.get<std::string>(), now.get<std::string>()))
      continue;
    if (then != now)
      out.push_back(fmt::format("{}: the checkpoint has {}, this config has {}", key.path,
                                then.is_null() ? "nothing" : then.dump(), now.dump()));
  }
  return out;
}

std::string resume_config_hash(const json& config) {
  json subset = json::object();
  for (const auto& key : config_keys()) {
    if (!may_change_on_resume(key.path)) subset[key.path] = value_at(config, key.path);
  }
  return c10::sha1(subset.dump()).str();
}

}  // namespace qlt::train
