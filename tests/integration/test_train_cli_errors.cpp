// End to end: what `qlora-train train` refuses (exit code 2, a message naming the problem)
// and how it stops on a non-finite loss (exit code 1, nothing written).
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "integration/train_cli_util.h"
#include "io/safetensors.h"
#include "train/run_checkpoint.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::test::read_text;
using qlt::test::TrainScratch;

// A finished 2-step run with checkpoint-000001 and checkpoint-000002, made once per process
// and shared read-only: a test that spoils something works on a copy.
struct TwoStepRun {
  TrainScratch scratch{[] {
    json config = qlt::test::tiny_train_config(/*with_eval=*/false);
    config["training"]["max_steps"] = 2;
    config["checkpoint"]["every_steps"] = 1;
    return config;
  }()};
  fs::path run = scratch.run("run");
  TwoStepRun() {
    const auto r = scratch.train(run);
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
  }
  fs::path checkpoint(int64_t step) const { return qlt::train::checkpoint_path(run, step); }
};

const TwoStepRun& two_step_run() {
  static const TwoStepRun run;
  return run;
}

// `train --resume PATH` of the shared run's config into a fresh output_dir, so that a refusal
// that does not happen cannot spoil the shared run.
qlt::test::RunResult resume_from(const fs::path& checkpoint, const std::string& extra = "") {
  const auto& base = two_step_run();
  qlt::test::TempDir out;
  return base.scratch.train(
      out / "run", "--resume '" + checkpoint.string() + "' --set training.max_steps=4 " + extra);
}

}  // namespace

TEST_CASE("train refuses a fresh run into a non-empty output_dir", "[integration][train]") {
  TrainScratch scratch(qlt::test::tiny_train_config(false));
  const fs::path run = scratch.run("run");
  fs::create_directories(run);
  std::ofstream(run / "notes.txt") << "someone else's file\n";
  qlt::test::check_bad_input(scratch.train(run), {run.string(), "is not empty", "--resume"});
  CHECK(qlt::test::entry_names(run) == std::vector<std::string>{"notes.txt"});
}

TEST_CASE("train refuses --resume into a folder of other files with no checkpoint",
          "[integration][train]") {
  TrainScratch scratch(qlt::test::tiny_train_config(false));
  const fs::path run = scratch.run("run");
  fs::create_directories(run);
  std::ofstream(run / "notes.txt") << "someone else's file\n";
  qlt::test::check_bad_input(scratch.train(run, "--resume"),
                             {run.string(), "holds no complete checkpoint", "notes.txt"});
  CHECK(qlt::test::entry_names(run) == std::vector<std::string>{"notes.txt"});
}

TEST_CASE("train refuses --resume PATH of an incomplete or corrupted checkpoint",
          "[integration][train]") {
  const auto& base = two_step_run();
  qlt::test::TempDir tmp;
  const fs::path no_done = tmp / "checkpoint-000002";
  qlt::test::copy_tree(base.checkpoint(2), no_done);
  fs::remove(no_done / "DONE");
  qlt::test::check_bad_input(resume_from(no_done),
                             {"cannot resume from " + no_done.string(), "no DONE marker"});

  const fs::path altered = tmp / "altered" / "checkpoint-000002";
  fs::create_directories(altered.parent_path());
  qlt::test::copy_tree(base.checkpoint(2), altered);
  qlt::test::flip_a_bit(altered / "adapter/adapter_model.safetensors");
  qlt::test::check_bad_input(resume_from(altered),
                             {"cannot resume from " + altered.string(),
                              "adapter/adapter_model.safetensors", "SHA-1 differs"});
}

TEST_CASE("train --resume skips a corrupted newest checkpoint for the older complete one",
          "[integration][train]") {
  const auto& base = two_step_run();
  qlt::test::TempDir tmp;
  const fs::path run = tmp / "run";
  qlt::test::copy_tree(base.run, run);
  qlt::test::flip_a_bit(run / "checkpoint-000002/optimizer.safetensors");
  const auto r = base.scratch.train(run, "--resume");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("skipping checkpoint " + (run / "checkpoint-000002").string()));
  CHECK_THAT(r.err, Contains("optimizer.safetensors: SHA-1 differs"));
  CHECK_THAT(r.err,
             Contains("resumed from " + (run / "checkpoint-000001").string() + " at step 1"));
  // Step 2 trained again from checkpoint 1 replaces the corrupted folder, bit for bit as the
  // original run wrote it.
  CHECK(qlt::train::checkpoint_problem(run / "checkpoint-000002") == "");
  CHECK(qlt::test::same_bytes(run / "checkpoint-000002/optimizer.safetensors",
                              base.checkpoint(2) / "optimizer.safetensors"));
  CHECK(qlt::test::same_bytes(run / "final/adapter_model.safetensors",
                              base.run / "final/adapter_model.safetensors"));
}

