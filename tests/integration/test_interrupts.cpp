// No dead ends: a run interrupted in any phase (SIGINT, SIGTERM or SIGKILL, delivered at a
// named point through QLT_FAULT_AT, train/fault_point.h) is continued by one command,
// `train --resume`, and ends with the same final adapter, byte for byte, as a run that was
// never interrupted, and a metrics.jsonl that reads as one run.
#include <catch2/catch.hpp>

#include "integration/train_cli_util.h"

namespace fs = std::filesystem;
using qlt::test::killed;
using qlt::test::RunResult;
using qlt::test::TrainScratch;

namespace {

// 3 steps, a checkpoint at step 2 and at the end, eval at step 0 and after the last step.
nlohmann::json interrupt_config() {
  auto config = qlt::test::tiny_train_config(/*with_eval=*/true);
  config["training"]["max_steps"] = 3;
  config["checkpoint"]["every_steps"] = 2;
  return config;
}

struct InterruptReference {
  TrainScratch scratch{interrupt_config()};
  fs::path run = scratch.run("reference");
  InterruptReference() {
    const RunResult r = scratch.train(run);
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
  }
};

const InterruptReference& reference() {
  static const InterruptReference ref;
  return ref;
}

struct InterruptCase {
  const char* point;
  const char* signal;
  int expect_exit;  // -9: killed
};

// Interrupts a run at `c.point` with `c.signal`, continues it with --resume, and checks it ends
// as the uninterrupted reference run did.
void interrupt_and_resume(const InterruptCase& c) {
  const auto& ref = reference();
  const fs::path run = ref.scratch.run(std::string("run-") + c.point + "-" + c.signal);
  const RunResult first =
      ref.scratch.train(run, "", std::string("QLT_FAULT_AT=") + c.point + ":" + c.signal);
  INFO("first run stderr: " << first.err);
  if (c.expect_exit == -9) {
    CHECK(killed(first));
  } else {
    CHECK(first.exit_code == c.expect_exit);
  }
  const RunResult resumed = ref.scratch.train(run, "--resume");
  INFO("resumed run stderr: " << resumed.err);
  REQUIRE(resumed.exit_code == 0);
  CHECK(qlt::test::same_bytes(run / "final/adapter_model.safetensors",
                              ref.run / "final/adapter_model.safetensors"));
  CHECK(fs::exists(run / "final/manifest.json"));
  CHECK(fs::exists(run / "final/DONE"));
  // One record per step and per eval, as in an uninterrupted run.
  CHECK(qlt::test::record_steps(qlt::test::metrics_records(run, "train")) ==
        std::vector<int64_t>{1, 2, 3});
  CHECK(qlt::test::record_steps(qlt::test::metrics_records(run, "eval")) ==
        std::vector<int64_t>{0, 3});
  // No temporary folder or file is left behind.
  for (const auto& name : qlt::test::entry_names(run))
    CHECK(name.find(".tmp-") == std::string::npos);
  // And once complete, --resume says so and changes nothing.
  const RunResult again = ref.scratch.train(run, "--resume");
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.err, Catch::Matchers::Contains("the run is complete"));
}

}  // namespace

// Two test cases (signals that ask, the signal that kills) so that ctest runs them in parallel.
TEST_CASE("a run stopped by SIGINT / SIGTERM in any phase continues with --resume",
          "[integration][train][interrupt]") {
  // The run stops at the next safe point, exit 130 (final_save: the run had finished its last
  // step, so it completes, exit 0).
  for (const InterruptCase& c : std::vector<InterruptCase>{{"setup", "INT", 130},
                                                           {"eval0", "INT", 130},
                                                           {"step", "TERM", 130},
                                                           {"save", "INT", 130},
                                                           {"last_step", "INT", 130},
                                                           {"final_eval", "INT", 130},
                                                           {"final_save", "INT", 0}}) {
    DYNAMIC_SECTION(c.point << " " << c.signal) { interrupt_and_resume(c); }
  }
}

TEST_CASE("a run killed (SIGKILL) in any phase continues with --resume",
          "[integration][train][interrupt]") {
  for (const char* point :
       {"setup", "eval0", "step", "save", "last_step", "final_eval", "final_save"}) {
    DYNAMIC_SECTION(point << " KILL") { interrupt_and_resume({point, "KILL", -9}); }
  }
}

TEST_CASE("a start killed before its first checkpoint may be rerun without --resume",
          "[integration][train][interrupt]") {
  const auto& ref = reference();
  const fs::path run = ref.scratch.run("rerun-fresh");
  CHECK(killed(ref.scratch.train(run, "", "QLT_FAULT_AT=save:KILL")));
  const RunResult again = ref.scratch.train(run);
  INFO("stderr: " << again.err);
  REQUIRE(again.exit_code == 0);
  CHECK_THAT(again.err, Catch::Matchers::Contains("starting over"));
  CHECK(qlt::test::same_bytes(run / "final/adapter_model.safetensors",
                              ref.run / "final/adapter_model.safetensors"));
}

TEST_CASE("a damaged final/ is refused by eval and rewritten by --resume",
          "[integration][train][interrupt]") {
  const auto& ref = reference();
  qlt::test::TempDir tmp;
  const fs::path run = tmp / "run";
  qlt::test::copy_tree(ref.run, run);
  qlt::test::flip_a_bit(run / "final/adapter_model.safetensors");
  const RunResult eval =
      qlt::test::run_qlora_train("eval --config '" + ref.scratch.config.string() +
                                 "' --checkpoint '" + (run / "final").string() + "'");
  qlt::test::check_bad_input(eval, {"final", "adapter_model.safetensors", "SHA-1", "--resume"});
  const RunResult resumed = ref.scratch.train(run, "--resume");
  INFO("stderr: " << resumed.err);
  REQUIRE(resumed.exit_code == 0);
  CHECK(qlt::test::same_bytes(run / "final/adapter_model.safetensors",
                              ref.run / "final/adapter_model.safetensors"));
}
