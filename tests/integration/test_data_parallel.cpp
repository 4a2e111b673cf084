// End to end: data-parallel training with LibTorch's c10d (Gloo on the CPU), launched as torchrun
// launches it: several qlora-train processes on this machine with RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT. 2 and 3 ranks train as one process with the same global batch (6
// micro-batches of 1 sequence, dropout on; 3 ranks with activation checkpointing): the same
// loss curve and final adapter within the reduction-order tolerance, and two distributed runs
// agree bit for bit. A rank killed with SIGKILL stops the others with a clear error; every rank
// resumes from the last checkpoint to the same adapter as an uninterrupted run. SIGINT to one
// rank stops all after the same step; another world size resumes. Bad launches exit 2 writing
// nothing.

#include <catch2/catch.hpp>
#include <cmath>
#include <future>
#include <nlohmann/json.hpp>

#include "integration/train_cli_util.h"
#include "io/safetensors.h"
#include "test_common.h"
#include "train/run_checkpoint.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::test::RunResult;
using qlt::test::TrainScratch;

// The tiny model's LoRA config: 4 steps of 6 micro-batches of 1 packed sequence, dropout 0.05,
// a checkpoint and a small evaluation every 2 steps, a metrics record every step.
json dist_config() {
  return {{"model", {{"path", "data/tiny-llama"}, {"compute_dtype", "float32"}}},
          {"quantization", {{"type", "nf4"}, {"block_size", 64}, {"double_quant", true}}},
          {"adapter", {{"type", "lora"}, {"rank", 8}, {"alpha", 16}, {"dropout", 0.05}}},
          {"data",
           {{"train", "data/wordnet/train.jsonl"},
            {"eval", "data/wordnet/eval.jsonl"},
            {"format", "alpaca"},
            {"max_seq_len", 144},
            {"packing", true}}},
          {"optimizer", {{"type", "adamw"}, {"lr", 2e-3}, {"max_grad_norm", 1.0}}},
          {"schedule", {{"type", "constant"}, {"warmup_steps", 0}}},
          {"training",
           {{"micro_batch_size", 1},
            {"grad_accum", 6},
            {"max_steps", 4},
            {"threads", 1},
            {"distributed_timeout_s", 30}}},
          {"checkpoint", {{"every_steps", 2}, {"keep_last", 0}}},
          {"logging", {{"every_steps", 1}}},
          {"eval", {{"every_steps", 2}, {"batch_size", 4}, {"max_batches", 2}}}};
}

std::string dist_env(int rank, int world, int port) {
  return "RANK=" + std::to_string(rank) + " WORLD_SIZE=" + std::to_string(world) +
         " LOCAL_RANK=" + std::to_string(rank) +
         " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port);
}

// Starts `world` ranks of `train` into `run` at once and waits for all; `extra_env[r]` is added
// to rank r's environment, `extra_args` to every rank's arguments.
std::vector<RunResult> train_ranks(const TrainScratch& scratch, const fs::path& run, int world,
                                   const std::string& extra_args = "",
                                   const std::vector<std::string>& extra_env = {}) {
  const int port = qlt::test::free_tcp_port();
  std::vector<std::future<RunResult>> running;
  for (int r = 0; r < world; ++r) {
    std::string env = dist_env(r, world, port);
    if (static_cast<size_t>(r) < extra_env.size() && !extra_env[r].empty())
      env += " " + extra_env[r];
    running.push_back(std::async(std::launch::async, [&scratch, run, extra_args, env] {
      return scratch.train(run, extra_args, env);
    }));
  }
  std::vector<RunResult> results;
  for (auto& f : running) results.push_back(f.get());
  return results;
}

void require_all_ok(const std::vector<RunResult>& results) {
  for (size_t r = 0; r < results.size(); ++r) {
    INFO("rank " << r << " stderr: " << results[r].err);
    REQUIRE(results[r].exit_code == 0);
  }
}

std::vector<double> dist_losses(const fs::path& run) {
  std::vector<double> out;
  for (const auto& rec : qlt::test::metrics_records(run, "train"))
    out.push_back(rec["loss"].get<double>());
  return out;
}

std::map<std::string, at::Tensor> final_adapter(const fs::path& run) {
  auto file = qlt::io::SafetensorsFile::open(run / "final" / "adapter_model.safetensors");
  std::map<std::string, at::Tensor> out;
  for (const auto& info : file.tensors()) out[info.name] = file.tensor(info.name).clone();
  return out;
}

// max |a - b| over all tensors; also checks the names agree.
double adapter_max_diff(const std::map<std::string, at::Tensor>& a,
                        const std::map<std::string, at::Tensor>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (const auto& [name, t] : a) {
    REQUIRE(b.count(name) == 1);
    worst = std::max(worst, (t - b.at(name)).abs().max().item<double>());
  }
  return worst;
}

