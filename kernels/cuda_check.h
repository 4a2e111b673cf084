// The one CUDA error check of the project (DESIGN.md §8): every CUDA runtime call and every
// kernel launch goes through QLT_CUDA_CHECK, which throws std::runtime_error with
// "file:line: <expression>: <CUDA error name>: <CUDA error string>".
//
// Kernel launches: `kernel<<<grid, block, 0, stream>>>(...); QLT_CUDA_CHECK(cudaGetLastError());`
// (catches bad launch configurations at once; faults inside the kernel surface at the next
// synchronizing call, which is checked too).
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace qlt::kernels {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file,
                                          int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + expr + ": " +
                           cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

}  // namespace qlt::kernels

#define QLT_CUDA_CHECK(expr)                                                            \
  do {                                                                                  \
    const cudaError_t qlt_cuda_check_err_ = (expr);                                     \
    if (qlt_cuda_check_err_ != cudaSuccess) {                                           \
      ::qlt::kernels::throw_cuda_error(qlt_cuda_check_err_, #expr, __FILE__, __LINE__); \
    }                                                                                   \
  } while (0)
