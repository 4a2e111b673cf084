// GGML block layouts (as GGUF files store tensor data) and the fp16 conversions their scales
// need. Source: ggml/src/ggml-common.h (block_q8_0, block_q4_0, block_q4_1, block_q4_K,
// block_q5_K, block_q6_K; QK_K = 256, K_SCALE_SIZE = 12) in the ggml / llama.cpp
// repositories. ggml's d/dmin unions (ggml_half2 dm) are written here as their two halves,
// which is the same byte layout. Every field is a byte array or uint16, so the structs have no
// padding and can be read from any byte address with memcpy.
//
// Element order inside a block (ggml's dequantize_row_* in ggml/src/ggml-quants.c):
//   Q8_0  y[j] = qs[j] * d                                      (32 elements)
//   Q4_0  y[j] = (lo(qs[j]) - 8) * d, y[j + 16] = (hi(qs[j]) - 8) * d
//   Q4_1  y[j] = d * lo(qs[j]) + m,  y[j + 16] = d * hi(qs[j]) + m
//   Q4_K  8 sub-blocks of 32 with 6-bit scale sc and min mn (get_scale_min_k4); sub-blocks
//         2i and 2i+1 are the low and high nibbles of qs[32i .. 32i+31]:
//         y = (d * sc) * q - (dmin * mn)
//   Q5_K  as Q4_K with a fifth bit: bit i of qh[l] is the high bit of element l of sub-block i
//   Q6_K  16 sub-blocks of 16 with int8 scales; per 128 elements (half h), 64 bytes of ql and
//         32 of qh: element 32k + l (k = 0..3, l = 0..31) has low bits
//         (ql[l + 32 (k & 1)] >> 4 (k >> 1)) & 15 and high bits (qh[l] >> 2k) & 3;
//         y = (d * scales[e / 16]) * (q - 32)
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "int4_layout.h"

namespace qlt::ggml {

static_assert(std::endian::native == std::endian::little,
              "GGUF data is little-endian; the block structs are read in place");

inline constexpr int64_t QK8_0 = 32;
inline constexpr int64_t QK4_0 = 32;
inline constexpr int64_t QK4_1 = 32;
inline constexpr int64_t QK_K = 256;         // elements of a K-quant super-block
inline constexpr int64_t K_SCALE_SIZE = 12;  // 8 six-bit scales + 8 six-bit mins

using ggml_half = uint16_t;  // IEEE fp16 bits

struct block_q8_0 {
  ggml_half d;
  int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_0) == sizeof(ggml_half) + QK8_0, "wrong q8_0 block size/padding");

struct block_q4_0 {
  ggml_half d;
  uint8_t qs[QK4_0 / 2];  // element j in the low nibble of qs[j], j + 16 in the high nibble
};
static_assert(sizeof(block_q4_0) == sizeof(ggml_half) + QK4_0 / 2, "wrong q4_0 block size/padding");

struct block_q4_1 {
  ggml_half d;
  ggml_half m;
  uint8_t qs[QK4_1 / 2];  // nibbles as in block_q4_0
};
static_assert(sizeof(block_q4_1) == 2 * sizeof(ggml_half) + QK4_1 / 2,
              "wrong q4_1 block size/padding");
// INT4 with groups of 32 is stored as Q4_1 blocks (kernels/int4_layout.h).
static_assert(sizeof(block_q4_1) == int4::block_bytes(32));
static_assert(offsetof(block_q4_1, d) == int4::kDOffset &&
              offsetof(block_q4_1, m) == int4::kMOffset &&
              offsetof(block_q4_1, qs) == int4::kQsOffset);

struct block_q4_K {
  ggml_half d;                   // super-block scale of the quantized scales
  ggml_half dmin;                // super-block scale of the quantized mins
  uint8_t scales[K_SCALE_SIZE];  // scales and mins, 6 bits each
  uint8_t qs[QK_K / 2];          // 4-bit quants
};
static_assert(sizeof(block_q4_K) == 2 * sizeof(ggml_half) + K_SCALE_SIZE + QK_K / 2,
              "wrong q4_K block size/padding");

struct block_q5_K {
  ggml_half d;
  ggml_half dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];  // quants, high bit
  uint8_t qs[QK_K / 2];  // quants, low 4 bits
};
static_assert(sizeof(block_q5_K) == 2 * sizeof(ggml_half) + K_SCALE_SIZE + QK_K / 2 + QK_K / 8,
              "wrong q5_K block size/padding");

struct block_q6_K {
  uint8_t ql[QK_K / 2];      // quants, lower 4 bits
  uint8_t qh[QK_K / 4];      // quants, upper 2 bits
  int8_t scales[QK_K / 16];  // scales, 8 bits
  ggml_half d;               // super-block scale
};
static_assert(sizeof(block_q6_K) == sizeof(ggml_half) + QK_K / 16 + 3 * QK_K / 4,
              "wrong q6_K block size/padding");

// Scale and min of sub-block j (0..7) of a Q4_K / Q5_K block (ggml's get_scale_min_k4):
// j < 4: the low 6 bits of scales[j] and scales[j + 4]; j >= 4: the low / high nibble of
// scales[j + 4] with the top 2 bits of scales[j - 4] / scales[j] as bits 4-5.
constexpr void get_scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& mn) {
  if (j < 4) {
    sc = q[j] & 63;
    mn = q[j + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    mn = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// fp16 bits -> fp32, exact for every value: subnormals normalized, inf kept, NaN kept with its
// payload and quiet bit (as numpy's float16 -> float32 cast; no hardware quieting).
constexpr float fp16_to_fp32(ggml_half h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits = 0;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;
  } else {             // subnormal: mant * 2^-24, normalized so that bit 10 is the implicit one
    uint32_t e = 113;  // biased fp32 exponent of 2^-14
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

// fp32 -> fp16 bits, round to nearest even (overflow to inf, gradual underflow); NaN stays NaN
// with the top 10 payload bits (numpy's float32 -> float16 cast; for finite values the same
// as c10::Half and CUDA's __float2half_rn).
constexpr ggml_half fp32_to_fp16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) {  // inf or NaN
    if (ax == 0x7F800000u) return sign | 0x7C00u;
    const auto payload = static_cast<uint16_t>((ax & 0x7FFFFFu) >> 13);
    return static_cast<ggml_half>(sign | 0x7C00u | (payload != 0 ? payload : 1u));
  }
  if (ax >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds past 65504 to inf
  if (ax >= 0x38800000u) {                       // normal fp16 range (>= 2^-14)
    uint32_t h = (((ax >> 23) - 112) << 10) | ((ax & 0x7FFFFFu) >> 13);
    const uint32_t rest = ax & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry bumps the exponent
    return static_cast<ggml_half>(sign | h);
  }
  const uint32_t e = ax >> 23;
  if (e < 102) return sign;  // below 2^-25: rounds to zero (float subnormals included)
  // fp16 subnormal (or the smallest normal after rounding): units of 2^-24.
  const uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126 - e;  // 14 .. 24
  uint32_t h = mant >> shift;
  const uint32_t rest = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rest > half || (rest == half && (h & 1u))) ++h;
  return static_cast<ggml_half>(sign | h);
}

}  // namespace qlt::ggml
