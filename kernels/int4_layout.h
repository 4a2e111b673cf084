// INT4 group-asymmetric layout, shared by host code (src/quant/int4.cpp) and the CUDA kernels
// (kernels/int4_*.cu). Plain C++: no LibTorch, no CUDA headers.
//
// w = d * q + m, q in 0..15, one (d, m) pair per group of `group_size` consecutive inputs of
// a row of the [out, in] weight (METHODS.md §8). One block per group, row-major over
// [out, in / group_size]:
//   offset 0: uint16 d (IEEE fp16 bits, little-endian)
//   offset 2: uint16 m (fp16 bits)
//   offset 4: uint8 qs[group_size / 2], qs[j] = q[j] | (q[j + group_size / 2] << 4)
// For group_size 32 this is ggml's block_q4_1 (ggml/src/ggml-common.h; quant/ggml_blocks.h
// static_asserts the match), so GGUF Q4_1 data is used as stored. 64 and 128 keep the same
// shape of block. Every block size (20, 36, 68 bytes) is a multiple of 4, so in a 4-byte
// aligned buffer every block and its qs words are 4-byte aligned.
//
// Quantization (round to nearest, the `gguf` Python package's Q4_1 quantizer, fp32 math,
// every operation rounded separately, no FMA):
//   min, max of the group;  d = (max - min) / 15;  id = d == 0 ? 0 : 1 / d
//   q = trunc((x - min) * id + 0.5)  (in [0, 16) for finite id; a NaN or +inf value, which
//       only a NaN input or a subnormal d with 1 / d = inf gives, becomes 0 as numpy's
//       float -> uint8 cast gives on x86)
//   stored: d and m = min rounded to fp16 (round to nearest even).
// Min and max follow a total order with -0 < +0 (so a group's min and max do not depend on
// the order of reduction) and propagate NaN.
// Dequantization: cast(d * q + m) with d, m widened from fp16 to fp32 exactly, one fp32
// multiply and one fp32 add (two roundings), then one round-to-nearest-even cast.
#pragma once

#include <cstdint>

#if !defined(QLT_HOST_DEVICE)
#if defined(__CUDACC__)
#define QLT_HOST_DEVICE __host__ __device__
#else
#define QLT_HOST_DEVICE
#endif
#endif

namespace qlt::int4 {

inline constexpr int kMaxQ = 15;
inline constexpr int kDefaultGroupSize = 32;
inline constexpr int kGroupSizes[] = {32, 64, 128};
inline constexpr int kMaxGroupSize = 128;
inline constexpr int kDOffset = 0;   // fp16 d
inline constexpr int kMOffset = 2;   // fp16 m
inline constexpr int kQsOffset = 4;  // packed codes

QLT_HOST_DEVICE constexpr bool valid_group_size(int64_t g) {
  return g == 32 || g == 64 || g == 128;
}

// Bytes of one block: 2 + 2 + group_size / 2.
QLT_HOST_DEVICE constexpr int64_t block_bytes(int64_t group_size) {
  return kQsOffset + group_size / 2;
}

static_assert(block_bytes(32) == 20 && block_bytes(64) == 36 && block_bytes(128) == 68);
static_assert(block_bytes(32) % 4 == 0 && block_bytes(64) % 4 == 0 && block_bytes(128) % 4 == 0);

}  // namespace qlt::int4
