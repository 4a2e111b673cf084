// The CUDA kernels of qlora-train as a plain C++ API on raw device pointers and a
// cudaStream_t. No LibTorch here, so kernels/ compiles with nvcc on machines without a GPU;
// src/quant/nf4_cuda.cpp adapts these calls to at::Tensor (DESIGN.md §2, §6).
//
// Semantics: bitsandbytes 0.50.2 on the CPU, bit for bit (kernels/nf4_layout.h,
// tests/fixtures/README.md "bitsandbytes 0.50.2 NF4 algorithm on the CPU"); the CPU reference
// is src/quant/nf4.cpp and tests/gpu/ compares the two exactly.
//
// Conventions of every function below:
//   - all pointers are device pointers (or managed memory); element counts are int64;
//   - work is enqueued on `stream` and nothing synchronizes; the caller owns all buffers;
//   - invalid arguments (block size not a power of two in [32, 4096], negative counts, null
//     pointers when there is work to do) throw std::invalid_argument naming the function;
//   - CUDA errors throw std::runtime_error "file:line: expression: error" (cuda_check.h);
//   - n == 0 is a no-op (null pointers are then allowed).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace qlt::kernels {

// Floating-point element types of inputs and outputs.
enum class DType { kF32, kF16, kBF16 };

// First-level NF4 quantization of a flat tensor.
//   x       [n] of `dtype` (fp32 / fp16 / bf16), the weight flattened row-major
//   packed  [(n+1)/2] uint8: byte j = (code[2j] << 4) | code[2j+1]; for odd n the last low
//           nibble is the pad code 7 (0.0)
//   absmax  [ceil(n/block_size)] fp32: max|x| per block; full blocks store it unclamped (0 for
//           an all-zero block), the partial last block stores max(max|x|, 1e-38f)
// Full blocks normalize with x * (1/absmax), the partial last block with a true division.
void nf4_quantize(const void* x, DType dtype, int64_t n, int block_size, uint8_t* packed,
                  float* absmax, cudaStream_t stream);

// Double quantization of the first-level absmax (bitsandbytes compress_statistics).
//   absmax         [n_blocks] fp32 (output of nf4_quantize)
//   offset         mean(absmax), computed by the caller: bnb's value is LibTorch's fp32 mean
//                  on the CPU, whose summation order a device reduction would not reproduce
//   codes          [n_blocks] uint8: signed 8-bit dynamic-map codes of absmax - offset
//   nested_absmax  [ceil(n_blocks/256)] fp32: max|absmax - offset| per nested block of 256
void nf4_double_quantize(const float* absmax, int64_t n_blocks, float offset, uint8_t* codes,
                         float* nested_absmax, cudaStream_t stream);

// A quantized weight on the device, as nf4_quantize (+ nf4_double_quantize) produce it.
// Without double quant set `absmax`; with it set `absmax_codes`, `nested_absmax` and `offset`
// (absmax_codes != nullptr selects double quant; exactly one of absmax / absmax_codes).
struct Nf4DeviceWeight {
  const uint8_t* packed = nullptr;        // [(n+1)/2] uint8, two codes per byte
  const float* absmax = nullptr;          // [n_blocks] fp32 (no double quant)
  const uint8_t* absmax_codes = nullptr;  // [n_blocks] uint8 (double quant)
  const float* nested_absmax = nullptr;   // [ceil(n_blocks/256)] fp32 (double quant)
  float offset = 0.0f;                    // mean of the absmax values (double quant)
  int64_t n = 0;                          // number of weight elements
  int block_size = 64;                    // power of two in [32, 4096]
};

// Dequantization: out[i] = cast(codebook[code_i] * absmax[i / block_size]), one fp32
// multiply and one round-to-nearest-even cast; with double quant
// absmax[b] = dynamic_map[codes[b]] * nested_absmax[b / 256], then + offset (two roundings,
// no FMA).
//   out  [n] of `out_dtype`
// Fast path when packed is 4-byte and out 16-byte aligned (any cudaMalloc / caching-allocator
// buffer); other alignments take a slower scalar path with identical results.
void nf4_dequantize(const Nf4DeviceWeight& weight, void* out, DType out_dtype, cudaStream_t stream);

// The nested code table as the device computes it: lut[i] = number of dynamic-map midpoints
// strictly below (2i / 65535) - 1, i in [0, 65536). nf4_double_quantize uses the same device
// function; tests compare this with nf4::build_nested_lut.
//   lut  [65536] uint8
void nf4_nested_lut(uint8_t* lut, cudaStream_t stream);

// ---- INT4 with asymmetric groups (GGUF Q4_1 blocks for groups of 32) ---------------------
// Semantics: kernels/int4_layout.h (the `gguf` package's Q4_1 quantizer and dequantizer, bit
// for bit); the CPU reference is src/quant/int4.cpp and tests/gpu/test_int4_kernels.cpp
// compares the two exactly. group_size must be 32, 64 or 128 (else std::invalid_argument).
// A group is `group_size` consecutive elements of the row-major [out, in] weight (in is a
// multiple of group_size, so no group crosses a row); n_groups = out * in / group_size.

