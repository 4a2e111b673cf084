// Helpers for the `qlora-train train` end-to-end tests: a tiny config written into a scratch
// folder, the command line that runs it, and readers for the run directory.
#pragma once

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "integration/run_binary.h"
#include "io/safetensors_test_util.h"

namespace qlt::test {

// NF4 tiny-llama, LoRA r 8 with dropout, packed alpaca WordNet: a step takes well under a
// second with one thread. Runs without eval unless `with_eval`.
inline nlohmann::json tiny_train_config(bool with_eval) {
  nlohmann::json config = {
      {"model", {{"path", "data/tiny-llama"}}},
      {"quantization", {{"type", "nf4"}}},
      {"adapter", {{"rank", 8}, {"alpha", 16}, {"dropout", 0.05}}},
      {"data",
       {{"train", "data/wordnet/train.jsonl"},
        {"format", "alpaca"},
        {"max_seq_len", 144},
        {"packing", true}}},
      {"optimizer", {{"lr", 1e-3}}},
      {"training", {{"micro_batch_size", 4}, {"max_steps", 4}, {"threads", 1}}},
      {"checkpoint", {{"every_steps", 2}, {"keep_last", 0}}},
      {"logging", {{"every_steps", 1}}},
      {"eval", {{"every_steps", 0}, {"batch_size", 16}, {"max_batches", 1}}}};
  if (with_eval) config["data"]["eval"] = "data/wordnet/eval.jsonl";
  return config;
}

// A scratch folder holding config.json; runs go into sub-folders (run("a"), run("b")...).
struct TrainScratch {
  TempDir dir;
  std::filesystem::path config = dir / "config.json";

  explicit TrainScratch(nlohmann::json cfg) {
    // Never the default runs/qlora inside the repository, even if a test forgets its own.
    cfg["checkpoint"]["output_dir"] = (dir / "default-run").string();
    std::ofstream(config) << cfg.dump(2);
  }
  std::filesystem::path run(const std::string& name) const { return dir / name; }

  // `train` into `output_dir` with one thread; `extra` is more arguments (--set, --resume).
  std::string args(const std::filesystem::path& output_dir, const std::string& extra = "") const {
    return "train --config '" + config.string() +
           "' --set training.threads=1 --set checkpoint.output_dir='" + output_dir.string() + "' " +
           extra;
  }
  RunResult train(const std::filesystem::path& output_dir, const std::string& extra = "",
                  const std::string& env = "") const {
    return run_qlora_train(args(output_dir, extra), env);
  }
};

// The records of metrics.jsonl of `type` ("train" / "eval"), in file order.
inline std::vector<nlohmann::json> metrics_records(const std::filesystem::path& run_dir,
                                                   const std::string& type) {
  std::ifstream in(run_dir / "metrics.jsonl");
  REQUIRE(in);
  std::vector<nlohmann::json> out;
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    INFO("metrics.jsonl:" << line_number << ": " << line);
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    REQUIRE(record.is_object());
    if (record.value("type", "") == type) out.push_back(record);
  }
  return out;
}

inline std::vector<int64_t> record_steps(const std::vector<nlohmann::json>& records) {
  std::vector<int64_t> steps;
  for (const auto& r : records) steps.push_back(r.at("step").get<int64_t>());
  return steps;
}

// first, first+1, ..., last
inline std::vector<int64_t> step_range(int64_t first, int64_t last) {
  std::vector<int64_t> steps;
  for (int64_t s = first; s <= last; ++s) steps.push_back(s);
  return steps;
}

// Names of the entries directly in `dir`, sorted.
inline std::vector<std::string> entry_names(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Whether two files hold the same bytes (a bool, so a failure does not print binary data).
inline bool same_bytes(const std::filesystem::path& a, const std::filesystem::path& b) {
  return std::filesystem::is_regular_file(a) && std::filesystem::is_regular_file(b) &&
         read_bytes(a) == read_bytes(b);
}

inline void copy_tree(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
}

// Flips one bit in the middle of `file` (size unchanged, so only the checksum can tell).
inline void flip_a_bit(const std::filesystem::path& file) {
  std::string bytes = read_bytes(file);
  REQUIRE(bytes.size() > 16);
  bytes[bytes.size() / 2] ^= 0x01;
  write_bytes(file, bytes);
}

}  // namespace qlt::test
