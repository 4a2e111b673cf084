// Shared pieces of qlt_gpu_bench (bench_main.cpp): device buffers, CUDA-event timing, and the
// device-to-device copy that every measurement is printed next to. No LibTorch.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "cuda_check.h"

namespace qlt::bench {

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { QLT_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// What every benchmark gets from main: the stream, the L2 size (buffers are cycled over more
// than 4x of it so data comes from HBM), the iteration count, one seeded generator.
struct BenchContext {
  cudaStream_t stream = nullptr;
  size_t l2_bytes = 0;
  int iters = 200;
  std::mt19937 rng{1234};
};

// Independent copies of a working set of `bytes` needed to exceed 4x the L2 cache (at least 1).
int copies_for(const BenchContext& ctx, size_t bytes);

// Median milliseconds per call of `fn(i)` over ctx.iters calls (after a warm-up of 10), in
// batches of 10 calls between two events.
float time_ms(const BenchContext& ctx, const std::function<void(int)>& fn);

// Times cudaMemcpyDeviceToDevice of bytes_moved / 2 bytes (it reads and writes each, so it moves
// bytes_moved), prints its line and returns its GB/s: the reference for the next kernel line.
double measure_copy(BenchContext& ctx, size_t bytes_moved);

// Prints one measurement: time, GB/s (bytes read + written), the ratio to the copy's GB/s.
void print_kernel_line(const char* name, float ms, size_t bytes_moved, double copy_gbps);

}  // namespace qlt::bench
