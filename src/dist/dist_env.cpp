#include "dist/dist_env.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <vector>

#include "core/errors.h"

namespace qlt::dist {
namespace {

constexpr const char* kDistVariables[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                          "MASTER_PORT"};

int env_int(const char* name, const std::string& text) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    user_error("environment variable {}=\"{}\" is not an integer", name, text);
  return value;
}

}  // namespace

std::optional<DistEnv> read_dist_env(const std::function<const char*(const char*)>& getenv) {
  std::vector<std::string> set, missing;
  for (const char* name : kDistVariables) {
    const char* value = getenv(name);
    (value != nullptr && *value != '\0' ? set : missing).emplace_back(name);
  }
  if (set.empty()) return std::nullopt;
  if (!missing.empty()) {
    user_error(
        "distributed training needs all of RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and "
        "MASTER_PORT in the environment; {} {} set but {} {} not. Launch with torchrun "
        "(torchrun --nproc-per-node N --no-python qlora-train train ...) or set all five; for a "
        "single-process run unset them all",
        fmt::join(set, ", "), set.size() == 1 ? "is" : "are", fmt::join(missing, ", "),
        missing.size() == 1 ? "is" : "are");
  }
  DistEnv env;
  env.rank = env_int("RANK", getenv("RANK"));
  env.world_size = env_int("WORLD_SIZE", getenv("WORLD_SIZE"));
  env.local_rank = env_int("LOCAL_RANK", getenv("LOCAL_RANK"));
  env.master_addr = getenv("MASTER_ADDR");
  env.master_port = env_int("MASTER_PORT", getenv("MASTER_PORT"));
  if (env.world_size < 1) user_error("WORLD_SIZE={} must be at least 1", env.world_size);
  if (env.rank < 0 || env.rank >= env.world_size)
    user_error("RANK={} is outside the world: it must be in 0..{} (WORLD_SIZE={})", env.rank,
               env.world_size - 1, env.world_size);
  if (env.local_rank < 0 || env.local_rank >= env.world_size)
    user_error("LOCAL_RANK={} is outside the world: it must be in 0..{} (WORLD_SIZE={})",
               env.local_rank, env.world_size - 1, env.world_size);
  if (env.master_port < 1 || env.master_port > 65535)
    user_error("MASTER_PORT={} is not a TCP port (1..65535)", env.master_port);
  return env;
}

}  // namespace qlt::dist
