// qlt_gpu_bench helpers (bench_util.h).
#include "bench_util.h"

#include <cstdio>

namespace qlt::bench {

int copies_for(const BenchContext& ctx, size_t bytes) {
  return static_cast<int>(std::max<size_t>(1, (4 * ctx.l2_bytes) / std::max<size_t>(bytes, 1) + 1));
}

float time_ms(const BenchContext& ctx, const std::function<void(int)>& fn) {
  for (int i = 0; i < 10; ++i) fn(i);
  cudaEvent_t start, stop;
  QLT_CUDA_CHECK(cudaEventCreate(&start));
  QLT_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> per_call;
  constexpr int kBatch = 10;
  for (int b = 0; b < std::max(1, ctx.iters / kBatch); ++b) {
    QLT_CUDA_CHECK(cudaEventRecord(start, ctx.stream));
    for (int i = 0; i < kBatch; ++i) fn(b * kBatch + i);
    QLT_CUDA_CHECK(cudaEventRecord(stop, ctx.stream));
    QLT_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    QLT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    per_call.push_back(ms / kBatch);
  }
  QLT_CUDA_CHECK(cudaEventDestroy(start));
  QLT_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

double measure_copy(BenchContext& ctx, size_t bytes_moved) {
  const size_t bytes = std::max<size_t>(bytes_moved / 2, 1);
  const int copies = copies_for(ctx, 2 * bytes);
  std::vector<std::unique_ptr<DeviceBuffer>> src, dst;
  for (int c = 0; c < copies; ++c) {
    src.push_back(std::make_unique<DeviceBuffer>(bytes));
    dst.push_back(std::make_unique<DeviceBuffer>(bytes));
    QLT_CUDA_CHECK(cudaMemsetAsync(src.back()->p, 1, bytes, ctx.stream));
  }
  QLT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  const float ms = time_ms(ctx, [&](int i) {
    QLT_CUDA_CHECK(cudaMemcpyAsync(dst[i % copies]->p, src[i % copies]->p, bytes,
                                   cudaMemcpyDeviceToDevice, ctx.stream));
  });
  const double gbps = 2.0 * static_cast<double>(bytes) / (ms * 1e6);
  std::printf("%-40s %9.1f us  %8.1f GB/s  (%.1f MB moved)\n", "  cudaMemcpyDeviceToDevice",
              ms * 1e3, gbps, 2.0 * static_cast<double>(bytes) / 1e6);
  return gbps;
}

void print_kernel_line(const char* name, float ms, size_t bytes_moved, double copy_gbps) {
  const double gbps = static_cast<double>(bytes_moved) / (ms * 1e6);
  std::printf("%-40s %9.1f us  %8.1f GB/s  (%.1f MB moved)  %.2f x copy\n", name, ms * 1e3, gbps,
              static_cast<double>(bytes_moved) / 1e6, gbps / copy_gbps);
}

}  // namespace qlt::bench
