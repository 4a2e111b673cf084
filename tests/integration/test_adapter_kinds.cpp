// End to end: `qlora-train train` with the adapter kinds beyond LoRA (Q-BLoRA and QA-BLoRA on an
// INT4 base, L4Q with a LoRA warm-up on a dense base) on the bundled tiny model. A run killed
// (SIGKILL) after its checkpoint at step 2 and continued with --resume ends with the same final
// adapter, byte for byte (the native qlora_adapter.safetensors and the PEFT files), and the same
// metrics as a run never interrupted; L4Q's resumed run crosses the end of its warm-up itself.
// `eval --merge int4` of a QA-BLoRA / L4Q final adapter merges every linear exactly. Refused
// combinations exit 2 naming the key. Q-BLoRA with optimizer.type adamw_8bit resumes byte-identical
// too (its 8-bit codes and absmax go through the checkpoint), and so do paged_adamw and
// paged_adamw_8bit, which on the CPU run as adamw / adamw_8bit and say so once.
#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "integration/train_cli_util.h"
#include "io/safetensors.h"
#include "train/run_checkpoint.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::test::killed;
using qlt::test::metrics_records;
using qlt::test::record_steps;
using qlt::test::RunResult;
using qlt::test::step_range;
using qlt::test::TrainScratch;

constexpr int64_t kCheckpointEvery = 2;
constexpr int64_t kL4qWarmup = 3;  // steps 1..3 plain LoRA; the quantizer starts before step 4
const char* const kNativeFile = "qlora_adapter.safetensors";
const char* const kEvalSet = "data/kjv/eval.jsonl";

// The tiny model, `quantization` frozen, adapter `type` (r 4) on every linear; steps of 2
// sequences of <= 32 tokens of KJV text (packed), a checkpoint every 2 steps and at the end, no
// eval while training (`eval` runs get data.eval with --set). 3 steps (5 for l4q: its warm-up of
// 3 steps ends after the checkpoint resumed from and before the last step).
json kind_config(const std::string& type, const std::string& quantization) {
  json config = {
      {"model", {{"path", "data/tiny-llama"}}},
      {"quantization", {{"type", quantization}}},
      {"adapter", {{"type", type}, {"rank", 4}, {"alpha", 16}, {"dropout", 0.05}}},
      {"data", {{"train", kEvalSet}, {"format", "text"}, {"max_seq_len", 32}, {"packing", true}}},
      {"optimizer", {{"lr", 1e-2}}},
      {"training", {{"micro_batch_size", 2}, {"max_steps", 3}, {"threads", 1}}},
      {"checkpoint", {{"every_steps", kCheckpointEvery}, {"keep_last", 0}}},
      {"logging", {{"every_steps", 1}}},
      {"eval", {{"batch_size", 4}, {"max_batches", 1}}}};
  if (type == "l4q") {
    config["training"]["max_steps"] = 5;
    config["adapter"]["dropout"] = 0.0;  // unused by l4q (a warning otherwise)
    config["adapter"]["l4q_warmup_steps"] = kL4qWarmup;
  }
  return config;
}

// Train records of steps 1..max_steps agree exactly (doubles compared with ==).
void require_same_train_runs(const fs::path& run_a, const fs::path& run_b, int64_t max_steps) {
  const auto a = metrics_records(run_a, "train");
  const auto b = metrics_records(run_b, "train");
  REQUIRE(record_steps(a) == step_range(1, max_steps));
  REQUIRE(record_steps(b) == step_range(1, max_steps));
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("step " << a[i]["step"]);
    for (const char* key : {"loss", "grad_norm", "lr", "epoch"}) {
      INFO(key);
      CHECK(a[i][key].get<double>() == b[i][key].get<double>());
    }
    CHECK(a[i]["tokens"] == b[i]["tokens"]);
    CHECK(a[i]["trained_tokens"] == b[i]["trained_tokens"]);
  }
}

