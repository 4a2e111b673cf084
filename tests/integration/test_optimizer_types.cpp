// End to end: optimizer.type adamw_8bit on the bundled tiny model. 200 steps of QLoRA (NF4, LoRA
// r 16 on every linear: the 12 gate/up lora_B and down lora_A tensors of 6144 elements get 8-bit
// state, the 44 smaller ones keep fp32 state as bitsandbytes does) follow fp32 AdamW's loss
// curve within a stated tolerance. (The bit-exact SIGKILL resume of adamw_8bit is in
// test_adapter_kinds.cpp's table.)
#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>

#include "integration/train_cli_util.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kCurveSteps = 200;
constexpr int64_t kCurveWindow = 20;  // steps per window of the smoothed curve

// configs/tiny/qlora.json made small: WordNet alpaca rows, 1 sequence of <= 144 tokens per step
// (packed), lr 2e-3 with cosine warm-up 20, no eval, one checkpoint at the end.
json curve_config(const std::string& optimizer_type) {
  return {{"model", {{"path", "data/tiny-llama"}, {"compute_dtype", "float32"}}},
          {"quantization", {{"type", "nf4"}, {"block_size", 64}, {"double_quant", true}}},
          {"adapter", {{"type", "lora"}, {"rank", 16}, {"alpha", 32}, {"dropout", 0.05}}},
          {"data",
           {{"train", "data/wordnet/train.jsonl"},
            {"format", "alpaca"},
            {"max_seq_len", 144},
            {"packing", true}}},
          {"optimizer",
           {{"type", optimizer_type}, {"lr", 2e-3}, {"weight_decay", 0.0}, {"max_grad_norm", 1.0}}},
          {"schedule", {{"type", "cosine"}, {"warmup_steps", 20}}},
          {"training", {{"micro_batch_size", 1}, {"max_steps", kCurveSteps}, {"threads", 1}}},
          {"checkpoint", {{"every_steps", 0}, {"keep_last", 0}}},
          {"logging", {{"every_steps", 1}}},
          {"eval", {{"every_steps", 0}}}};
}

std::vector<double> train_losses(const std::string& optimizer_type) {
  const qlt::test::TrainScratch scratch(curve_config(optimizer_type));
  const fs::path run = scratch.run("run");
  const auto r = scratch.train(run);
  INFO(optimizer_type << " stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  const auto records = qlt::test::metrics_records(run, "train");
  REQUIRE(qlt::test::record_steps(records) == qlt::test::step_range(1, kCurveSteps));
  std::vector<double> losses;
  for (const auto& rec : records) losses.push_back(rec["loss"].get<double>());
  return losses;
}

double window_mean(const std::vector<double>& v, size_t first) {
  double sum = 0;
  for (size_t i = first; i < first + kCurveWindow; ++i) sum += v[i];
  return sum / kCurveWindow;
}

}  // namespace

TEST_CASE("train adamw_8bit: 200 steps follow fp32 AdamW's loss curve",
          "[integration][adamw8bit]") {
  const auto fp32 = train_losses("adamw");
  const auto q8 = train_losses("adamw_8bit");
  // Both runs see the same batches and dropout masks; the loss of step 1 is computed before any
  // update, so it is the same number.
  CHECK(q8[0] == fp32[0]);
  // Tolerance. The 8-bit state stores m and v to the dynamic map's relative precision (0.7% to
  // 7% of a value in the top decade of its block, coarser below), so every 8-bit update differs
  // from fp32 AdamW's by up to a few percent per element, and the two runs drift apart slowly.
  // Measured here (the WARN line): curves of 20-step means within 1.1e-4 relative, single steps
  // within 0.009 nats. The limits are ~10x / ~5x that: window means within 0.1% of fp32's (the
  // last window too), single steps within 0.05. They are tight enough to catch a broken state:
  // quantizing m with the unsigned map (its sign lost) moves the window means by 1.3% and single
  // steps by 0.46.
  double worst_window = 0, worst_step = 0;
  for (size_t w = 0; w + kCurveWindow <= fp32.size(); w += kCurveWindow) {
    const double a = window_mean(fp32, w), b = window_mean(q8, w);
    INFO("steps " << w + 1 << ".." << w + kCurveWindow << ": adamw " << a << ", adamw_8bit " << b);
    CHECK(std::abs(b - a) <= 1e-3 * a);
    worst_window = std::max(worst_window, std::abs(b - a) / a);
  }
  for (size_t i = 0; i < fp32.size(); ++i) {
    INFO("step " << i + 1 << ": adamw " << fp32[i] << ", adamw_8bit " << q8[i]);
    CHECK(std::abs(q8[i] - fp32[i]) <= 0.05);
    worst_step = std::max(worst_step, std::abs(q8[i] - fp32[i]));
  }
  const size_t last = fp32.size() - kCurveWindow;
  CHECK(std::abs(window_mean(q8, last) - window_mean(fp32, last)) <=
        1e-3 * window_mean(fp32, last));
  // Training happened at all: the last window is well below the first.
  CHECK(window_mean(fp32, last) < 0.8 * window_mean(fp32, 0));
  CHECK(window_mean(q8, last) < 0.8 * window_mean(q8, 0));
  WARN("adamw vs adamw_8bit over " << kCurveSteps << " steps: worst window mean rel diff "
                                   << worst_window << ", worst single-step abs diff " << worst_step
                                   << "; first window " << window_mean(fp32, 0) << ", last window "
                                   << window_mean(fp32, last) << " vs " << window_mean(q8, last));
}
