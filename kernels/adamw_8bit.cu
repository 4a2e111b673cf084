// One fused 8-bit AdamW step of one parameter (kernels.h: adamw_8bit_update). CPU reference:
// src/optim/adamw_8bit.cpp update_8bit (bitsandbytes 0.50.2 AdamW8bit, CPU backend), whose tensor
// ops are LibTorch 2.11 CPU kernels. Per element, with the fp32 scalars of AdamW8bitScalars:
//   m  = signed_map[c1] * absmax1[b]                          dequantize: one rounding
//   v  = unsigned_map[c2] * absmax2[b]
//   m' = fma(g, 1-b1, m * b1)                                 m.mul_(b1).add_(g, 1-b1)
//   v' = fma((1-b2) * g, g, v * b2)                           v.mul_(b2).addcmul_(g, g, 1-b2)
//   d  = sqrt(v') / c2 + eps                                  (v.sqrt() / c2).add_(eps)
//   p' = p * decay + (step_size * m') / d                     p.mul_(decay); p.addcdiv_(m', d, s)
//   absmax1'[b] = max |m'| over the block, codes by bnb's LUT quantizer (blockwise_8bit.cpp)
// The roundings are the ones LibTorch's CPU kernels perform, found by experiment on an AVX-512
// CPU against LibTorch 2.11 (ATEN_CPU_CAPABILITY avx512 and avx2 alike): add_ with alpha is
// vec::fmadd(other, alpha, self), one FMA, also in the scalar tail; addcmul_ computes
// self + (value * t1) * t2 with the last multiply-add fused; addcdiv_ rounds (value * t1), the
// division and the sum separately; mul_ / div by a Scalar round the double to fp32 once and
// then round one product / quotient (no reciprocal). Each is an explicit _rn intrinsic here,
// so nvcc neither fuses nor splits them.
//
// The one op that is not exact: LibTorch's fp32 sqrt on the CPU is only faithfully rounded
// (1 ulp off the correctly rounded sqrt for ~17% of inputs, either direction), and the GPU's
// __fsqrt_rn is correctly rounded. sqrt only enters d, so m', v', both absmax and all codes are
// bit-identical; the parameter can differ by ~2 ulp of the update term, i.e. at most one
// rounding of p' (1 ulp of |p'|) per step. tests/gpu/test_adamw_8bit_kernel.cpp states the bound
// (METHODS.md §7).
//
// (ATEN_CPU_CAPABILITY=default, a CPU without AVX2, rounds add_ and addcmul_ without FMA; such
// a CPU would not match bitsandbytes' fixtures either.)
//
// Layout: one CUDA block of 64 threads per state block of 256 elements (grid-stride), each
// thread 4 consecutive elements: codes as one 32-bit load, param / grad as one 16-byte load
// when the pointers allow it (any cudaMalloc / caching-allocator buffer; other alignments and
// the partial last block take a scalar path with identical results). The maps (2 x 1 KiB) live
// in shared memory; the two 64 KiB LUTs are read through the read-only cache.
#include <cmath>

#include "kernel_utils.cuh"