// Round-to-nearest quantization.
//   x       [n_groups * group_size] of `dtype` (fp32 / fp16 / bf16)
//   blocks  [n_groups * (4 + group_size / 2)] uint8: per group fp16 d, fp16 m, then the codes
//           two per byte (element j in the low nibble of byte j, j + group_size/2 in the high)
void int4_quantize(const void* x, DType dtype, int64_t n_groups, int group_size, uint8_t* blocks,
                   cudaStream_t stream);

// Dequantization: out = cast_rne(d * q + m), one fp32 multiply and one fp32 add (no FMA).
//   blocks  [n_groups * (4 + group_size / 2)] uint8, as int4_quantize writes them
//   out     [n_groups * group_size] of `out_dtype`
// Fast path when blocks is 4-byte and out 16-byte aligned (any cudaMalloc / caching-allocator
// buffer); other alignments take a slower scalar path with identical results.
void int4_dequantize(const uint8_t* blocks, int64_t n_groups, int group_size, void* out,
                     DType out_dtype, cudaStream_t stream);

// ---- 8-bit AdamW (bitsandbytes AdamW8bit's blockwise state; METHODS.md §7) ---------------
// Semantics: src/optim/adamw_8bit.cpp update_8bit (the CPU reference, bit-identical to
// bitsandbytes 0.50.2 on its CPU backend) with src/optim/blockwise_8bit.cpp's quantizer;
// tests/gpu/test_adamw_8bit_kernel.cpp compares the two. Codes and absmax are bit-identical;
// the parameter is within one rounding per step (LibTorch's CPU sqrt is only faithfully
// rounded; kernels/adamw_8bit.cu says why and where).

inline constexpr int kAdamW8bitBlockSize = 256;  // elements per absmax (bnb's fixed block)
inline constexpr int kAdamW8bitMapSize = 256;    // entries of a dynamic map
inline constexpr int kAdamW8bitLutSize = 65536;  // entries of a quantization table

// One parameter of n elements and its 8-bit state, updated in place.
struct AdamW8bitState {
  float* param = nullptr;       // [n] fp32 master weight
  const float* grad = nullptr;  // [n] fp32
  uint8_t* state1 = nullptr;    // [n] uint8 codes of m (signed map)
  uint8_t* state2 = nullptr;    // [n] uint8 codes of v (unsigned map)
  float* absmax1 = nullptr;     // [ceil(n/256)] fp32, per block of m
  float* absmax2 = nullptr;     // [ceil(n/256)] fp32, per block of v
  int64_t n = 0;
};

// The dynamic maps and bnb's quantization tables (optim::QuantLut: entry i = the index of the
// map entry nearest to -1 + 2i/65535), on the device; constant, uploaded once per device.
struct AdamW8bitTables {
  const float* signed_map = nullptr;      // [256] fp32, sorted (first moment)
  const uint8_t* signed_lut = nullptr;    // [65536] uint8
  const float* unsigned_map = nullptr;    // [256] fp32, sorted (second moment)
  const uint8_t* unsigned_lut = nullptr;  // [65536] uint8
};

// The step's scalars, computed on the host in double exactly as the reference computes the
// Scalars it passes to ATen (optim::adamw_8bit_scalars); each is rounded to fp32 once, as ATen
// rounds a double Scalar for an fp32 tensor. All must be finite, correction2 > 0.
struct AdamW8bitScalars {
  double beta1 = 0.9;
  double one_minus_beta1 = 0.1;  // 1 - beta1 in double
  double beta2 = 0.999;
  double one_minus_beta2 = 0.001;  // 1 - beta2 in double
  double correction2 = 1.0;        // sqrt(1 - beta2^step)
  double eps = 1e-8;
  double decay = 1.0;      // 1 - lr * weight_decay; 1 without weight decay (p * 1 == p)
  double step_size = 0.0;  // -lr / (1 - beta1^step)
};

// One step, per element (fp32, every rounding as the reference's ATen CPU ops):
//   m = fma(g, 1-b1, (map1[c1] * absmax1) * b1);  v = fma((1-b2) * g, g, (map2[c2] * absmax2) * b2)
//   p = p * decay + (step_size * m) / (sqrt(v) / correction2 + eps)
// then per block of 256: absmax = max |m| (|v|), codes = lut[bin(x * (1 / absmax))] (0 for an
// all-zero block). Fast path when param / grad are 16-byte and state1 / state2 4-byte aligned;
// other alignments take a scalar path with identical results.
void adamw_8bit_update(const AdamW8bitState& state, const AdamW8bitTables& tables,
                       const AdamW8bitScalars& scalars, cudaStream_t stream);

}  // namespace qlt::kernels