// The uninterrupted run "a" and the interrupted run "b" of one adapter kind.
struct KindRuns {
  json config;
  TrainScratch scratch{config};
  int64_t max_steps = config["training"]["max_steps"].get<int64_t>();
  fs::path a = scratch.run("a");
  fs::path b = scratch.run("b");
  explicit KindRuns(json c) : config(std::move(c)) {}
};

// Runs `a` uninterrupted, and `b` killed (SIGKILL) in its step 3, after its checkpoint at step
// 2, then continued with --resume; checks that both end the same. With 3 steps, step 3 is the
// last (QLT_FAULT_AT=last_step:KILL). With more (l4q), `b` first stops cleanly (SIGINT) right
// after its checkpoint at step 2 (QLT_FAULT_AT=save:INT) and is resumed and killed inside step 3
// (QLT_FAULT_AT=step:KILL: the first step of that process), so the kill comes before the end of
// the warm-up. Returns the last (resumed) run's result.
RunResult kill_and_resume(const KindRuns& runs) {
  const auto a = runs.scratch.train(runs.a);
  INFO("run a stderr: " << a.err);
  REQUIRE(a.exit_code == 0);

  const fs::path checkpoint_2 = qlt::train::checkpoint_path(runs.b, kCheckpointEvery);
  if (runs.max_steps == 3) {
    const auto kill = runs.scratch.train(runs.b, "", "QLT_FAULT_AT=last_step:KILL");
    INFO("run b (killed in step 3) stderr: " << kill.err);
    CHECK(killed(kill));
  } else {
    const auto stopped = runs.scratch.train(runs.b, "", "QLT_FAULT_AT=save:INT");
    INFO("run b (stopped at the first checkpoint) stderr: " << stopped.err);
    REQUIRE(stopped.exit_code == 130);
    REQUIRE(qlt::train::list_checkpoints(runs.b) == std::vector<fs::path>{checkpoint_2});
    const auto kill = runs.scratch.train(runs.b, "--resume", "QLT_FAULT_AT=step:KILL");
    INFO("run b (killed in step 3) stderr: " << kill.err);
    CHECK(killed(kill));
    CHECK_THAT(kill.err, Contains("resumed from " + checkpoint_2.string() + " at step 2"));
  }
  REQUIRE(qlt::train::checkpoint_problem(checkpoint_2) == "");
  CHECK(qlt::train::list_checkpoints(runs.b) == std::vector<fs::path>{checkpoint_2});
  CHECK(!fs::exists(runs.b / "final"));

  const auto resumed = runs.scratch.train(runs.b, "--resume");
  INFO("run b (resumed) stderr: " << resumed.err);
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.err, Contains("resumed from " + checkpoint_2.string() + " at step 2"));

  for (const char* file : {kNativeFile, "adapter_model.safetensors", "adapter_config.json"}) {
    INFO("final/" << file);
    CHECK(qlt::test::same_bytes(runs.a / "final" / file, runs.b / "final" / file));
  }
  // The last checkpoint too: adapter and optimizer state.
  const fs::path last_a = qlt::train::checkpoint_path(runs.a, runs.max_steps);
  const fs::path last_b = qlt::train::checkpoint_path(runs.b, runs.max_steps);
  CHECK(qlt::test::same_bytes(last_a / "adapter" / kNativeFile, last_b / "adapter" / kNativeFile));
  CHECK(qlt::test::same_bytes(last_a / "optimizer.safetensors", last_b / "optimizer.safetensors"));
  require_same_train_runs(runs.a, runs.b, runs.max_steps);
  return resumed;
}

// `eval --json` of `adapter` (+ `extra` arguments) with the run's config; the parsed JSON line.
json eval_json(const KindRuns& runs, const fs::path& adapter, const std::string& extra = "") {
  const auto r = qlt::test::run_qlora_train("eval --config '" + runs.scratch.config.string() +
                                            "' --set data.eval=" + kEvalSet + " --checkpoint '" +
                                            adapter.string() + "' --json " + extra);
  INFO("eval " << extra << " stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  std::istringstream lines(r.out);
  json result;
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line.front() == '{') result = json::parse(line);
  REQUIRE(result.is_object());
  return result;
}

