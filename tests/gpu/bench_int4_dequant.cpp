// qlt_gpu_bench --kernel int4: kernels/int4_dequantize of a rows x cols weight in groups of
// `group` (GGUF Q4_1-shaped blocks) to bf16 / fp16 / fp32. Bandwidth counts bytes read +
// written: blocks (fp16 d, fp16 m, codes) + output.
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_kernels.h"
#include "int4_layout.h"
#include "kernels.h"

namespace qlt::bench {
namespace {

namespace k = qlt::kernels;

// Random codes; every group's d and m are small finite fp16 values (dequantize's speed does not
// depend on them, but NaN / inf would make the output meaningless).
std::unique_ptr<DeviceBuffer> make_int4_blocks(int64_t n_groups, int group, std::mt19937& rng) {
  const size_t block = static_cast<size_t>(int4::block_bytes(group));
  std::vector<uint8_t> bytes(static_cast<size_t>(n_groups) * block);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  const uint16_t d = 0x2E66, m = 0xAE66;  // fp16 0.1 and -0.1
  for (int64_t g = 0; g < n_groups; ++g) {
    std::memcpy(&bytes[static_cast<size_t>(g) * block + int4::kDOffset], &d, 2);
    std::memcpy(&bytes[static_cast<size_t>(g) * block + int4::kMOffset], &m, 2);
  }
  auto buf = std::make_unique<DeviceBuffer>(bytes.size());
  QLT_CUDA_CHECK(cudaMemcpy(buf->p, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  return buf;
}

}  // namespace

void bench_int4_dequantize(BenchContext& ctx, int64_t rows, int64_t cols, int group) {
  if (!int4::valid_group_size(group) || cols % group != 0) {
    throw std::invalid_argument("--group " + std::to_string(group) +
                                ": must be 32, 64 or 128 and divide --cols " +
                                std::to_string(cols));
  }
  const int64_t n = rows * cols, n_groups = n / group;
  std::printf("int4 dequantize: %lld x %lld = %lld elements, group %d\n",
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(n),
              group);
  struct Config {
    const char* name;
    k::DType dtype;
    size_t out_size;
  };
  const Config configs[] = {{"int4 -> bf16", k::DType::kBF16, 2},
                            {"int4 -> fp16", k::DType::kF16, 2},
                            {"int4 -> fp32", k::DType::kF32, 4}};
  for (const Config& cfg : configs) {
    const size_t block_bytes = static_cast<size_t>(n_groups * int4::block_bytes(group));
    const size_t out_bytes = static_cast<size_t>(n) * cfg.out_size;
    const size_t moved = block_bytes + out_bytes;
    const double copy_gbps = measure_copy(ctx, moved);
    const int copies = copies_for(ctx, moved);
    std::vector<std::unique_ptr<DeviceBuffer>> blocks, outs;
    for (int c = 0; c < copies; ++c) {
      blocks.push_back(make_int4_blocks(n_groups, group, ctx.rng));
      outs.push_back(std::make_unique<DeviceBuffer>(out_bytes));
    }
    QLT_CUDA_CHECK(cudaDeviceSynchronize());
    const float ms = time_ms(ctx, [&](int i) {
      k::int4_dequantize(static_cast<const uint8_t*>(blocks[i % copies]->p), n_groups, group,
                         outs[i % copies]->p, cfg.dtype, ctx.stream);
    });
    print_kernel_line(cfg.name, ms, moved, copy_gbps);
  }
}

}  // namespace qlt::bench
