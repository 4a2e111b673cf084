// The launch environment of data-parallel runs (dist/dist_env.h): nothing set is a
// single-process run, all five set is a rank of a job, anything in between or out of range is
// a UserError naming the variable. (The launches themselves: integration/test_data_parallel.)
#include <catch2/catch.hpp>
#include <map>
#include <string>

#include "dist/dist_env.h"

namespace {

using Catch::Matchers::Contains;

std::optional<qlt::dist::DistEnv> env_from(const std::map<std::string, std::string>& vars) {
  return qlt::dist::read_dist_env([&](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::map<std::string, std::string> torchrun_vars() {
  return {{"RANK", "3"},
          {"WORLD_SIZE", "8"},
          {"LOCAL_RANK", "3"},
          {"MASTER_ADDR", "node0"},
          {"MASTER_PORT", "29500"}};
}

}  // namespace

TEST_CASE("dist env: none set is a single process, all five a rank", "[dist]") {
  CHECK_FALSE(env_from({}).has_value());
  CHECK_FALSE(env_from({{"RANK", ""}}).has_value());  // empty counts as unset
  const auto env = env_from(torchrun_vars());
  REQUIRE(env.has_value());
  CHECK(env->rank == 3);
  CHECK(env->world_size == 8);
  CHECK(env->local_rank == 3);
  CHECK(env->master_addr == "node0");
  CHECK(env->master_port == 29500);
}

TEST_CASE("dist env: partial or out-of-range environments name the variable", "[dist]") {
  CHECK_THROWS_WITH(env_from({{"RANK", "0"}}), Contains("RANK is set but") &&
                                                   Contains("WORLD_SIZE, LOCAL_RANK") &&
                                                   Contains("torchrun"));
  auto vars = torchrun_vars();
  vars.erase("MASTER_PORT");
  CHECK_THROWS_WITH(env_from(vars), Contains("MASTER_PORT is not"));
  for (const auto& [name, value, fragment] :
       {std::tuple{"RANK", "8", "RANK=8 is outside the world"},
        std::tuple{"RANK", "-1", "RANK=-1 is outside"},
        std::tuple{"LOCAL_RANK", "9", "LOCAL_RANK=9 is outside"},
        std::tuple{"WORLD_SIZE", "0", "WORLD_SIZE=0 must be at least 1"},
        std::tuple{"MASTER_PORT", "70000", "MASTER_PORT=70000 is not a TCP port"},
        std::tuple{"RANK", "1x", "RANK=\"1x\" is not an integer"},
        std::tuple{"WORLD_SIZE", "99999999999", "WORLD_SIZE=\"99999999999\" is not an integer"}}) {
    auto bad = torchrun_vars();
    bad[name] = value;
    INFO(name << "=" << value);
    CHECK_THROWS_WITH(env_from(bad), Contains(fragment));
  }
}
