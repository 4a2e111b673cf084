// NF4 dequantization (kernels.h: nf4_dequantize), the hot op: every forward and backward of a
// frozen NF4 weight runs it. bitsandbytes 0.50.2 CPU semantics (tests/fixtures/README.md,
// NF4 step 8 and double-quant step 5):
//   absmax[b] = dynamic_map[q[b]] * nested_absmax[b / 256], then + offset   (double quant)
//   out[i]    = cast_rne(codebook[code_i] * absmax[i / block_size])
//
// Memory-bound: per element it reads half a byte and writes 2 (bf16/fp16) or 4 (fp32)
// bytes. The fast kernel gives each thread 4-byte "units" (8 elements; a unit never crosses
// an NF4 block since block_size >= 32): one coalesced 32-bit load per unit, one 16-byte
// store per unit for 16-bit outputs (two for fp32), kUnroll units in flight per thread, grid-
// stride over the tensor. The codebook and the dynamic map live in shared memory, where the
// data-dependent indices of a warp are served in parallel (16 / 256 words, no bank
// conflicts for the codebook).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>

#include "kernel_utils.cuh"

namespace qlt::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;        // units per thread per grid-stride step
constexpr int kUnitElements = 8;  // one uint32 of packed codes
static_assert(kUnitElements <= nf4::kMinBlockSize, "a unit must not cross an NF4 block");

struct Nf4Tables {
  float codebook[nf4::kNumCodes];
  float dynamic_map[nf4::kDynamicMapSize];
};
constexpr Nf4Tables make_tables() {
  Nf4Tables t{};
  for (int i = 0; i < nf4::kNumCodes; ++i) t.codebook[i] = nf4::kCodebook[i];
  for (int i = 0; i < nf4::kDynamicMapSize; ++i) t.dynamic_map[i] = nf4::kDynamicMap[i];
  return t;
}
__constant__ Nf4Tables c_tables = make_tables();

// Kernel arguments (by value; the pointers are device pointers).
struct Params {
  const uint8_t* packed;        // [(n+1)/2]
  const float* absmax;          // [n_blocks] fp32 (no double quant)
  const uint8_t* absmax_codes;  // [n_blocks] (double quant)
  const float* nested_absmax;   // [ceil(n_blocks/256)] (double quant)
  float offset;
  int64_t n;
  int block_shift;  // log2(block_size)
};

// Shared copies of the tables; the dynamic map only for double quant.
template <bool kDQ>
struct SharedTables {
  float codebook[nf4::kNumCodes];
  float dynamic_map[kDQ ? nf4::kDynamicMapSize : 1];
};

template <bool kDQ>
__device__ __forceinline__ void load_tables(SharedTables<kDQ>& s) {
  const int t = static_cast<int>(threadIdx.x);
  if (t < nf4::kNumCodes) s.codebook[t] = c_tables.codebook[t];
  if constexpr (kDQ) {
    for (int i = t; i < nf4::kDynamicMapSize; i += blockDim.x) {
      s.dynamic_map[i] = c_tables.dynamic_map[i];
    }
  }
  __syncthreads();
}

// The fp32 absmax of NF4 block b: the stored value, or the double-quant reconstruction with
// two separately rounded operations (bnb: multiply, then `absmax += offset`).
template <bool kDQ>
__device__ __forceinline__ float block_absmax(const Params& p, const SharedTables<kDQ>& s,
                                              int64_t b) {
  if constexpr (kDQ) {
    const float scaled = __fmul_rn(s.dynamic_map[__ldg(p.absmax_codes + b)],
                                   __ldg(p.nested_absmax + b / nf4::kNestedBlockSize));
    return __fadd_rn(scaled, p.offset);
  } else {
    return __ldg(p.absmax + b);
  }
}

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

