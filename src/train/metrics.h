// What a run reports: a progress line for a person (spdlog) and metrics.jsonl for a program
// (one JSON object per line, appended and flushed as it happens).
//   {"type": "train", "step", "epoch", "loss", "lr", "grad_norm", "tokens", "trained_tokens",
//    "seconds", "tokens_per_s", "memory_mb", "elapsed_s", "eta_s"}
//   {"type": "eval", "step", "loss", "perplexity", "tokens", "seconds"}
// tokens = non-padding input tokens of the logged interval, trained_tokens = those the loss
// counts, seconds = wall time of the interval's optimizer steps (no eval / checkpoint time).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/errors.h"

namespace qlt::train {

// A failed append (disk full, I/O error): the run must stop, not go on with a silent gap.
class MetricsWriteError : public RuntimeError {
 public:
  using RuntimeError::RuntimeError;
};

class MetricsLog {
 public:
  // keep_up_to_step < 0 (a run starting at step 0): `file` is started afresh (a run that
  // never completed a checkpoint left nothing worth keeping). keep_up_to_step >= 0 (a resumed
  // run): records of later steps (written by the interrupted run after its checkpoint) and
  // lines cut off by a kill are dropped first, so the file reads as one uninterrupted run.
  MetricsLog(std::filesystem::path file, int64_t keep_up_to_step = -1);
  // Appends one line (keys in the order given) and flushes it. MetricsWriteError naming the
  // file and the reason when the write fails.
  void write(const nlohmann::ordered_json& record);
  // Whether a kept or written record has this "type" and "step" (e.g. the eval of the last
  // step, before a resumed run decides to evaluate again).
  bool has_record(const std::string& type, int64_t step) const;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::FILE* out_ = nullptr;
  std::set<std::pair<std::string, int64_t>> records_;

 public:
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
};

// "1h02m", "3m05s", "12.3s".
std::string format_duration(double seconds);

// Resident memory of this process (CPU) or memory allocated by LibTorch on a CUDA device, MB.
double memory_in_use_mb(bool cuda, int device_index);

// Peak of the same since the process started (CPU: VmHWM) or since LibTorch's CUDA
// allocator was reset (CUDA: max allocated), MB.
double peak_memory_mb(bool cuda, int device_index);

}  // namespace qlt::train
