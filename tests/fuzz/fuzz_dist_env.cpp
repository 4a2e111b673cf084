// Fuzz target: the data-parallel launch environment -> qlt::dist::read_dist_env. The input is
// split at NUL bytes into the values of RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
// MASTER_PORT, in that order (fewer parts: the rest are unset; an empty part: unset).
//
// Beyond "no crash, no exception other than UserError": an accepted environment is complete
// and in range (0 <= rank, local_rank < world_size, port in 1..65535), and nothing set means
// std::nullopt.
#include <optional>
#include <string>
#include <vector>

#include "dist/dist_env.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlt::fuzz::quiet_once();
  static const char* const kNames[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                       "MASTER_PORT"};
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < size && parts.size() <= 5; ++i) {
    if (data[i] == 0) {
      parts.emplace_back();
    } else {
      parts.back().push_back(static_cast<char>(data[i]));
    }
  }
  parts.resize(5);
  auto getenv = [&](const char* name) -> const char* {
    for (size_t i = 0; i < 5; ++i)
      if (std::string(name) == kNames[i]) return parts[i].empty() ? nullptr : parts[i].c_str();
    return nullptr;
  };
  std::optional<qlt::dist::DistEnv> env;
  if (!qlt::fuzz::accepts([&] { env = qlt::dist::read_dist_env(getenv); })) return 0;
  bool any = false;
  for (const auto& p : parts) any = any || !p.empty();
  QLT_FUZZ_REQUIRE(env.has_value() == any, "set variables %s but got %s", any ? "yes" : "no",
                   env ? "an environment" : "nullopt");
  if (!env) return 0;
  QLT_FUZZ_REQUIRE(env->world_size >= 1 && env->rank >= 0 && env->rank < env->world_size &&
                       env->local_rank >= 0 && env->local_rank < env->world_size,
                   "rank %d / local rank %d / world %d accepted", env->rank, env->local_rank,
                   env->world_size);
  QLT_FUZZ_REQUIRE(env->master_port >= 1 && env->master_port <= 65535, "port %d accepted",
                   env->master_port);
  QLT_FUZZ_REQUIRE(!env->master_addr.empty(), "empty MASTER_ADDR accepted");
  return 0;
}