std::string l4q_quantizing_meta(const fs::path& native_file) {
  const auto file = qlt::io::SafetensorsFile::open(native_file);
  const auto it = file.metadata().find("qlora_train.l4q_quantizing");
  return it == file.metadata().end() ? "(absent)" : it->second;
}

}  // namespace

TEST_CASE("train blora (INT4 base): killed and resumed ends byte-identical; type fixed on resume",
          "[integration][adapters]") {
  const KindRuns runs(kind_config("blora", "int4"));
  kill_and_resume(runs);
  CHECK(fs::is_regular_file(runs.a / "final" / kNativeFile));

  // A checkpoint continues only as the adapter type it was trained as.
  const std::string before = qlt::test::read_text(runs.b / "metrics.jsonl");
  const auto r = runs.scratch.train(runs.b, "--resume --set adapter.type=lora");
  qlt::test::check_bad_input(r, {"adapter.type", "\"blora\"", "\"lora\""});
  CHECK(qlt::test::read_text(runs.b / "metrics.jsonl") == before);
}

TEST_CASE("train qa-blora (INT4 base): killed and resumed ends byte-identical; eval --merge int4",
          "[integration][adapters]") {
  const KindRuns runs(kind_config("qa-blora", "int4"));
  kill_and_resume(runs);

  const json plain = eval_json(runs, runs.b / "final");
  const json merged = eval_json(runs, runs.b / "final", "--merge int4");
  CHECK(plain["merged_linears"] == 0);
  CHECK(plain["adapter_parameters"].get<int64_t>() > 0);
  CHECK(merged["merged_linears"] == 4 * 7);
  CHECK(merged["merged_exactly"] == merged["merged_linears"]);
  CHECK(merged["adapter_parameters"] == 0);
  CHECK(merged["decoder_linear_bytes"] == plain["decoder_linear_bytes"]);  // still INT4 g32
  const double loss = plain["loss"].get<double>(), merged_loss = merged["loss"].get<double>();
  INFO("loss " << loss << ", merged " << merged_loss);
  CHECK(std::abs(merged_loss - loss) <= 1e-4 * std::abs(loss));
}

TEST_CASE("train l4q: killed during the warm-up and resumed ends byte-identical; exact merge",
          "[integration][adapters]") {
  const KindRuns runs(kind_config("l4q", "none"));
  const RunResult resumed = kill_and_resume(runs);
  // The checkpoint resumed from was in the warm-up; the resumed run started the quantizer
  // itself, before step 4.
  CHECK_THAT(resumed.err, Contains("step 3: L4Q warm-up done"));
  CHECK(l4q_quantizing_meta(qlt::train::checkpoint_path(runs.b, 2) / "adapter" / kNativeFile) ==
        "false");
  CHECK(l4q_quantizing_meta(runs.b / "final" / kNativeFile) == "true");

  const json plain = eval_json(runs, runs.b / "final");
  const json merged = eval_json(runs, runs.b / "final", "--merge int4");
  CHECK(plain["merged_linears"] == 0);
  CHECK(merged["merged_linears"] == 4 * 7);
  CHECK(merged["merged_exactly"] == merged["merged_linears"]);
  // The merged model computes with exactly the weights the quantizer trained with.
  CHECK(merged["loss"].get<double>() == plain["loss"].get<double>());
  CHECK(merged["decoder_linear_bytes"].get<int64_t>() <
        plain["decoder_linear_bytes"].get<int64_t>() / 4);

  const auto bad = qlt::test::run_qlora_train("eval --config '" + runs.scratch.config.string() +
                                              "' --set data.eval=" + kEvalSet + " --checkpoint '" +
                                              (runs.b / "final").string() + "' --merge int5");
  qlt::test::check_bad_input(bad, {"--merge int5"});
}

