// The process-group environment that torchrun (`torchrun --no-python qlora-train train ...`),
// SLURM wrappers and hand-written launchers set: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT. None of them set: a single-process run. Some set: a UserError naming what is
// missing, so a half-configured launch never trains alone by accident.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace qlt::dist {

struct DistEnv {
  int rank = 0;             // 0 .. world_size-1; rank 0 writes checkpoints, logs and metrics
  int world_size = 1;       // processes in the job
  int local_rank = 0;       // rank on this machine: which GPU (cuda:LOCAL_RANK) it uses
  std::string master_addr;  // host of rank 0's rendezvous store (TCPStore)
  int master_port = 0;      // its port, 1..65535
};

// Reads the five variables through `getenv` (std::getenv by default; tests pass a map).
// std::nullopt when none is set. UserError (exit 2) when only some are set, a value is not an
// integer, WORLD_SIZE < 1, RANK or LOCAL_RANK outside [0, WORLD_SIZE), or MASTER_PORT outside
// 1..65535; the message names the variable and its value.
std::optional<DistEnv> read_dist_env(const std::function<const char*(const char*)>& getenv =
                                         [](const char* name) {
                                           return static_cast<const char*>(std::getenv(name));
                                         });

}  // namespace qlt::dist
