// Benchmark of kernels/nf4_dequantize: a 4096x11008 weight (a Llama-7B MLP projection) to
// bf16 (and fp16 / fp32, with and without double quant), timed with CUDA events over many
// iterations, next to cudaMemcpyDeviceToDevice measured in the same run. Bandwidth counts
// bytes read + written (packed + absmax tables + output; a copy of B bytes moves 2B).
//
//   qlt_gpu_bench [--rows 4096] [--cols 11008] [--block 64] [--iters 200]
// (scripts/bench/gpu_nf4_dequant.sh runs it from a build directory.)
//
// Each timed kernel cycles over enough independent copies of its buffers to exceed 4x the
// L2 cache, so the packed weight is read from HBM as in a real forward pass.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "kernels.h"
#include "nf4_layout.h"

namespace {

namespace k = qlt::kernels;
namespace nf4 = qlt::nf4;

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { QLT_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// Median milliseconds per call of `fn(i)` over `iters` calls (after a warm-up), measured in
// batches of 10 calls between two events.
float time_ms(const std::function<void(int)>& fn, int iters, cudaStream_t stream) {
  for (int i = 0; i < 10; ++i) fn(i);
  cudaEvent_t start, stop;
  QLT_CUDA_CHECK(cudaEventCreate(&start));
  QLT_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> per_call;
  constexpr int kBatch = 10;
  for (int b = 0; b < std::max(1, iters / kBatch); ++b) {
    QLT_CUDA_CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < kBatch; ++i) fn(b * kBatch + i);
    QLT_CUDA_CHECK(cudaEventRecord(stop, stream));
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

// One quantized weight on the device (random codes: dequantize's speed is data-independent).
struct Weight {
  std::unique_ptr<DeviceBuffer> packed, absmax, codes, nested, out;
  k::Nf4DeviceWeight view;
};

Weight make_weight(int64_t n, int block, bool dq, size_t out_bytes, std::mt19937& rng) {
  const int64_t n_blocks = nf4::num_blocks(n, block);
  const int64_t n_nested = nf4::num_blocks(n_blocks, nf4::kNestedBlockSize);
  Weight w;
  std::vector<uint8_t> bytes(static_cast<size_t>(std::max(nf4::nf4_packed_bytes(n), n_blocks)));
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(0.01f, 0.1f);
  w.packed = std::make_unique<DeviceBuffer>(nf4::nf4_packed_bytes(n));
  QLT_CUDA_CHECK(
      cudaMemcpy(w.packed->p, bytes.data(), nf4::nf4_packed_bytes(n), cudaMemcpyHostToDevice));
  w.view.packed = static_cast<const uint8_t*>(w.packed->p);
  w.view.n = n;
  w.view.block_size = block;
  if (dq) {
    std::vector<float> nested(static_cast<size_t>(n_nested));
    for (auto& v : nested) v = scale(rng);
    w.codes = std::make_unique<DeviceBuffer>(n_blocks);
    w.nested = std::make_unique<DeviceBuffer>(n_nested * sizeof(float));
    QLT_CUDA_CHECK(cudaMemcpy(w.codes->p, bytes.data(), n_blocks, cudaMemcpyHostToDevice));
    QLT_CUDA_CHECK(
        cudaMemcpy(w.nested->p, nested.data(), n_nested * sizeof(float), cudaMemcpyHostToDevice));
    w.view.absmax_codes = static_cast<const uint8_t*>(w.codes->p);
    w.view.nested_absmax = static_cast<const float*>(w.nested->p);
    w.view.offset = 0.05f;
  } else {
    std::vector<float> absmax(static_cast<size_t>(n_blocks));
    for (auto& v : absmax) v = scale(rng);
    w.absmax = std::make_unique<DeviceBuffer>(n_blocks * sizeof(float));
    QLT_CUDA_CHECK(
        cudaMemcpy(w.absmax->p, absmax.data(), n_blocks * sizeof(float), cudaMemcpyHostToDevice));
    w.view.absmax = static_cast<const float*>(w.absmax->p);
  }
  w.out = std::make_unique<DeviceBuffer>(out_bytes);
  return w;
}

int64_t arg(int argc, char** argv, const char* name, int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::stoll(argv[i + 1]);
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t rows = arg(argc, argv, "--rows", 4096), cols = arg(argc, argv, "--cols", 11008);
  const int block = static_cast<int>(arg(argc, argv, "--block", 64));
  const int iters = static_cast<int>(arg(argc, argv, "--iters", 200));
  const int64_t n = rows * cols;

  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "qlt_gpu_bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  QLT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs, L2 %d MiB)\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, prop.l2CacheSize >> 20);
  std::printf("weight: %lld x %lld = %lld elements, NF4 block %d, %d iterations\n",
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(n),
              block, iters);

  cudaStream_t stream;
  QLT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::mt19937 rng(1234);
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);

  // Reference: device-to-device copy of the bf16 output size, same cycling rule.
  {
    const size_t bytes = static_cast<size_t>(n) * 2;
    const int copies = static_cast<int>(std::max<size_t>(1, (4 * l2) / (2 * bytes) + 1));
    std::vector<std::unique_ptr<DeviceBuffer>> src, dst;
    for (int c = 0; c < copies; ++c) {
      src.push_back(std::make_unique<DeviceBuffer>(bytes));
      dst.push_back(std::make_unique<DeviceBuffer>(bytes));
      QLT_CUDA_CHECK(cudaMemsetAsync(src.back()->p, 1, bytes, stream));
    }
    QLT_CUDA_CHECK(cudaStreamSynchronize(stream));
    const float ms = time_ms(
        [&](int i) {
          QLT_CUDA_CHECK(cudaMemcpyAsync(dst[i % copies]->p, src[i % copies]->p, bytes,
                                         cudaMemcpyDeviceToDevice, stream));
        },
        iters, stream);
    std::printf("%-34s %9.1f us  %8.1f GB/s (read + write of %.1f MB)\n",
                "cudaMemcpyDeviceToDevice", ms * 1e3, 2.0 * bytes / (ms * 1e6), bytes / 1e6);
  }

  struct Config {
    const char* name;
    k::DType dtype;
    size_t out_size;
    bool dq;
  };
  const Config configs[] = {{"nf4 -> bf16, double quant", k::DType::kBF16, 2, true},
                            {"nf4 -> bf16, fp32 absmax", k::DType::kBF16, 2, false},
                            {"nf4 -> fp16, double quant", k::DType::kF16, 2, true},
                            {"nf4 -> fp32, double quant", k::DType::kF32, 4, true}};
  for (const Config& cfg : configs) {
    const int64_t n_blocks = nf4::num_blocks(n, block);
    const size_t out_bytes = static_cast<size_t>(n) * cfg.out_size;
    const size_t table_bytes =
        cfg.dq ? static_cast<size_t>(n_blocks) +
                     nf4::num_blocks(n_blocks, nf4::kNestedBlockSize) * sizeof(float)
               : static_cast<size_t>(n_blocks) * sizeof(float);
    const size_t moved = static_cast<size_t>(nf4::nf4_packed_bytes(n)) + table_bytes + out_bytes;
    const int copies = static_cast<int>(std::max<size_t>(1, (4 * l2) / moved + 1));
    std::vector<Weight> weights;
    for (int c = 0; c < copies; ++c)
      weights.push_back(make_weight(n, block, cfg.dq, out_bytes, rng));
    QLT_CUDA_CHECK(cudaDeviceSynchronize());  // the uploads have landed before timing
    const float ms = time_ms(
        [&](int i) {
          const Weight& w = weights[i % copies];
          k::nf4_dequantize(w.view, w.out->p, cfg.dtype, stream);
        },
        iters, stream);
    std::printf("%-34s %9.1f us  %8.1f GB/s (%.1f MB moved)\n", cfg.name, ms * 1e3,
                moved / (ms * 1e6), moved / 1e6);
  }
  QLT_CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}
