#include "train/metrics.h"

#include <fmt/format.h>

#include <sstream>
#include <vector>

#include "core/errors.h"
#include "io/atomic_file.h"

#ifdef QLT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace qlt::train {
namespace fs = std::filesystem;

MetricsLog::MetricsLog(fs::path file, int64_t keep_up_to_step) : path_(std::move(file)) {
  if (keep_up_to_step >= 0 && fs::exists(path_)) {
    std::ifstream in(path_);
    std::string line, kept;
    while (std::getline(in, line)) {
      const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      // A line cut by a kill, or from a step after the checkpoint, is dropped.
      if (record.is_discarded() || !record.contains("step")) continue;
      if (record["step"].get<int64_t>() <= keep_up_to_step) kept += line + "\n";
    }
    io::write_file_atomically(path_, kept);
  }
  out_.open(path_, std::ios::app);
  if (!out_) user_error("{}: cannot open for writing", path_.string());
}

void MetricsLog::write(const nlohmann::ordered_json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0)) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (seconds < 60) return fmt::format("{:.1f}s", seconds);
  if (s < 3600) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
}

namespace {

// A /proc/self/status field in kB ("VmRSS", "VmHWM"), as MB; 0 when absent.
double proc_status_mb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1e3;
  }
  return 0.0;
}

// CUDA: bytes allocated by LibTorch's caching allocator now (peak = false) or at most (true).
double cuda_allocated_mb(int device_index, bool peak) {
#ifdef QLT_WITH_CUDA
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_index);
  const auto& allocated =
      stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
  return static_cast<double>(peak ? allocated.peak : allocated.current) / 1e6;
#else
  (void)device_index;
  (void)peak;
  user_error("CUDA memory statistics: this build has no CUDA support");
#endif
}

}  // namespace

double memory_in_use_mb(bool cuda, int device_index) {
  return cuda ? cuda_allocated_mb(device_index, false) : proc_status_mb("VmRSS");
}

double peak_memory_mb(bool cuda, int device_index) {
  return cuda ? cuda_allocated_mb(device_index, true) : proc_status_mb("VmHWM");
}

}  // namespace qlt::train
