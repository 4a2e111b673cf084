// qlt_gpu_bench: bandwidth of the CUDA kernels, each next to a device-to-device copy of the
// same bytes measured in the same run, timed with CUDA events (median per call over --iters
// calls). No LibTorch.
//
//   qlt_gpu_bench [--kernel nf4|int4|adamw8bit|all] [--rows 4096] [--cols 11008]
//                 [--block 64] [--group 32] [--iters 200]
//   --kernel  nf4 (default): NF4 dequantize (bench_nf4_dequant.cpp); int4: INT4 dequantize
//             (bench_int4_dequant.cpp); adamw8bit: the fused 8-bit AdamW step
//             (bench_adamw_8bit.cpp); all: the three in that order
//   --block   NF4 block size; --group INT4 group size (32, 64, 128)
// (scripts/bench/gpu_nf4_dequant.sh runs it from a build directory.)
//
// Each timed kernel cycles over enough independent copies of its buffers to exceed 4x the L2
// cache, so its data comes from HBM as in training. Output: one line per measurement, the copy
// first ("cudaMemcpyDeviceToDevice", bytes read + written), then the kernel with its GB/s and
// the ratio to that copy's GB/s.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "bench_kernels.h"

namespace {

int64_t int_arg(int argc, char** argv, const char* name, int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::stoll(argv[i + 1]);
  }
  return fallback;
}

std::string string_arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string kernel = string_arg(argc, argv, "--kernel", "nf4");
  if (kernel != "nf4" && kernel != "int4" && kernel != "adamw8bit" && kernel != "all") {
    std::fprintf(stderr, "qlt_gpu_bench: --kernel %s is unknown; use nf4, int4, adamw8bit or all\n",
                 kernel.c_str());
    return 2;
  }
  const int64_t rows = int_arg(argc, argv, "--rows", 4096);
  const int64_t cols = int_arg(argc, argv, "--cols", 11008);
  const int block = static_cast<int>(int_arg(argc, argv, "--block", 64));
  const int group = static_cast<int>(int_arg(argc, argv, "--group", 32));

  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "qlt_gpu_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  QLT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  qlt::bench::BenchContext ctx;
  ctx.iters = static_cast<int>(int_arg(argc, argv, "--iters", 200));
  ctx.l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  std::printf("device: %s (sm_%d%d, %d SMs, L2 %d MiB), %d iterations\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, prop.l2CacheSize >> 20, ctx.iters);
  QLT_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
  try {
    if (kernel == "nf4" || kernel == "all")
      qlt::bench::bench_nf4_dequantize(ctx, rows, cols, block);
    if (kernel == "int4" || kernel == "all")
      qlt::bench::bench_int4_dequantize(ctx, rows, cols, group);
    if (kernel == "adamw8bit" || kernel == "all") qlt::bench::bench_adamw_8bit(ctx, rows, cols);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qlt_gpu_bench: %s\n", e.what());
    return 1;
  }
  QLT_CUDA_CHECK(cudaStreamDestroy(ctx.stream));
  return 0;
}
