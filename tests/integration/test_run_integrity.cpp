// Integrity of what a run writes: a failed append to metrics.jsonl stops the run with a
// checkpoint and exit 1 (a runtime failure, README), never a silent gap.
#include <catch2/catch.hpp>

#include "integration/train_cli_util.h"

namespace fs = std::filesystem;
using qlt::test::RunResult;
using qlt::test::TrainScratch;

TEST_CASE("a full disk under metrics.jsonl stops the run with a checkpoint and exit 1",
          "[integration][train][integrity]") {
  if (!fs::exists("/dev/full")) {
    WARN("no /dev/full on this machine: the disk-full case is not exercised");
    return;
  }
  TrainScratch scratch(qlt::test::tiny_train_config(false));
  const fs::path run = scratch.run("run");
  fs::create_directories(run);
  // Every write to /dev/full fails with ENOSPC, as a full disk does.
  fs::create_symlink("/dev/full", run / "metrics.jsonl");
  const RunResult r = scratch.train(run);
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Matchers::Contains("metrics.jsonl: cannot append a record (No space "
                                              "left on device)"));
  CHECK_THAT(r.err, Catch::Matchers::Contains("checkpoint-000001"));
  CHECK_THAT(r.err, Catch::Matchers::Contains("--resume"));
  CHECK(fs::exists(run / "checkpoint-000001/DONE"));
  CHECK_FALSE(fs::exists(run / "final"));
}
