// NF4 first-level quantization (kernels.h: nf4_quantize). bitsandbytes 0.50.2 CPU semantics:
// tests/fixtures/README.md, steps 1-7 of "NF4 (first level)".
//
// One warp per quantization block (grid-stride over blocks): a first pass reduces max|x|
// over the block, a second pass codes element pairs and writes one packed byte per pair.
// Blocks hold 32..4096 elements (16..2048 bytes), so the second pass reads the block again
// from L1/L2. Quantization runs once per weight at load time; the hot kernel is dequantize.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernel_utils.cuh"

namespace qlt::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

// The 15 NF4 midpoints (nf4::nf4_midpoint, evaluated at compile time). Every lane reads the
// same index in the same step, so constant memory broadcasts.
struct Nf4Midpoints {
  float v[nf4::kNumCodes - 1];
};
constexpr Nf4Midpoints make_nf4_midpoints() {
  Nf4Midpoints m{};
  for (int i = 0; i < nf4::kNumCodes - 1; ++i) m.v[i] = nf4::nf4_midpoint(i);
  return m;
}
__constant__ Nf4Midpoints c_nf4_midpoints = make_nf4_midpoints();

// Number of midpoints strictly below v (torch.bucketize in bnb): on a midpoint -> lower code.
__device__ __forceinline__ uint8_t nf4_code(float v) {
  int code = 0;
#pragma unroll
  for (int i = 0; i < nf4::kNumCodes - 1; ++i) code += c_nf4_midpoints.v[i] < v ? 1 : 0;
  return static_cast<uint8_t>(code);
}

// The code of x in a block: full blocks multiply by the reciprocal, the partial last block
// divides (bnb's two code paths; they differ in the last ulp, fixture case j).
__device__ __forceinline__ uint8_t code_of(float x, bool full, float inv, float clamped) {
  const float scaled = full ? __fmul_rn(x, inv) : __fdiv_rn(x, clamped);
  return nf4_code(detail::clamp_unit(scaled));
}

// x [n], packed [(n+1)/2], absmax [n_blocks]. block_size is even (>= 32), so every block
// starts on a byte boundary: block b owns bytes [b*block_size/2, ...).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    nf4_quantize_kernel(const T* __restrict__ x, int64_t n, int block_size, int64_t n_blocks,
                        uint8_t* __restrict__ packed, float* __restrict__ absmax) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) >> 5;
  const int64_t n_warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;

  // b is the same for all lanes of a warp, so the shuffles in warp_max see every lane.
  for (int64_t b = warp; b < n_blocks; b += n_warps) {
    const int64_t start = b * block_size;
    const int64_t end = n < start + block_size ? n : start + block_size;

    float a = 0.0f;  // max|x|, starting from 0 like the reference
    for (int64_t i = start + lane; i < end; i += 32) {
      a = detail::max_like_std(a, fabsf(detail::to_float(x[i])));
    }
    a = detail::warp_max(a);

    const bool full = end - start == block_size;
    const float clamped = detail::max_like_std(a, nf4::kMinAbsmax);
    const float inv = __fdiv_rn(1.0f, clamped);  // correctly rounded, as 1.0f / x on the CPU
    for (int64_t i = start + 2 * lane; i < end; i += 64) {
      const uint8_t hi = code_of(detail::to_float(x[i]), full, inv, clamped);
      // Odd n: the last byte's low nibble is the pad value 0.0, code 7.
      const uint8_t lo =
          i + 1 < end ? code_of(detail::to_float(x[i + 1]), full, inv, clamped) : uint8_t{7};
      packed[i / 2] = nf4::pack_nf4(hi, lo);
    }
    if (lane == 0) absmax[b] = full ? a : clamped;
  }
}

template <typename T>
void launch(const void* x, int64_t n, int block_size, uint8_t* packed, float* absmax,
            cudaStream_t stream) {
  const int64_t n_blocks = nf4::num_blocks(n, block_size);
  const unsigned grid =
      detail::grid_for((n_blocks + kWarpsPerBlock - 1) / kWarpsPerBlock, kThreads);
  nf4_quantize_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(x), n, block_size,
                                                        n_blocks, packed, absmax);
  QLT_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void nf4_quantize(const void* x, DType dtype, int64_t n, int block_size, uint8_t* packed,
                  float* absmax, cudaStream_t stream) {
  constexpr const char* kOp = "nf4_quantize";
  detail::check_block_size(kOp, block_size);
  detail::check_count(kOp, "n", n);
  if (n == 0) return;
  detail::check_pointer(kOp, "x", x);
  detail::check_pointer(kOp, "packed", packed);
  detail::check_pointer(kOp, "absmax", absmax);
  switch (dtype) {
    case DType::kF32:
      return launch<float>(x, n, block_size, packed, absmax, stream);
    case DType::kF16:
      return launch<__half>(x, n, block_size, packed, absmax, stream);
    case DType::kBF16:
      return launch<__nv_bfloat16>(x, n, block_size, packed, absmax, stream);
  }
  detail::invalid_argument(kOp, "unknown dtype");
}

}  // namespace qlt::kernels
