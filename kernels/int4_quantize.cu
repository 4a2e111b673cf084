// INT4 quantization (kernels.h: int4_quantize), run once per weight at load time. CPU
// reference: src/quant/int4.cpp (byte-identical to gguf's Q4_1 quantizer for groups of 32);
// semantics: kernels/int4_layout.h.
//
// One warp per group, grid-stride over groups. Lane l holds elements l + 32 i (i < G / 32;
// coalesced loads). Min and max are reduced over the warp in the layout's total order
// (-0 < +0, NaN propagating), so the tree order gives the same values as the CPU's
// sequential loop. d = (max - min) / 15, id = 1 / d (0 when d == 0), and
// q = trunc((x - min) * id + 0.5) with every operation an explicit _rn intrinsic (no FMA,
// IEEE division). Packing: byte j holds elements j and j + G/2; for G >= 64 both are in the
// same lane (l + 32 i and l + 32 (i + G/64)), for G == 32 lane l < 16 takes its partner from
// lane l + 16 with a shuffle.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "int4_layout.h"
#include "kernel_utils.cuh"

namespace qlt::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

// The layout's total-order min / max (see int4_layout.h; src/quant/int4.cpp min_total).
__device__ __forceinline__ float min_total(float a, float b) {
  if (isnan(a)) return a;
  if (isnan(b)) return b;
  if (a != b) return a < b ? a : b;
  return signbit(a) ? a : b;
}
__device__ __forceinline__ float max_total(float a, float b) {
  if (isnan(a)) return a;
  if (isnan(b)) return b;
  if (a != b) return a > b ? a : b;
  return signbit(a) ? b : a;
}

// q of one value: three roundings, truncation; NaN / +inf (outside [0, 16)) -> 0.
__device__ __forceinline__ uint32_t code_of(float x, float mn, float id) {
  const float v = __fadd_rn(__fmul_rn(__fsub_rn(x, mn), id), 0.5f);
  return (v >= 0.0f && v < 16.0f) ? static_cast<uint32_t>(v) : 0u;
}

template <typename InT, int G>
__global__ void __launch_bounds__(kThreads)
    int4_quantize_kernel(const InT* __restrict__ x, int64_t n_groups,
                         uint8_t* __restrict__ blocks) {
  constexpr int kPerLane = G / 32;
  constexpr int64_t kBlockBytes = int4::block_bytes(G);
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int64_t n_warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t g = warp; g < n_groups; g += n_warps) {  // uniform per warp: shuffles are safe
    const InT* xg = x + g * G;
    float v[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) v[i] = detail::to_float(xg[lane + 32 * i]);
    float mn = v[0], mx = v[0];
#pragma unroll
    for (int i = 1; i < kPerLane; ++i) {
      mn = min_total(mn, v[i]);
      mx = max_total(mx, v[i]);
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      mn = min_total(mn, __shfl_xor_sync(0xffffffffu, mn, offset));
      mx = max_total(mx, __shfl_xor_sync(0xffffffffu, mx, offset));
    }
    const float d = __fdiv_rn(__fsub_rn(mx, mn), 15.0f);
    const float id = d == 0.0f ? 0.0f : __fdiv_rn(1.0f, d);
    uint32_t q[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) q[i] = code_of(v[i], mn, id);

    uint8_t* block = blocks + g * kBlockBytes;
    uint8_t* qs = block + int4::kQsOffset;
    if constexpr (G == 32) {
      const uint32_t partner = __shfl_down_sync(0xffffffffu, q[0], 16);
      if (lane < 16) qs[lane] = static_cast<uint8_t>(q[0] | (partner << 4));
    } else {
      constexpr int kPairs = G / 64;  // bytes per lane
#pragma unroll
      for (int i = 0; i < kPairs; ++i) {
        qs[lane + 32 * i] = static_cast<uint8_t>(q[i] | (q[i + kPairs] << 4));
      }
    }
    if (lane == 0) {
      // fp16 round to nearest even (finite values as the CPU's fp32_to_fp16; a NaN keeps
      // NaN-ness, not necessarily its payload).
      const unsigned short d16 = __half_as_ushort(__float2half_rn(d));
      const unsigned short m16 = __half_as_ushort(__float2half_rn(mn));
      block[int4::kDOffset] = static_cast<uint8_t>(d16 & 0xFFu);
      block[int4::kDOffset + 1] = static_cast<uint8_t>(d16 >> 8);
      block[int4::kMOffset] = static_cast<uint8_t>(m16 & 0xFFu);
      block[int4::kMOffset + 1] = static_cast<uint8_t>(m16 >> 8);
    }
  }
}

template <typename InT, int G>
void launch(const void* x, int64_t n_groups, uint8_t* blocks, cudaStream_t stream) {
  const unsigned grid =
      detail::grid_for((n_groups + kWarpsPerBlock - 1) / kWarpsPerBlock, kThreads);
  int4_quantize_kernel<InT, G>
      <<<grid, kThreads, 0, stream>>>(static_cast<const InT*>(x), n_groups, blocks);
  QLT_CUDA_CHECK(cudaGetLastError());
}

template <typename InT>
void launch(const void* x, int64_t n_groups, int group_size, uint8_t* blocks, cudaStream_t stream) {
  switch (group_size) {
    case 32:
      return launch<InT, 32>(x, n_groups, blocks, stream);
    case 64:
      return launch<InT, 64>(x, n_groups, blocks, stream);
    default:
      return launch<InT, 128>(x, n_groups, blocks, stream);
  }
}

}  // namespace

void int4_quantize(const void* x, DType dtype, int64_t n_groups, int group_size, uint8_t* blocks,
                   cudaStream_t stream) {
  constexpr const char* kOp = "int4_quantize";
  if (!int4::valid_group_size(group_size)) {
    detail::invalid_argument(kOp,
                             "group_size " + std::to_string(group_size) + " is not 32, 64 or 128");
  }
  detail::check_count(kOp, "n_groups", n_groups);
  if (n_groups == 0) return;
  detail::check_pointer(kOp, "x", x);
  detail::check_pointer(kOp, "blocks", blocks);
  switch (dtype) {
    case DType::kF32:
      return launch<float>(x, n_groups, group_size, blocks, stream);
    case DType::kF16:
      return launch<__half>(x, n_groups, group_size, blocks, stream);
    case DType::kBF16:
      return launch<__nv_bfloat16>(x, n_groups, group_size, blocks, stream);
  }
  detail::invalid_argument(kOp, "unknown dtype");
}

}  // namespace qlt::kernels
