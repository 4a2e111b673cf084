// Double quantization of the NF4 absmax values (kernels.h: nf4_double_quantize, and the test
// hook nf4_nested_lut). bitsandbytes 0.50.2 CPU semantics (tests/fixtures/README.md, "Double
// quant", step 3): per nested block of 256, a = max|absmax - offset|; a == 0 -> codes 0 and
// nested absmax 0; else v = clamp((absmax - offset) * (1/a), -1, 1) and
// code = lut[nested_lut_index(v)].
//
// The 64 KiB table lut[] is not stored: lut[i] is by definition the number of dynamic-map
// midpoints strictly below val_i = (2i / 65535) - 1 (nf4::build_nested_lut), so the kernel
// computes val_i with the same fp32 operations and binary-searches the 255 midpoints in
// shared memory (8 steps). Same bytes, no 64 KiB device table to allocate, copy and keep per
// device. nf4_nested_lut() exposes the device values so tests/gpu compares all 65536 entries.
//
// One 256-thread block per nested block (one thread per absmax value), grid-stride.
#include "kernel_utils.cuh"

namespace qlt::kernels {
namespace {

constexpr int kThreads = nf4::kNestedBlockSize;  // one thread per absmax value of a nested block
constexpr int kNumMidpoints = nf4::kDynamicMapSize - 1;
static_assert(kNumMidpoints == 255, "the 8-step search below assumes 2^8 - 1 midpoints");

// Dynamic-map midpoints (c[j] + c[j+1]) * 0.5f, as build_nested_lut computes them (compile
// time; fp32 sum of two floats then an exact halving).
struct DynamicMidpoints {
  float v[kNumMidpoints];
};
constexpr DynamicMidpoints make_dynamic_midpoints() {
  DynamicMidpoints m{};
  for (int j = 0; j < kNumMidpoints; ++j) {
    m.v[j] = (nf4::kDynamicMap[j] + nf4::kDynamicMap[j + 1]) * 0.5f;
  }
  return m;
}
__constant__ DynamicMidpoints c_dynamic_midpoints = make_dynamic_midpoints();

// Threads search with different indices; shared memory serves those in parallel where
// constant memory would serialize them.
__device__ __forceinline__ void load_midpoints(float* s_mid) {
  for (int j = static_cast<int>(threadIdx.x); j < kNumMidpoints; j += blockDim.x) {
    s_mid[j] = c_dynamic_midpoints.v[j];
  }
}

// lut[i]: the number of midpoints strictly below val_i = (2i / 65535) - 1, with the fp32
// roundings of build_nested_lut (2i is exact; one rounded division; one rounded subtraction).
// Lower bound over the sorted s_mid[0..255) in 8 fixed steps. Invariant: s_mid[pos - 1] < val
// (or pos == 0) and s_mid[pos + 2 * step - 1] >= val (or past the end); it ends with
// pos = the number of midpoints < val, in [0, 255].
__device__ __forceinline__ uint8_t nested_code_for_index(int i, const float* s_mid) {
  const float val = __fsub_rn(__fdiv_rn(2.0f * static_cast<float>(i), 65535.0f), 1.0f);
  int pos = 0;
#pragma unroll
  for (int step = 128; step > 0; step >>= 1) {
    if (s_mid[pos + step - 1] < val) pos += step;
  }
  return static_cast<uint8_t>(pos);
}

// absmax [n_blocks], codes [n_blocks], nested_absmax [ceil(n_blocks/256)].
__global__ void __launch_bounds__(kThreads)
    nf4_double_quantize_kernel(const float* __restrict__ absmax, int64_t n_blocks, float offset,
                               uint8_t* __restrict__ codes, float* __restrict__ nested_absmax) {
  __shared__ float s_mid[kNumMidpoints];
  __shared__ float s_warp_max[kThreads / 32];
  load_midpoints(s_mid);

  const int64_t n_nested = nf4::num_blocks(n_blocks, nf4::kNestedBlockSize);
  for (int64_t nb = blockIdx.x; nb < n_nested; nb += gridDim.x) {
    const int64_t i = nb * nf4::kNestedBlockSize + threadIdx.x;
    const bool valid = i < n_blocks;
    const float y = valid ? __fsub_rn(absmax[i], offset) : 0.0f;

    // a = max |y| over the nested block (0 from the padding lanes; max is exact, so the
    // reduction order does not matter). max(0, |y|) first drops a NaN |y| the way the
    // reference's running std::max does.
    const float warp_a = detail::warp_max(detail::max_like_std(0.0f, fabsf(y)));
    if ((threadIdx.x & 31) == 0) s_warp_max[threadIdx.x >> 5] = warp_a;
    __syncthreads();  // also publishes s_mid on the first iteration
    float a = s_warp_max[0];
#pragma unroll
    for (int w = 1; w < kThreads / 32; ++w) a = detail::max_like_std(a, s_warp_max[w]);

    if (threadIdx.x == 0) nested_absmax[nb] = a;
    if (valid) {
      uint8_t code = 0;  // an all-equal nested block (a == 0) codes everything as 0
      if (a != 0.0f) {
        const float inv = __fdiv_rn(1.0f, a);
        const float v = detail::clamp_unit(__fmul_rn(y, inv));
        code = nested_code_for_index(nf4::nested_lut_index(v), s_mid);
      }
      codes[i] = code;
    }
    __syncthreads();  // s_warp_max is rewritten by the next iteration
  }
}

// lut [65536]: the device's nested code for every table index (test hook).
__global__ void __launch_bounds__(kThreads) nf4_nested_lut_kernel(uint8_t* __restrict__ lut) {
  __shared__ float s_mid[kNumMidpoints];
  load_midpoints(s_mid);
  __syncthreads();
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < nf4::kNestedLutSize;
       i += static_cast<int>(gridDim.x * blockDim.x)) {
    lut[i] = nested_code_for_index(i, s_mid);
  }
}

}  // namespace

void nf4_double_quantize(const float* absmax, int64_t n_blocks, float offset, uint8_t* codes,
                         float* nested_absmax, cudaStream_t stream) {
  constexpr const char* kOp = "nf4_double_quantize";
  detail::check_count(kOp, "n_blocks", n_blocks);
  if (n_blocks == 0) return;
  detail::check_pointer(kOp, "absmax", absmax);
  detail::check_pointer(kOp, "codes", codes);
  detail::check_pointer(kOp, "nested_absmax", nested_absmax);
  const unsigned grid =
      detail::grid_for(nf4::num_blocks(n_blocks, nf4::kNestedBlockSize), kThreads);
  nf4_double_quantize_kernel<<<grid, kThreads, 0, stream>>>(absmax, n_blocks, offset, codes,
                                                            nested_absmax);
  QLT_CUDA_CHECK(cudaGetLastError());
}

void nf4_nested_lut(uint8_t* lut, cudaStream_t stream) {
  detail::check_pointer("nf4_nested_lut", "lut", lut);
  nf4_nested_lut_kernel<<<nf4::kNestedLutSize / kThreads, kThreads, 0, stream>>>(lut);
  QLT_CUDA_CHECK(cudaGetLastError());
}

}  // namespace qlt::kernels
