// qlt_gpu_bench --kernel nf4: kernels/nf4_dequantize of a rows x cols weight (default
// 4096x11008, a Llama-7B MLP projection) to bf16 (and fp16 / fp32, with and without double
// quant). Bandwidth counts bytes read + written: packed + absmax tables + output.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "bench_kernels.h"
#include "kernels.h"
#include "nf4_layout.h"

namespace qlt::bench {
namespace {

namespace k = qlt::kernels;

// One quantized weight on the device (random codes: dequantize's speed is data-independent).
struct Nf4BenchWeight {
  std::unique_ptr<DeviceBuffer> packed, absmax, codes, nested, out;
  k::Nf4DeviceWeight view;
};

Nf4BenchWeight make_nf4_weight(int64_t n, int block, bool dq, size_t out_bytes, std::mt19937& rng) {
  const int64_t n_blocks = nf4::num_blocks(n, block);
  const int64_t n_nested = nf4::num_blocks(n_blocks, nf4::kNestedBlockSize);
  Nf4BenchWeight w;
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

}  // namespace

void bench_nf4_dequantize(BenchContext& ctx, int64_t rows, int64_t cols, int block) {
  const int64_t n = rows * cols;
  std::printf("nf4 dequantize: %lld x %lld = %lld elements, NF4 block %d\n",
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(n),
              block);
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
    const double copy_gbps = measure_copy(ctx, moved);
    const int copies = copies_for(ctx, moved);
    std::vector<Nf4BenchWeight> weights;
    for (int c = 0; c < copies; ++c)
      weights.push_back(make_nf4_weight(n, block, cfg.dq, out_bytes, ctx.rng));
    QLT_CUDA_CHECK(cudaDeviceSynchronize());  // the uploads have landed before timing
    const float ms = time_ms(ctx, [&](int i) {
      const Nf4BenchWeight& w = weights[i % copies];
      k::nf4_dequantize(w.view, w.out->p, cfg.dtype, ctx.stream);
    });
    print_kernel_line(cfg.name, ms, moved, copy_gbps);
  }
}

}  // namespace qlt::bench