__device__ __forceinline__ uint32_t pack2(__half a, __half b) {
  const __half2 h = __halves2half2(a, b);  // a at the lower address
  uint32_t bits;
  memcpy(&bits, &h, sizeof(bits));
  return bits;
}
__device__ __forceinline__ uint32_t pack2(__nv_bfloat16 a, __nv_bfloat16 b) {
  const __nv_bfloat162 h = __halves2bfloat162(a, b);
  uint32_t bits;
  memcpy(&bits, &h, sizeof(bits));
  return bits;
}

// Stores 8 consecutive outputs at dst (16-byte aligned).
template <typename OutT>
__device__ __forceinline__ void store8(OutT* dst, const float (&v)[kUnitElements]) {
  if constexpr (sizeof(OutT) == 4) {
    float4* d = reinterpret_cast<float4*>(dst);
    d[0] = make_float4(v[0], v[1], v[2], v[3]);
    d[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    uint4 bits;
    bits.x = pack2(from_float<OutT>(v[0]), from_float<OutT>(v[1]));
    bits.y = pack2(from_float<OutT>(v[2]), from_float<OutT>(v[3]));
    bits.z = pack2(from_float<OutT>(v[4]), from_float<OutT>(v[5]));
    bits.w = pack2(from_float<OutT>(v[6]), from_float<OutT>(v[7]));
    *reinterpret_cast<uint4*>(dst) = bits;
  }
}

// Bytes [begin, end) of packed (elements 2j, 2j+1 of byte j), one byte per thread step,
// scalar stores: the fallback for unaligned pointers and the < 8-element tail.
template <typename OutT, bool kDQ>
__device__ __forceinline__ void dequantize_bytes(const Params& p, const SharedTables<kDQ>& s,
                                                 OutT* __restrict__ out, int64_t begin, int64_t end,
                                                 int64_t first, int64_t stride) {
  for (int64_t j = begin + first; j < end; j += stride) {
    const uint8_t byte = p.packed[j];
    const int64_t i = 2 * j;
    const float am = block_absmax<kDQ>(p, s, i >> p.block_shift);  // i, i+1 share a block
    out[i] = from_float<OutT>(__fmul_rn(s.codebook[nf4::nf4_high(byte)], am));
    if (i + 1 < p.n) out[i + 1] = from_float<OutT>(__fmul_rn(s.codebook[nf4::nf4_low(byte)], am));
  }
}

// Fast path. packed 4-byte aligned, out 16-byte aligned; out [n].
template <typename OutT, bool kDQ>
__global__ void __launch_bounds__(kThreads)
    nf4_dequantize_vec_kernel(Params p, OutT* __restrict__ out) {
  __shared__ SharedTables<kDQ> s;
  load_tables(s);

  const int64_t n_units = p.n / kUnitElements;  // whole units; the rest is the tail
  const uint32_t* __restrict__ units = reinterpret_cast<const uint32_t*>(p.packed);
  const int64_t tile = static_cast<int64_t>(kThreads) * kUnroll;
  for (int64_t base = blockIdx.x * tile + threadIdx.x; base < n_units;
       base += static_cast<int64_t>(gridDim.x) * tile) {
    // Issue all loads first (kUnroll independent 32-bit loads + their absmax) for memory-level
    // parallelism; consecutive threads read consecutive words (coalesced).
    uint32_t word[kUnroll] = {};
    float am[kUnroll] = {};
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t u = base + static_cast<int64_t>(k) * kThreads;
      if (u < n_units) {
        word[k] = __ldg(units + u);
        am[k] = block_absmax<kDQ>(p, s, (u * kUnitElements) >> p.block_shift);
      }
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t u = base + static_cast<int64_t>(k) * kThreads;
      if (u < n_units) {
        // Little-endian: byte j of the word is packed[4u + j] = elements 8u + 2j (high
        // nibble) and 8u + 2j + 1 (low nibble).
        float v[kUnitElements];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint32_t byte = (word[k] >> (8 * j)) & 0xFFu;
          v[2 * j] = __fmul_rn(s.codebook[byte >> 4], am[k]);
          v[2 * j + 1] = __fmul_rn(s.codebook[byte & 0xFu], am[k]);
        }
        store8(out + u * kUnitElements, v);
      }
    }
  }

  // Tail: the last n % 8 elements (at most 4 bytes), by the first threads of block 0.
  if (blockIdx.x == 0) {
    dequantize_bytes<OutT, kDQ>(p, s, out, n_units * (kUnitElements / 2),
                                nf4::nf4_packed_bytes(p.n), threadIdx.x, kThreads);
  }
}

