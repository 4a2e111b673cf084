// One process per run directory: two `train` processes started at the same moment on one
// checkpoint.output_dir never both run; a --resume while the first still trains is refused
// naming its pid; a killed holder never blocks the next start.
#include <catch2/catch.hpp>

#include "integration/spawn_binary.h"
#include "integration/train_cli_util.h"

namespace fs = std::filesystem;
using qlt::test::RunResult;
using qlt::test::SpawnedRun;
using qlt::test::TrainScratch;

TEST_CASE("two train processes started together on one output_dir: exactly one runs",
          "[integration][train][lock]") {
  auto config = qlt::test::tiny_train_config(false);
  config["training"]["max_steps"] = 1;
  config["checkpoint"]["every_steps"] = 1;
  TrainScratch scratch(config);
  for (int i = 0; i < 6; ++i) {
    DYNAMIC_SECTION("attempt " << i) {
      const fs::path run = scratch.run("run-" + std::to_string(i));
      SpawnedRun a(scratch.args(run));
      SpawnedRun b(scratch.args(run));
      const RunResult ra = a.wait(), rb = b.wait();
      INFO("a: " << ra.exit_code << " " << ra.err);
      INFO("b: " << rb.exit_code << " " << rb.err);
      CHECK(((ra.exit_code == 0 && rb.exit_code == 2) || (ra.exit_code == 2 && rb.exit_code == 0)));
      const RunResult& loser = ra.exit_code == 2 ? ra : rb;
      // Refused either by the lock (the winner was still running) or, when the winner had
      // already finished, because the folder holds a run.
      const bool by_lock =
          loser.err.find("in use by another qlora-train process") != std::string::npos;
      const bool by_content = loser.err.find("is not empty") != std::string::npos;
      CHECK((by_lock || by_content));
      // The winner's run is whole: one config, one metrics record per step, a final adapter.
      CHECK(qlt::test::record_steps(qlt::test::metrics_records(run, "train")) ==
            std::vector<int64_t>{1});
      CHECK(fs::exists(run / "final/DONE"));
    }
  }
}

namespace {

// A run of 1000 steps (a checkpoint every step) started in the background; the test stops it.
struct LongRun {
  TrainScratch scratch{[] {
    auto config = qlt::test::tiny_train_config(false);
    config["training"]["max_steps"] = 1000;
    config["checkpoint"]["every_steps"] = 1;
    config["checkpoint"]["keep_last"] = 2;
    return config;
  }()};
  fs::path run = scratch.run("run");
  SpawnedRun process{scratch.args(run)};
  LongRun() {
    REQUIRE(process.wait_for_file(run / "checkpoint-000001" / "DONE", std::chrono::minutes(3)));
  }
  // After the process is gone: --resume for one more step than it saved.
  RunResult resume_one_more_step() const {
    int64_t saved = 0;
    for (const auto& name : qlt::test::entry_names(run))
      if (name.rfind("checkpoint-", 0) == 0 && name.find(".tmp-") == std::string::npos)
        saved = std::max<int64_t>(saved, std::stoll(name.substr(11)));
    REQUIRE(saved >= 1);
    return scratch.train(run, "--resume --set training.max_steps=" + std::to_string(saved + 1));
  }
};

}  // namespace

TEST_CASE("train --resume while the run still trains is refused naming the holder's pid",
          "[integration][train][lock]") {
  LongRun first;
  const RunResult second = first.scratch.train(first.run, "--resume");
  qlt::test::check_bad_input(second, {first.run.string(), "in use by another qlora-train process",
                                      "pid " + std::to_string(first.process.pid()), "qlora-train"});
  // The refused process touched nothing: the first one stops normally, with a checkpoint.
  REQUIRE(first.process.send(SIGINT));
  CHECK(first.process.wait().exit_code == 130);
  // The lock died with the holder: --resume now runs.
  const RunResult resumed = first.resume_one_more_step();
  INFO("stderr: " << resumed.err);
  CHECK(resumed.exit_code == 0);
}

TEST_CASE("a SIGKILLed holder does not block the next start", "[integration][train][lock]") {
  LongRun first;
  REQUIRE(first.process.send(SIGKILL));
  first.process.wait();
  const RunResult resumed = first.resume_one_more_step();
  INFO("stderr: " << resumed.err);
  CHECK(resumed.exit_code == 0);
  CHECK(fs::exists(first.run / "final/DONE"));
}