TEST_CASE("train blora with optimizer.type adamw_8bit: killed and resumed ends byte-identical",
          "[integration][adapters][adamw8bit]") {
  // Rank 16 (λ 2: A [32, in/2], B [out/2, 32]): the gate/up B and down A tensors (6144 elements)
  // get 8-bit state, the others fp32 state (bitsandbytes' min_8bit_size 4096); both round-trip
  // through the checkpoint.
  json config = kind_config("blora", "int4");
  config["adapter"]["rank"] = 16;
  config["optimizer"]["type"] = "adamw_8bit";
  const KindRuns runs(config);
  kill_and_resume(runs);
  const auto state = qlt::io::SafetensorsFile::open(qlt::train::checkpoint_path(runs.b, 2) /
                                                    "optimizer.safetensors");
  int64_t codes = 0, absmax = 0;
  for (const auto& info : state.tensors()) {
    const auto t = state.tensor(info.name);
    const bool moment = info.name.ends_with(".state1") || info.name.ends_with(".state2");
    if (moment && t.scalar_type() == at::kByte) ++codes;
    if (info.name.find(".absmax") != std::string::npos) ++absmax;
  }
  CHECK(codes == 2 * 3 * 4);  // state1 + state2 of 3 tensors in each of 4 layers
  CHECK(absmax == codes);
}

TEST_CASE(
    "train blora with the paged optimizer types on the CPU: they run as their twins, say "
    "so once, killed and resumed end byte-identical",
    "[integration][adapters][adamw8bit][paged]") {
  for (const auto& [paged, twin] : {std::pair<std::string, std::string>{"paged_adamw", "adamw"},
                                    {"paged_adamw_8bit", "adamw_8bit"}}) {
    INFO(paged);
    json config = kind_config("blora", "int4");
    config["adapter"]["rank"] = 16;
    config["optimizer"]["type"] = paged;
    const KindRuns runs(config);
    const auto resumed = kill_and_resume(runs);
    const std::string line = "optimizer.type " + paged +
                             ": the parameters are on cpu, which has no CUDA managed memory, so "
                             "the state is not paged: it runs as " +
                             twin;
    CHECK_THAT(resumed.err, Contains(line));
    CHECK(resumed.err.find(line) == resumed.err.rfind(line));  // once
    const auto state = qlt::io::SafetensorsFile::open(qlt::train::checkpoint_path(runs.b, 2) /
                                                      "optimizer.safetensors");
    int64_t codes = 0;
    for (const auto& info : state.tensors()) {
      const bool moment = info.name.ends_with(".state1") || info.name.ends_with(".state2");
      if (moment && state.tensor(info.name).scalar_type() == at::kByte) ++codes;
    }
    // The 8-bit state of adamw_8bit (see the case above); none for fp32 AdamW.
    CHECK(codes == (paged == "paged_adamw_8bit" ? 2 * 3 * 4 : 0));
  }
}

TEST_CASE("adapter configurations that cannot train or merge exit 2 naming the key",
          "[integration][adapters]") {
  {
    const TrainScratch scratch(kind_config("qa-blora", "nf4"));
    const fs::path run = scratch.run("run");
    qlt::test::check_bad_input(scratch.train(run), {"quantization.type", "qa-blora", "int4"});
    CHECK(!fs::exists(run / "config.json"));
  }
  {
    const TrainScratch scratch(kind_config("none", "int4"));
    const fs::path run = scratch.run("run");
    qlt::test::check_bad_input(scratch.train(run), {"adapter.type", "nothing to train"});
    CHECK(!fs::exists(run / "config.json"));
  }
  const TrainScratch scratch(kind_config("qa-blora", "int4"));
  const std::string eval =
      "eval --config '" + scratch.config.string() + "' --set data.eval=" + kEvalSet;
  qlt::test::check_bad_input(qlt::test::run_qlora_train(eval + " --merge int4"),
                             {"--merge", "--checkpoint"});
}