// Any alignment: one byte per thread step.
template <typename OutT, bool kDQ>
__global__ void __launch_bounds__(kThreads)
    nf4_dequantize_scalar_kernel(Params p, OutT* __restrict__ out) {
  __shared__ SharedTables<kDQ> s;
  load_tables(s);
  dequantize_bytes<OutT, kDQ>(p, s, out, 0, nf4::nf4_packed_bytes(p.n),
                              static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x,
                              static_cast<int64_t>(gridDim.x) * kThreads);
}

template <typename OutT, bool kDQ>
void launch(const Params& p, void* out, cudaStream_t stream) {
  OutT* o = static_cast<OutT*>(out);
  const bool aligned =
      reinterpret_cast<uintptr_t>(p.packed) % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (aligned) {
    const int64_t units = p.n / kUnitElements;
    const int64_t tile = static_cast<int64_t>(kThreads) * kUnroll;
    const unsigned grid = detail::grid_for((units + tile - 1) / tile, kThreads);
    nf4_dequantize_vec_kernel<OutT, kDQ><<<grid, kThreads, 0, stream>>>(p, o);
  } else {
    const int64_t bytes = nf4::nf4_packed_bytes(p.n);
    const unsigned grid = detail::grid_for((bytes + kThreads - 1) / kThreads, kThreads);
    nf4_dequantize_scalar_kernel<OutT, kDQ><<<grid, kThreads, 0, stream>>>(p, o);
  }
  QLT_CUDA_CHECK(cudaGetLastError());
}

template <typename OutT>
void launch(const Params& p, bool double_quant, void* out, cudaStream_t stream) {
  if (double_quant) {
    launch<OutT, true>(p, out, stream);
  } else {
    launch<OutT, false>(p, out, stream);
  }
}

}  // namespace

void nf4_dequantize(const Nf4DeviceWeight& w, void* out, DType out_dtype, cudaStream_t stream) {
  constexpr const char* kOp = "nf4_dequantize";
  detail::check_block_size(kOp, w.block_size);
  detail::check_count(kOp, "n", w.n);
  if (w.n == 0) return;
  detail::check_pointer(kOp, "packed", w.packed);
  detail::check_pointer(kOp, "out", out);
  const bool double_quant = w.absmax_codes != nullptr;
  if (double_quant) {
    detail::check_pointer(kOp, "nested_absmax", w.nested_absmax);
    if (w.absmax != nullptr) {
      detail::invalid_argument(kOp,
                               "both absmax and absmax_codes are set; set absmax_codes "
                               "(+ nested_absmax, offset) for double quant, else absmax");
    }
  } else {
    detail::check_pointer(kOp, "absmax (or absmax_codes for double quant)", w.absmax);
  }

  const Params p{w.packed,
                 w.absmax,
                 w.absmax_codes,
                 w.nested_absmax,
                 w.offset,
                 w.n,
                 detail::log2_of_power_of_two(w.block_size)};
  switch (out_dtype) {
    case DType::kF32:
      return launch<float>(p, double_quant, out, stream);
    case DType::kF16:
      return launch<__half>(p, double_quant, out, stream);
    case DType::kBF16:
      return launch<__nv_bfloat16>(p, double_quant, out, stream);
  }
  detail::invalid_argument(kOp, "unknown out_dtype");
}

}  // namespace qlt::kernels