namespace qlt::kernels {
namespace {

constexpr int kBlock = kAdamW8bitBlockSize;  // elements per absmax (bnb's fixed 256)
constexpr int kPerThread = 4;
constexpr int kThreads = kBlock / kPerThread;  // 64 = two warps
constexpr int kWarps = kThreads / 32;
static_assert(kThreads % 32 == 0, "whole warps per state block");

// The scalars as fp32, each rounded once from the double the reference passes to ATen.
struct Fp32Scalars {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, correction2, eps, decay, step_size;
};

// csrc/cpu_ops.cpp norm_to_lut_index as blockwise_8bit.cpp lut_bin compiles it
// (-ffp-contract=off): clamp, then (v + 1) * 0.5 * 65535 + 0.5 rounded op by op, truncated.
// A NaN input: x86's float->int conversion gives 0x80000000, whose low 16 bits are 0; CUDA's
// float->int gives 0; both index 0.
__device__ __forceinline__ int lut_bin(float v) {
  v = detail::clamp_unit(v);
  const float x = __fadd_rn(
      __fmul_rn(__fmul_rn(__fadd_rn(v, 1.0f), 0.5f), static_cast<float>(kAdamW8bitLutSize - 1)),
      0.5f);
  return static_cast<int>(static_cast<uint16_t>(static_cast<int>(x)));
}

// quantize_blockwise_8bit for one element of a block with absmax `a` and 1/a = `inv`.
__device__ __forceinline__ uint8_t quantize(float x, float a, float inv,
                                            const uint8_t* __restrict__ lut) {
  return a == 0.0f ? uint8_t{0} : __ldg(lut + lut_bin(__fmul_rn(x, inv)));
}

// Max over the block's 64 threads; every thread gets the result. s_max: [kWarps] scratch.
__device__ __forceinline__ float block_max(float a, float* s_max) {
  a = detail::warp_max(a);
  if ((threadIdx.x & 31) == 0) s_max[threadIdx.x >> 5] = a;
  __syncthreads();
  float r = s_max[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) r = detail::max_like_std(r, s_max[w]);
  return r;
}

// state: the parameter's buffers; n_blocks = ceil(n / 256). kVector: param / grad 16-byte and
// codes 4-byte aligned (checked by the launcher).
template <bool kVector>
__global__ void __launch_bounds__(kThreads)
    adamw_8bit_kernel(AdamW8bitState state, AdamW8bitTables tables, Fp32Scalars c,
                      int64_t n_blocks) {
  __shared__ float s_map1[kAdamW8bitMapSize];
  __shared__ float s_map2[kAdamW8bitMapSize];
  __shared__ float s_max1[kWarps];
  __shared__ float s_max2[kWarps];
  for (int j = static_cast<int>(threadIdx.x); j < kAdamW8bitMapSize; j += kThreads) {
    s_map1[j] = tables.signed_map[j];
    s_map2[j] = tables.unsigned_map[j];
  }
  __syncthreads();

  const int64_t n = state.n;
  for (int64_t b = blockIdx.x; b < n_blocks; b += gridDim.x) {
    const int64_t first = b * kBlock + threadIdx.x * kPerThread;
    const bool full = first + kPerThread <= n;
    float p[kPerThread], g[kPerThread];
    uint8_t q1[kPerThread], q2[kPerThread];
    if (kVector && full) {
      const float4 pv = *reinterpret_cast<const float4*>(state.param + first);
      const float4 gv = __ldg(reinterpret_cast<const float4*>(state.grad + first));
      const uchar4 c1 = *reinterpret_cast<const uchar4*>(state.state1 + first);
      const uchar4 c2 = *reinterpret_cast<const uchar4*>(state.state2 + first);
      p[0] = pv.x, p[1] = pv.y, p[2] = pv.z, p[3] = pv.w;
      g[0] = gv.x, g[1] = gv.y, g[2] = gv.z, g[3] = gv.w;
      q1[0] = c1.x, q1[1] = c1.y, q1[2] = c1.z, q1[3] = c1.w;
      q2[0] = c2.x, q2[1] = c2.y, q2[2] = c2.z, q2[3] = c2.w;
    } else {
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) {
        const bool in = first + k < n;
        p[k] = in ? state.param[first + k] : 0.0f;
        g[k] = in ? state.grad[first + k] : 0.0f;
        q1[k] = in ? state.state1[first + k] : uint8_t{0};
        q2[k] = in ? state.state2[first + k] : uint8_t{0};
      }
    }
    // Read before the block's thread 0 overwrites them (the __syncthreads in block_max
    // separates the two).
    const float absmax1 = state.absmax1[b], absmax2 = state.absmax2[b];

    float m[kPerThread], v[kPerThread];
    float local1 = 0.0f, local2 = 0.0f;  // lanes past n contribute 0, as in the reference
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const float m0 = __fmul_rn(s_map1[q1[k]], absmax1);
      const float v0 = __fmul_rn(s_map2[q2[k]], absmax2);
      m[k] = __fmaf_rn(g[k], c.one_minus_beta1, __fmul_rn(m0, c.beta1));
      v[k] = __fmaf_rn(__fmul_rn(c.one_minus_beta2, g[k]), g[k], __fmul_rn(v0, c.beta2));
      const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v[k]), c.correction2), c.eps);
      p[k] = __fadd_rn(__fmul_rn(p[k], c.decay), __fdiv_rn(__fmul_rn(c.step_size, m[k]), denom));
      if (first + k < n) {
        // std::max(running, |x|): a NaN never enters, so the reduction order is irrelevant.
        local1 = detail::max_like_std(local1, fabsf(m[k]));
        local2 = detail::max_like_std(local2, fabsf(v[k]));
      }
    }
    const float new_absmax1 = block_max(local1, s_max1);
    const float new_absmax2 = block_max(local2, s_max2);
    // The reference's 1.0f / absmax (unused when absmax is 0).
    const float inv1 = new_absmax1 == 0.0f ? 0.0f : __fdiv_rn(1.0f, new_absmax1);
    const float inv2 = new_absmax2 == 0.0f ? 0.0f : __fdiv_rn(1.0f, new_absmax2);
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      q1[k] = quantize(m[k], new_absmax1, inv1, tables.signed_lut);
      q2[k] = quantize(v[k], new_absmax2, inv2, tables.unsigned_lut);
    }

    if (kVector && full) {
      *reinterpret_cast<float4*>(state.param + first) = make_float4(p[0], p[1], p[2], p[3]);
      *reinterpret_cast<uchar4*>(state.state1 + first) = make_uchar4(q1[0], q1[1], q1[2], q1[3]);
      *reinterpret_cast<uchar4*>(state.state2 + first) = make_uchar4(q2[0], q2[1], q2[2], q2[3]);
    } else {
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) {
        if (first + k < n) {
          state.param[first + k] = p[k];
          state.state1[first + k] = q1[k];
          state.state2[first + k] = q2[k];
        }
      }
    }
    if (threadIdx.x == 0) {
      state.absmax1[b] = new_absmax1;
      state.absmax2[b] = new_absmax2;
    }
    __syncthreads();  // s_max1 / s_max2 are rewritten by the next iteration
  }
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// A scalar the kernel rounds to fp32: must be finite there.
float to_fp32(const char* op, const char* name, double value) {
  const float f = static_cast<float>(value);
  if (!std::isfinite(value) || !std::isfinite(f)) {
    detail::invalid_argument(op, std::string("scalars.") + name + " = " + std::to_string(value) +
                                     " is not a finite fp32 value");
  }
  return f;
}

}  // namespace

