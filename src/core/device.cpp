#include "core/device.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include "core/errors.h"

namespace qlt {

at::Device resolve_device(const std::string& spec) {
  const bool have_cuda = at::hasCUDA();
  if (spec == "auto") return have_cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  if (spec == "cpu") return at::kCPU;
  if (spec.starts_with("cuda")) {
    if (!have_cuda) {
      user_error(
          "training.device is \"{}\" but this build of qlora-train has no CUDA (or the "
          "machine has no GPU); set training.device to \"cpu\" or \"auto\", or build with "
          "-DQLT_CUDA=ON on a GPU machine",
          spec);
    }
    at::Device device(spec);
    if (device.index() >= static_cast<int>(at::getNumGPUs())) {
      user_error("training.device is \"{}\" but the machine has {} GPU(s)", spec, at::getNumGPUs());
    }
    return device;
  }
  user_error("training.device \"{}\" is not valid; use auto, cpu, cuda or cuda:N", spec);
}

at::ScalarType parse_compute_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  user_error("model.compute_dtype \"{}\" is not valid; use float32 or bfloat16", name);
}

void set_cpu_threads(int64_t threads) {
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
}

}  // namespace qlt