TEST_CASE("train refuses to resume with a config that changes the training",
          "[integration][train]") {
  const auto& base = two_step_run();
  const fs::path checkpoint = base.checkpoint(2);
  const std::string all_modules =
      R"(["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"])";
  qlt::test::check_bad_input(resume_from(checkpoint, "--set adapter.rank=16"),
                             {"cannot resume from " + checkpoint.string(),
                              "adapter.rank: the checkpoint has 8, this config has 16"});
  qlt::test::check_bad_input(resume_from(checkpoint, "--set adapter.target_modules=q_proj,v_proj"),
                             {"adapter.target_modules: the checkpoint has " + all_modules +
                              R"(, this config has ["q_proj","v_proj"])"});

  qlt::test::TempDir models;
  const fs::path moved = models / "tiny-llama";
  qlt::test::copy_tree(fs::path(QLT_SOURCE_DIR) / "data/tiny-llama", moved);
  qlt::test::check_bad_input(
      resume_from(checkpoint, "--set model.path='" + moved.string() + "'"),
      {R"(model.path: the checkpoint has "data/tiny-llama", this config has ")" + moved.string() +
       "\""});
}

TEST_CASE("train refuses --resume from a checkpoint beyond max_steps", "[integration][train]") {
  const auto& base = two_step_run();
  qlt::test::check_bad_input(resume_from(base.checkpoint(2), "--set training.max_steps=1"),
                             {base.checkpoint(2).string(), "is at step 2",
                              "beyond training.max_steps 1", "raise training.max_steps"});
}

TEST_CASE("train --resume from a checkpoint at max_steps writes final/ and trains nothing",
          "[integration][train]") {
  const auto& base = two_step_run();
  qlt::test::TempDir out;
  const auto r = base.scratch.train(
      out / "run", "--resume '" + base.checkpoint(2).string() + "' --set training.max_steps=2");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Matchers::Contains("writing final/"));
  CHECK_THAT(r.err, !Catch::Matchers::Contains("step 3"));
  CHECK(fs::exists(out / "run/final/DONE"));
}

TEST_CASE("train refuses a training set with a malformed line or nothing to train",
          "[integration][train]") {
  TrainScratch scratch(qlt::test::tiny_train_config(false));
  const fs::path data = scratch.dir / "train.jsonl";
  std::ofstream(data) << R"({"instruction": "Define the word.", "input": "a", "output": "b"})"
                      << "\n{\"instruction\": \"Define the word.\", \"input\": \n";
  qlt::test::check_bad_input(
      scratch.train(scratch.run("bad"), "--set data.train='" + data.string() + "'"),
      {data.string() + ":2: not valid JSON"});

  // The alpaca prompt alone is longer than 16 tokens: truncation leaves nothing to train on.
  qlt::test::check_bad_input(
      scratch.train(scratch.run("short"), "--set data.max_seq_len=16"),
      {"data/wordnet/train.jsonl", "no example has a token to train on", "data.max_seq_len"});
}

TEST_CASE("train stops on a non-finite loss without writing, naming the last good checkpoint",
          "[integration][train]") {
  json config = qlt::test::tiny_train_config(/*with_eval=*/false);
  config["training"]["max_steps"] = 2;
  config["checkpoint"]["every_steps"] = 1;
  TrainScratch scratch(config);
  const fs::path model = scratch.run("tiny-llama"), run = scratch.run("run");
  qlt::test::copy_tree(fs::path(QLT_SOURCE_DIR) / "data/tiny-llama", model);
  const std::string model_set = "--set model.path='" + model.string() + "' ";
  const auto first = scratch.train(run, model_set);
  INFO("stderr: " << first.err);
  REQUIRE(first.exit_code == 0);

  {  // A NaN in the final norm's weight makes every logit, and so the loss, NaN.
    const fs::path weights = model / "model.safetensors";
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    {
      auto file = qlt::io::SafetensorsFile::open(weights);
      for (const auto& info : file.tensors())
        tensors.emplace_back(info.name, file.tensor(info.name).clone());
    }
    bool poisoned = false;
    for (auto& [name, tensor] : tensors) {
      if (name != "model.norm.weight") continue;
      tensor[0] = std::numeric_limits<float>::quiet_NaN();
      poisoned = true;
    }
    REQUIRE(poisoned);
    fs::remove(weights);
    qlt::io::save_safetensors(weights, tensors);
  }
  const fs::path last_good = run / "checkpoint-000002";
  // Loading refuses the damaged weight, naming it, and leaves the run as it was...
  qlt::test::check_bad_input(scratch.train(run, model_set + "--resume --set training.max_steps=4"),
                             {"model.norm.weight", "NaN/Inf", "model.allow_non_finite"});
  // ... unless the user opts out: then the loss itself becomes NaN and the run stops.
  const auto r = scratch.train(
      run, model_set + "--resume --set training.max_steps=4 --set model.allow_non_finite=true");
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("step 3: the loss is nan"));
  CHECK_THAT(r.err, Contains("The last good checkpoint is " + last_good.string()));
  CHECK(qlt::train::checkpoint_problem(last_good) == "");
  // Nothing newer, and no temporary folder of an aborted write.
  CHECK(qlt::test::entry_names(run) == std::vector<std::string>{"checkpoint-000001",
                                                                "checkpoint-000002", "config.json",
                                                                "final", "metrics.jsonl"});
  CHECK(qlt::test::record_steps(qlt::test::metrics_records(run, "train")) ==
        std::vector<int64_t>{1, 2});
}
