// INT4 dequantization (kernels.h: int4_dequantize), run for every forward and backward of a
// frozen INT4 weight. CPU reference: src/quant/int4.cpp; semantics: kernels/int4_layout.h:
//   out[g * G + j]       = cast_rne(d * lo(qs[j]) + m)     j < G/2
//   out[g * G + j + G/2] = cast_rne(d * hi(qs[j]) + m)
// with d, m the block's fp16 values widened exactly, one __fmul_rn and one __fadd_rn (never
// fused), as numpy's (d * qs) + m in gguf.quants.
//
// Memory-bound: per element half a byte of codes (+ 4 header bytes per group) in, 2 or 4
// bytes out. The fast path gives each thread step one 32-bit word of a block's codes (8
// elements: 4 consecutive low nibbles at j..j+3 and 4 high nibbles at j+G/2..j+G/2+3), read
// with the block's (d, m) as two 32-bit loads; the two runs of 4 outputs are stored as one
// 16-byte (fp32) or 8-byte (fp16/bf16) store each. It needs the blocks 4-byte aligned (every
// block size is a multiple of 4) and the output 16-byte aligned (then j multiple of 4 keeps
// every store aligned). Any other alignment takes a scalar path, one code byte per step, with
// identical results.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>

#include "int4_layout.h"
#include "kernel_utils.cuh"

namespace qlt::kernels {
namespace {

constexpr int kThreads = 256;

// Round-to-nearest-even casts from fp32, like c10::BFloat16 / c10::Half on the CPU.
template <typename OutT>
__device__ __forceinline__ OutT from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
__device__ __forceinline__ uint32_t bits16(T v) {
  uint16_t b;
  memcpy(&b, &v, sizeof(b));
  return b;
}

// d * q + m with two roundings.
__device__ __forceinline__ float dq(float d, uint32_t q, float m) {
  return __fadd_rn(__fmul_rn(d, static_cast<float>(q)), m);
}

__device__ __forceinline__ float half_bits_to_float(uint32_t bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}

// Stores v[0..3] at dst (16-byte aligned for fp32, 8-byte aligned for 16-bit types).
template <typename OutT>
__device__ __forceinline__ void store4(OutT* dst, const float (&v)[4]) {
  if constexpr (sizeof(OutT) == 4) {
    *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    uint2 bits;
    bits.x = bits16(from_float<OutT>(v[0])) | (bits16(from_float<OutT>(v[1])) << 16);
    bits.y = bits16(from_float<OutT>(v[2])) | (bits16(from_float<OutT>(v[3])) << 16);
    *reinterpret_cast<uint2*>(dst) = bits;
  }
}

// Fast path: blocks 4-byte aligned, out 16-byte aligned. Work item i = (group i / W, word
// i % W) with W = G / 8 code words per block.
template <typename OutT, int G>
__global__ void __launch_bounds__(kThreads)
    int4_dequantize_vec_kernel(const uint8_t* __restrict__ blocks, int64_t n_groups,
                               OutT* __restrict__ out) {
  constexpr int kWords = G / 8;
  constexpr int64_t kBlockBytes = int4::block_bytes(G);
  const int64_t n_items = n_groups * kWords;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n_items;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t g = i / kWords;
    const int w = static_cast<int>(i % kWords);
    const uint8_t* block = blocks + g * kBlockBytes;
    const uint32_t header = __ldg(reinterpret_cast<const uint32_t*>(block));  // d | m << 16
    const uint32_t word = __ldg(reinterpret_cast<const uint32_t*>(block + int4::kQsOffset) + w);
    const float d = half_bits_to_float(header & 0xFFFFu);
    const float m = half_bits_to_float(header >> 16);
    float lo[4], hi[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t byte = (word >> (8 * k)) & 0xFFu;  // little-endian: qs[4w + k]
      lo[k] = dq(d, byte & 0xFu, m);
      hi[k] = dq(d, byte >> 4, m);
    }
    OutT* y = out + g * G + 4 * w;
    store4(y, lo);
    store4(y + G / 2, hi);
  }
}

// Any alignment: one code byte (two outputs) per step.
template <typename OutT, int G>
__global__ void __launch_bounds__(kThreads)
    int4_dequantize_scalar_kernel(const uint8_t* __restrict__ blocks, int64_t n_groups,
                                  OutT* __restrict__ out) {
  constexpr int kHalf = G / 2;
  constexpr int64_t kBlockBytes = int4::block_bytes(G);
  const int64_t n_items = n_groups * kHalf;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n_items;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t g = i / kHalf;
    const int j = static_cast<int>(i % kHalf);
    const uint8_t* block = blocks + g * kBlockBytes;
    const float d = half_bits_to_float(block[int4::kDOffset] | (block[int4::kDOffset + 1] << 8));
    const float m = half_bits_to_float(block[int4::kMOffset] | (block[int4::kMOffset + 1] << 8));
    const uint32_t byte = block[int4::kQsOffset + j];
    out[g * G + j] = from_float<OutT>(dq(d, byte & 0xFu, m));
    out[g * G + j + kHalf] = from_float<OutT>(dq(d, byte >> 4, m));
  }
}

template <typename OutT, int G>
void launch(const uint8_t* blocks, int64_t n_groups, void* out, cudaStream_t stream) {
  OutT* o = static_cast<OutT*>(out);
  const bool aligned =
      reinterpret_cast<uintptr_t>(blocks) % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (aligned) {
    const int64_t items = n_groups * (G / 8);
    const unsigned grid = detail::grid_for((items + kThreads - 1) / kThreads, kThreads);
    int4_dequantize_vec_kernel<OutT, G><<<grid, kThreads, 0, stream>>>(blocks, n_groups, o);
  } else {
    const int64_t items = n_groups * (G / 2);
    const unsigned grid = detail::grid_for((items + kThreads - 1) / kThreads, kThreads);
    int4_dequantize_scalar_kernel<OutT, G><<<grid, kThreads, 0, stream>>>(blocks, n_groups, o);
  }
  QLT_CUDA_CHECK(cudaGetLastError());
}

template <typename OutT>
void launch(const uint8_t* blocks, int64_t n_groups, int group_size, void* out,
            cudaStream_t stream) {
  switch (group_size) {
    case 32:
      return launch<OutT, 32>(blocks, n_groups, out, stream);
    case 64:
      return launch<OutT, 64>(blocks, n_groups, out, stream);
    default:
      return launch<OutT, 128>(blocks, n_groups, out, stream);
  }
}

}  // namespace

void int4_dequantize(const uint8_t* blocks, int64_t n_groups, int group_size, void* out,
                     DType out_dtype, cudaStream_t stream) {
  constexpr const char* kOp = "int4_dequantize";
  if (!int4::valid_group_size(group_size)) {
    detail::invalid_argument(kOp,
                             "group_size " + std::to_string(group_size) + " is not 32, 64 or 128");
  }
  detail::check_count(kOp, "n_groups", n_groups);
  if (n_groups == 0) return;
  detail::check_pointer(kOp, "blocks", blocks);
  detail::check_pointer(kOp, "out", out);
  switch (out_dtype) {
    case DType::kF32:
      return launch<float>(blocks, n_groups, group_size, out, stream);
    case DType::kF16:
      return launch<__half>(blocks, n_groups, group_size, out, stream);
    case DType::kBF16:
      return launch<__nv_bfloat16>(blocks, n_groups, group_size, out, stream);
  }
  detail::invalid_argument(kOp, "unknown out_dtype");
}

}  // namespace qlt::kernels
