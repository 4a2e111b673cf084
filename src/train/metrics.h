// What a run reports: a progress line for a person (spdlog) and metrics.jsonl for a program
// (one JSON object per line, appended and flushed as it happens).
//   {"type": "train", "step", "epoch", "loss", "lr", "grad_norm", "tokens", "trained_tokens",
//    "seconds", "tokens_per_s", "memory_mb", "elapsed_s", "eta_s"}
//   {"type": "eval", "step", "loss", "perplexity", "tokens", "seconds"}
// tokens = non-padding input tokens of the logged interval, trained_tokens = those the loss
// counts, seconds = wall time of the interval's optimizer steps (no eval / checkpoint time).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace qlt::train {

class MetricsLog {
 public:
  // Opens `file` for appending. With keep_up_to_step >= 0 (a resumed run), records of later
  // steps (written by the interrupted run after its checkpoint) are dropped first, so the file
  // reads as one uninterrupted run.
  MetricsLog(std::filesystem::path file, int64_t keep_up_to_step = -1);
  void write(const nlohmann::ordered_json& record);  // keys in the order given
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

// "1h02m", "3m05s", "12.3s".
std::string format_duration(double seconds);

// Resident memory of this process (CPU) or memory allocated by LibTorch on a CUDA device, MB.
double memory_in_use_mb(bool cuda, int device_index);

// Peak of the same since the process started (CPU: VmHWM) or since LibTorch's CUDA
// allocator was reset (CUDA: max allocated), MB.
double peak_memory_mb(bool cuda, int device_index);

}  // namespace qlt::train