void adamw_8bit_update(const AdamW8bitState& state, const AdamW8bitTables& tables,
                       const AdamW8bitScalars& scalars, cudaStream_t stream) {
  constexpr const char* kOp = "adamw_8bit_update";
  detail::check_count(kOp, "state.n", state.n);
  // Static_cast<float>(double) rounds to nearest, as ATen's Scalar::to<float>.
  const Fp32Scalars c{to_fp32(kOp, "beta1", scalars.beta1),
                      to_fp32(kOp, "one_minus_beta1", scalars.one_minus_beta1),
                      to_fp32(kOp, "beta2", scalars.beta2),
                      to_fp32(kOp, "one_minus_beta2", scalars.one_minus_beta2),
                      to_fp32(kOp, "correction2", scalars.correction2),
                      to_fp32(kOp, "eps", scalars.eps),
                      to_fp32(kOp, "decay", scalars.decay),
                      to_fp32(kOp, "step_size", scalars.step_size)};
  if (!(c.correction2 > 0.0f)) {
    detail::invalid_argument(kOp, "scalars.correction2 = " + std::to_string(scalars.correction2) +
                                      " must be > 0: sqrt(1 - beta2^step) for a step >= 1");
  }
  if (state.n == 0) return;
  detail::check_pointer(kOp, "state.param", state.param);
  detail::check_pointer(kOp, "state.grad", state.grad);
  detail::check_pointer(kOp, "state.state1", state.state1);
  detail::check_pointer(kOp, "state.state2", state.state2);
  detail::check_pointer(kOp, "state.absmax1", state.absmax1);
  detail::check_pointer(kOp, "state.absmax2", state.absmax2);
  detail::check_pointer(kOp, "tables.signed_map", tables.signed_map);
  detail::check_pointer(kOp, "tables.signed_lut", tables.signed_lut);
  detail::check_pointer(kOp, "tables.unsigned_map", tables.unsigned_map);
  detail::check_pointer(kOp, "tables.unsigned_lut", tables.unsigned_lut);

  const int64_t n_blocks = (state.n + kBlock - 1) / kBlock;
  const unsigned grid = detail::grid_for(n_blocks, kThreads);
  const bool vector = aligned(state.param, 16) && aligned(state.grad, 16) &&
                      aligned(state.state1, 4) && aligned(state.state2, 4);
  if (vector) {
    adamw_8bit_kernel<true><<<grid, kThreads, 0, stream>>>(state, tables, c, n_blocks);
  } else {
    adamw_8bit_kernel<false><<<grid, kThreads, 0, stream>>>(state, tables, c, n_blocks);
  }
  QLT_CUDA_CHECK(cudaGetLastError());
}

}  // namespace qlt::kernels
