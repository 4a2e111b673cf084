#include "train/metrics.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/errors.h"
#include "core/json_reader.h"
#include "io/atomic_file.h"

#ifdef QLT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace qlt::train {
namespace fs = std::filesystem;

MetricsLog::MetricsLog(fs::path file, int64_t keep_up_to_step) : path_(std::move(file)) {
  std::error_code ec;
  if (keep_up_to_step >= 0 && fs::exists(path_, ec)) {
    std::ifstream in(path_);
    std::string line, kept;
    while (std::getline(in, line)) {
      nlohmann::json record;
      JsonError error;
      // A line cut by a kill, or from a step after the checkpoint, is dropped.
      if (!try_parse_json(line, record, error) || !record.is_object()) continue;
      const auto step = record.find("step");
      const auto type = record.find("type");
      if (step == record.end() || !step->is_number_integer()) continue;
      if (step->get<int64_t>() > keep_up_to_step) continue;
      kept += line + "\n";
      if (type != record.end() && type->is_string())
        records_.emplace(type->get<std::string>(), step->get<int64_t>());
    }
    io::write_file_atomically(path_, kept);
  }
  out_ = std::fopen(path_.c_str(), keep_up_to_step >= 0 ? "a" : "w");
  if (out_ == nullptr)
    user_error("{}: cannot open for writing ({})", path_.string(), std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (out_ != nullptr) std::fclose(out_);
}

void MetricsLog::write(const nlohmann::ordered_json& record) {
  const std::string line = record.dump() + "\n";
  errno = 0;
  if (std::fwrite(line.data(), 1, line.size(), out_) != line.size() || std::fflush(out_) != 0) {
    const int err = errno;
    std::clearerr(out_);
    throw MetricsWriteError(fmt::format("{}: cannot append a record ({})", path_.string(),
                                        err ? std::strerror(err) : "write failed"));
  }
  const auto type = record.find("type");
  const auto step = record.find("step");
  if (type != record.end() && type->is_string() && step != record.end() &&
      step->is_number_integer())
    records_.emplace(type->get<std::string>(), step->get<int64_t>());
}

bool MetricsLog::has_record(const std::string& type, int64_t step) const {
  return records_.count({type, step}) > 0;
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
