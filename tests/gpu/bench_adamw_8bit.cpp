// qlt_gpu_bench --kernel adamw8bit: one fused 8-bit AdamW step (kernels/adamw_8bit.cu) of a
// rows x cols fp32 parameter (default 4096x11008, a Llama-7B MLP projection trained in full:
// the largest single tensor an 8-bit optimizer updates). Bandwidth counts bytes read + written:
// param 4 + 4, grad 4, two code bytes in and out, two fp32 absmax per 256 elements in and out
// = 16 bytes + 16/256 per element. Each call is one real step: the state evolves in place.
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "bench_kernels.h"
#include "kernels.h"

namespace qlt::bench {
namespace {

namespace k = qlt::kernels;

// A sorted map and bnb's table for it (csrc/cpu_ops.cpp build_quantize_lut). The benchmark has
// no LibTorch, so the maps are evenly spaced instead of bnb's dynamic ones: the kernel's work
// per element (a shared-memory map read, a table read) is the same for any values.
void make_table(bool is_signed, std::vector<float>& map, std::vector<uint8_t>& lut) {
  map.resize(k::kAdamW8bitMapSize);
  for (int j = 0; j < k::kAdamW8bitMapSize; ++j)
    map[j] = is_signed ? -1.0f + 2.0f * j / 255.0f : j / 255.0f;
  lut.resize(k::kAdamW8bitLutSize);
  int code = 0;
  for (int i = 0; i < k::kAdamW8bitLutSize; ++i) {
    const float val = -1.0f + (2.0f * static_cast<float>(i)) / 65535.0f;
    while (code < 255 && 0.5f * (map[code] + map[code + 1]) < val) ++code;
    lut[i] = static_cast<uint8_t>(code);
  }
}

template <typename T>
std::unique_ptr<DeviceBuffer> upload(const std::vector<T>& host) {
  auto buf = std::make_unique<DeviceBuffer>(host.size() * sizeof(T));
  QLT_CUDA_CHECK(cudaMemcpy(buf->p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return buf;
}

// One parameter with its gradient and 8-bit state (random codes, absmax 0.01).
struct AdamBenchParam {
  std::unique_ptr<DeviceBuffer> param, grad, state1, state2, absmax1, absmax2;
  k::AdamW8bitState view;
};

AdamBenchParam make_adam_param(int64_t n, std::mt19937& rng) {
  const size_t un = static_cast<size_t>(n), blocks = (un + 255) / 256;
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> values(un);
  std::vector<uint8_t> codes(un);
  AdamBenchParam p;
  for (auto& v : values) v = normal(rng);
  p.param = upload(values);
  for (auto& v : values) v = 1e-3f * normal(rng);
  p.grad = upload(values);
  for (auto& c : codes) c = static_cast<uint8_t>(rng());
  p.state1 = upload(codes);
  for (auto& c : codes) c = static_cast<uint8_t>(rng());
  p.state2 = upload(codes);
  p.absmax1 = upload(std::vector<float>(blocks, 0.01f));
  p.absmax2 = upload(std::vector<float>(blocks, 0.01f));
  p.view = {static_cast<float*>(p.param->p),
            static_cast<const float*>(p.grad->p),
            static_cast<uint8_t*>(p.state1->p),
            static_cast<uint8_t*>(p.state2->p),
            static_cast<float*>(p.absmax1->p),
            static_cast<float*>(p.absmax2->p),
            n};
  return p;
}

}  // namespace

void bench_adamw_8bit(BenchContext& ctx, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  std::printf("adamw 8-bit update: %lld x %lld = %lld fp32 elements, state blocks of 256\n",
              static_cast<long long>(rows), static_cast<long long>(cols),
              static_cast<long long>(n));
  std::vector<float> signed_map, unsigned_map;
  std::vector<uint8_t> signed_lut, unsigned_lut;
  make_table(true, signed_map, signed_lut);
  make_table(false, unsigned_map, unsigned_lut);
  const auto d_smap = upload(signed_map), d_umap = upload(unsigned_map);
  const auto d_slut = upload(signed_lut), d_ulut = upload(unsigned_lut);
  const k::AdamW8bitTables tables{
      static_cast<const float*>(d_smap->p), static_cast<const uint8_t*>(d_slut->p),
      static_cast<const float*>(d_umap->p), static_cast<const uint8_t*>(d_ulut->p)};
  // Step 10 of lr 2e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 (scalars as
  // optim::adamw_8bit_scalars computes them).
  k::AdamW8bitScalars sc;
  sc.beta1 = 0.9;
  sc.one_minus_beta1 = 1.0 - 0.9;
  sc.beta2 = 0.999;
  sc.one_minus_beta2 = 1.0 - 0.999;
  sc.correction2 = std::sqrt(1.0 - std::pow(0.999, 10));
  sc.eps = 1e-8;
  sc.decay = 1.0 - 2e-4 * 0.01;
  sc.step_size = -2e-4 / (1.0 - std::pow(0.9, 10));

  const size_t blocks = static_cast<size_t>((n + 255) / 256);
  const size_t moved = static_cast<size_t>(n) * 16 + blocks * 16;
  const double copy_gbps = measure_copy(ctx, moved);
  const int copies = copies_for(ctx, moved);
  std::vector<AdamBenchParam> params;
  for (int c = 0; c < copies; ++c) params.push_back(make_adam_param(n, ctx.rng));
  QLT_CUDA_CHECK(cudaDeviceSynchronize());
  const float ms = time_ms(
      ctx, [&](int i) { k::adamw_8bit_update(params[i % copies].view, tables, sc, ctx.stream); });
  print_kernel_line("adamw 8-bit step (fp32 param)", ms, moved, copy_gbps);
}

}  // namespace qlt::bench