// ||a - b|| / ||b|| over all tensors together (Frobenius norms).
double adapter_relative_diff(const std::map<std::string, at::Tensor>& a,
                             const std::map<std::string, at::Tensor>& b) {
  double diff = 0, norm = 0;
  for (const auto& [name, t] : a) {
    diff += (t - b.at(name)).to(at::kDouble).pow(2).sum().item<double>();
    norm += b.at(name).to(at::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(diff / norm);
}

}  // namespace

TEST_CASE("train on 2 and 3 Gloo ranks: the same training as one process, bit-exact between runs",
          "[integration][dist]") {
  const TrainScratch scratch(dist_config());
  const auto single = scratch.train(scratch.run("single"));
  INFO("single stderr: " << single.err);
  REQUIRE(single.exit_code == 0);
  const auto single_losses = dist_losses(scratch.run("single"));
  const auto single_adapter = final_adapter(scratch.run("single"));

  for (const int world : {2, 3}) {
    INFO(world << " ranks");
    const fs::path run = scratch.run("ranks" + std::to_string(world));
    // 3 ranks with activation checkpointing: the gradient hooks then fire inside the
    // recomputing backward of each layer (the numbers are the same as without it).
    const auto results = train_ranks(
        scratch, run, world, world == 3 ? "--set training.activation_checkpointing=true" : "");
    require_all_ok(results);
    // Rank 0 logs progress and writes metrics; the others only warnings.
    CHECK_THAT(results[0].err, Contains("data parallel: " + std::to_string(world) + " ranks"));
    CHECK_THAT(results[0].err, Contains("step 4/4"));
    CHECK_THAT(results[1].err, !Contains("step 4/4"));
    const auto records = qlt::test::metrics_records(run, "train");
    REQUIRE(records.size() == 4);
    CHECK(records.back()["world_size"] == world);
    CHECK(records.back()["peak_memory_mb_per_rank"].size() == static_cast<size_t>(world));
    // Every rank evaluates (at steps 0, 2, 4); rank 0 writes the records.
    CHECK(qlt::test::metrics_records(run, "eval").size() == 3);
    // The tokens of a step are the global batch's, as in the single run.
    CHECK(records.back()["tokens"] ==
          qlt::test::metrics_records(scratch.run("single"), "train").back()["tokens"]);

    // Tolerance. Each rank sums its micro-batches' gradients and the ranks' sums are added, so
    // each fp32 gradient element differs from the single process's by the rounding of another
    // summation order: a few ulp of the terms. Relative to the element that is ~1e-7, except
    // where micro-batch terms nearly cancel; and AdamW's update m / (sqrt(v) + eps) is
    // scale-free, so there a small absolute change becomes a visible fraction of lr (a sign
    // flip: 2 lr per step at worst). Measured: the adapter differs by 1.2e-6 (2 ranks) and
    // 1.3e-6 (3 ranks, activation checkpointing) in relative norm, by at most 7.0e-6 / 8.6e-6
    // per element (lr 2e-3: 0.4% of one step's update). Limits: 2e-5 relative norm, 0.1 lr =
    // 2e-4 per element, and each step's loss (which sees only the forward's summation order)
    // within 1e-5 relative.
    const auto losses = dist_losses(run);
    REQUIRE(losses.size() == single_losses.size());
    for (size_t i = 0; i < losses.size(); ++i) {
      INFO("step " << i + 1 << ": single " << single_losses[i] << ", distributed " << losses[i]);
      CHECK(std::abs(losses[i] - single_losses[i]) <= 1e-5 * single_losses[i]);
    }
    const auto adapter = final_adapter(run);
    const double diff = adapter_max_diff(adapter, single_adapter);
    const double relative = adapter_relative_diff(adapter, single_adapter);
    CHECK(relative <= 2e-5);
    CHECK(diff <= 2e-4);
    WARN(world << " ranks vs 1 process: max |adapter diff| " << diff << ", relative (norm) "
               << relative);
  }

  // The same distributed run twice: the same bits (the reduction order is fixed).
  const fs::path again = scratch.run("ranks2-again");
  require_all_ok(train_ranks(scratch, again, 2));
  CHECK(adapter_max_diff(final_adapter(again), final_adapter(scratch.run("ranks2"))) == 0);
  CHECK(dist_losses(again) == dist_losses(scratch.run("ranks2")));
}

TEST_CASE("a rank killed mid-run stops the others with a clear error; --resume continues exactly",
          "[integration][dist]") {
  const TrainScratch scratch(dist_config());
  const fs::path full = scratch.run("full");
  require_all_ok(train_ranks(scratch, full, 2));

  const fs::path run = scratch.run("killed");
  // Rank 1 is killed (SIGKILL) in step 4, after the checkpoint at step 2 (and step 3's update).
  const auto start = std::chrono::steady_clock::now();
  const auto killed = train_ranks(scratch, run, 2, "", {"", "QLT_FAULT_AT=last_step:KILL"});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(qlt::test::killed(killed[1]));
  INFO("rank 0 stderr: " << killed[0].err);
  CHECK(killed[0].exit_code != 0);
  CHECK_THAT(killed[0].err,
             Contains("rank 0 of 2") && Contains("another rank stopped") && Contains("--resume"));
  CHECK(seconds < 30);  // well within training.distributed_timeout_s: Gloo sees the closed socket
  CHECK(qlt::train::list_checkpoints(run) ==
        std::vector<fs::path>{qlt::train::checkpoint_path(run, 2)});
  CHECK(!fs::exists(run / "final"));

  const auto resumed = train_ranks(scratch, run, 2, "--resume");
  require_all_ok(resumed);
  CHECK_THAT(resumed[0].err, Contains("resumed from"));
  CHECK(adapter_max_diff(final_adapter(run), final_adapter(full)) == 0);
}

TEST_CASE("SIGINT to one rank stops every rank after the same step; another world size resumes",
          "[integration][dist]") {
  const TrainScratch scratch(dist_config());
  const fs::path full = scratch.run("full");
  require_all_ok(train_ranks(scratch, full, 2));

  // Rank 1 alone gets SIGINT inside step 1 (after its all-reduce): the stop is agreed at step
  // 2's all-reduce, so both ranks end after step 2 with its checkpoint, exit 130.
  const fs::path run = scratch.run("stopped");
  const auto stopped = train_ranks(scratch, run, 2, "", {"", "QLT_FAULT_AT=step:INT"});
  for (size_t r = 0; r < stopped.size(); ++r) {
    INFO("rank " << r << " stderr: " << stopped[r].err);
    CHECK(stopped[r].exit_code == 130);
  }
  REQUIRE(qlt::train::list_checkpoints(run) ==
          std::vector<fs::path>{qlt::train::checkpoint_path(run, 2)});
  CHECK(!fs::exists(run / "final"));

  // The global batch (6 micro-batches) divides by 3 and by 1: the checkpoint of 2 ranks goes on
  // with 3, and with a single process. Same training up to the reduction order (the tolerance
  // of the first test case).
  const fs::path copy = scratch.run("stopped-copy");
  fs::copy(run, copy, fs::copy_options::recursive);
  require_all_ok(train_ranks(scratch, run, 3, "--resume"));
  const auto single = scratch.train(copy, "--resume");
  INFO("single stderr: " << single.err);
  REQUIRE(single.exit_code == 0);
  for (const fs::path& resumed : {run, copy}) {
    INFO(resumed);
    CHECK(adapter_relative_diff(final_adapter(resumed), final_adapter(full)) <= 2e-5);
    CHECK(adapter_max_diff(final_adapter(resumed), final_adapter(full)) <= 2e-4);
  }
  // A grad_accum that the new world size does not divide is refused, naming both.
  qlt::test::check_bad_input(
      train_ranks(scratch, copy, 4, "--resume --set training.max_steps=6").front(),
      {"training.grad_accum 6", "WORLD_SIZE 4"});
}

TEST_CASE("bad distributed launches exit 2 naming the problem and write nothing",
          "[integration][dist]") {
  const TrainScratch scratch(dist_config());
  {
    const fs::path run = scratch.run("partial");
    qlt::test::check_bad_input(scratch.train(run, "", "RANK=0"),
                               {"RANK", "WORLD_SIZE", "MASTER_PORT", "torchrun"});
    CHECK(!fs::exists(run));
  }
  {
    const fs::path run = scratch.run("outside");
    qlt::test::check_bad_input(scratch.train(run, "", dist_env(2, 2, 29400)),
                               {"RANK=2", "outside", "WORLD_SIZE=2"});
    CHECK(!fs::exists(run));
  }
  {
    const fs::path run = scratch.run("accum");
    qlt::test::check_bad_input(scratch.train(run, "--set training.grad_accum=4",
                                             dist_env(0, 3, qlt::test::free_tcp_port())),
                               {"training.grad_accum 4", "WORLD_SIZE 3"});
    CHECK(!fs::exists(run));
  }
  {
    // Rank 1 alone: nobody serves MASTER_ADDR:MASTER_PORT.
    const fs::path run = scratch.run("unreachable");
    qlt::test::check_bad_input(scratch.train(run, "--set training.distributed_timeout_s=2",
                                             dist_env(1, 2, qlt::test::free_tcp_port())),
                               {"rank 1 of 2", "cannot rendezvous", "127.0.0.1"});
    CHECK(!fs::exists(run));
  }
  {
    // Two ranks with different configs: both refuse, naming the ranks.
    const fs::path run2 = scratch.run("mismatch");
    const int port = qlt::test::free_tcp_port();
    auto r0 = std::async(std::launch::async, [&] {
      return scratch.train(run2, "--set optimizer.lr=0.001", dist_env(0, 2, port));
    });
    auto r1 = std::async(std::launch::async, [&] {
      return scratch.train(run2, "--set optimizer.lr=0.002", dist_env(1, 2, port));
    });
    const auto a = r0.get(), b = r1.get();
    qlt::test::check_bad_input(a, {"different config", "same config file"});
    qlt::test::check_bad_input(b, {"different config", "same config file"});
    CHECK(!fs::exists(run2 / "config.json"));
    CHECK(qlt::train::list_checkpoints(run2).empty());
  }
}
