// GGML tensor data -> fp32 on the CPU, bit-identical to gguf.quants.dequantize (gguf-py
// 0.19.0, gguf/quants.py) and to ggml's dequantize_row_* (ggml/src/ggml-quants.c): the same
// fp32 operations in the same order, each rounded separately (qlt builds with
// -ffp-contract=off, so no FMA), fp16 scales widened exactly. Block layouts and element order:
// quant/ggml_blocks.h. Checked against committed gguf outputs by
// tests/quant/test_ggml_dequantize.cpp (tests/fixtures/ggml/).
#include "quant/ggml_dequantize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "core/errors.h"
#include "quant/ggml_blocks.h"

namespace qlt::quant {
namespace {

using ggml::fp16_to_fp32;
using ggml::QK_K;

std::string type_name(io::GgmlType type) {
  const auto id = static_cast<uint32_t>(type);
  if (const auto t = io::ggml_type_traits(id)) return std::string(t->name);
  return fmt::format("type id {}", id);
}

// Blocks of `Block` (read with memcpy: GGUF data need not be aligned for the struct), each
// decoded to Block-elements floats by decode(block, out).
template <typename Block, typename Decode>
void decode_blocks(const uint8_t* src, int64_t n_blocks, int64_t block_elements, float* out,
                   Decode decode) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / block_elements);
  at::parallel_for(0, n_blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      Block blk;
      std::memcpy(&blk, src + b * static_cast<int64_t>(sizeof(Block)), sizeof(Block));
      decode(blk, out + b * block_elements);
    }
  });
}

// gguf: x.astype(float32) * d
void decode_q8_0(const ggml::block_q8_0& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  for (int64_t j = 0; j < ggml::QK8_0; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
}

// gguf: d * (q - 8).astype(float32); element j low nibble, j + 16 high nibble.
void decode_q4_0(const ggml::block_q4_0& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  constexpr int64_t half = ggml::QK4_0 / 2;
  for (int64_t j = 0; j < half; ++j) {
    y[j] = d * static_cast<float>((b.qs[j] & 0xF) - 8);
    y[j + half] = d * static_cast<float>((b.qs[j] >> 4) - 8);
  }
}

// gguf: (d * q) + m
void decode_q4_1(const ggml::block_q4_1& b, float* y) {
  const float d = fp16_to_fp32(b.d), m = fp16_to_fp32(b.m);
  constexpr int64_t half = ggml::QK4_1 / 2;
  for (int64_t j = 0; j < half; ++j) {
    y[j] = d * static_cast<float>(b.qs[j] & 0xF) + m;
    y[j + half] = d * static_cast<float>(b.qs[j] >> 4) + m;
  }
}

// gguf: d = d * sc, dm = dmin * m per sub-block of 32; y = d * q - dm. Sub-blocks 2i and 2i+1
// are the low and high nibbles of qs[32i .. 32i+31].
void decode_q4_K(const ggml::block_q4_K& b, float* y) {
  const float d = fp16_to_fp32(b.d), dmin = fp16_to_fp32(b.dmin);
  for (int sub = 0; sub < 8; ++sub) {
    uint8_t sc = 0, mn = 0;
    ggml::get_scale_min_k4(sub, b.scales, sc, mn);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
    const uint8_t* q = b.qs + 32 * (sub / 2);
    const int shift = 4 * (sub % 2);
    for (int l = 0; l < 32; ++l)
      y[32 * sub + l] = d1 * static_cast<float>((q[l] >> shift) & 0xF) - m1;
  }
}

// As Q4_K with bit `sub` of qh[l] as bit 4 of element l of sub-block `sub`.
void decode_q5_K(const ggml::block_q5_K& b, float* y) {
  const float d = fp16_to_fp32(b.d), dmin = fp16_to_fp32(b.dmin);
  for (int sub = 0; sub < 8; ++sub) {
    uint8_t sc = 0, mn = 0;
    ggml::get_scale_min_k4(sub, b.scales, sc, mn);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(mn);
    const uint8_t* q = b.qs + 32 * (sub / 2);
    const int shift = 4 * (sub % 2);
    for (int l = 0; l < 32; ++l) {
      const int v = ((q[l] >> shift) & 0xF) | (((b.qh[l] >> sub) & 1) << 4);
      y[32 * sub + l] = d1 * static_cast<float>(v) - m1;
    }
  }
}

// gguf: d = d * scales (per 16 elements); y = d * (q - 32). Per half h of 128 elements, element
// 32k + l takes its low nibble from ql[64h + l + 32 (k & 1)] (shifted by 4 (k >> 1)) and its
// top two bits from qh[32h + l] >> 2k.
void decode_q6_K(const ggml::block_q6_K& b, float* y) {
  const float d = fp16_to_fp32(b.d);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = b.ql + 64 * h;
    const uint8_t* qh = b.qh + 32 * h;
    for (int k = 0; k < 4; ++k) {
      for (int l = 0; l < 32; ++l) {
        const int e = 128 * h + 32 * k + l;
        const int lo = (ql[l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xF;
        const int hi = (qh[l] >> (2 * k)) & 3;
        const float dl = d * static_cast<float>(b.scales[e / 16]);
        y[e] = dl * static_cast<float>((lo | (hi << 4)) - 32);
      }
    }
  }
}

}  // namespace

bool ggml_can_dequantize(io::GgmlType type) {
  switch (type) {
    case io::GgmlType::F32:
    case io::GgmlType::F16:
    case io::GgmlType::BF16:
    case io::GgmlType::Q8_0:
    case io::GgmlType::Q4_0:
    case io::GgmlType::Q4_1:
    case io::GgmlType::Q4_K:
    case io::GgmlType::Q5_K:
    case io::GgmlType::Q6_K:
      return true;
    default:
      return false;
  }
}

at::Tensor ggml_dequantize(io::GgmlType type, std::span<const uint8_t> bytes, int64_t numel,
                           const std::string& tensor_name) {
  if (!ggml_can_dequantize(type)) {
    user_error(
        "tensor {}: GGML type {} cannot be loaded (qlora-train decodes F32, F16, BF16, Q8_0, "
        "Q4_0, Q4_1, Q4_K, Q5_K and Q6_K); convert the model to one of these, e.g. with "
        "llama.cpp's llama-quantize to Q4_K_M or Q8_0, or load the original safetensors",
        tensor_name, type_name(type));
  }
  // The block geometry from the structs (ggml-common.h); io::ggml_type_traits agrees
  // (tests/quant/test_ggml_dequantize.cpp).
  int64_t block_elements = 1, block_bytes = 0;
  switch (type) {
    case io::GgmlType::F32:
      block_bytes = 4;
      break;
    case io::GgmlType::F16:
    case io::GgmlType::BF16:
      block_bytes = 2;
      break;
    case io::GgmlType::Q8_0:
      block_elements = ggml::QK8_0, block_bytes = sizeof(ggml::block_q8_0);
      break;
    case io::GgmlType::Q4_0:
      block_elements = ggml::QK4_0, block_bytes = sizeof(ggml::block_q4_0);
      break;
    case io::GgmlType::Q4_1:
      block_elements = ggml::QK4_1, block_bytes = sizeof(ggml::block_q4_1);
      break;
    case io::GgmlType::Q4_K:
      block_elements = QK_K, block_bytes = sizeof(ggml::block_q4_K);
      break;
    case io::GgmlType::Q5_K:
      block_elements = QK_K, block_bytes = sizeof(ggml::block_q5_K);
      break;
    case io::GgmlType::Q6_K:
      block_elements = QK_K, block_bytes = sizeof(ggml::block_q6_K);
      break;
    default:
      break;
  }
  if (numel < 0 || numel % block_elements != 0) {
    user_error(
        "tensor {}: {} elements of type {} are not a whole number of its blocks of {} elements; "
        "the file is damaged",
        tensor_name, numel, type_name(type), block_elements);
  }
  const int64_t n_blocks = numel / block_elements;
  int64_t expected = 0;
  const bool overflow = __builtin_mul_overflow(n_blocks, block_bytes, &expected);
  if (overflow || static_cast<uint64_t>(expected) != bytes.size()) {
    user_error(
        "tensor {}: {} elements of type {} take {} bytes, but {} bytes were given; the file is "
        "damaged",
        tensor_name, numel, type_name(type),
        overflow ? std::string("more than 2^63") : std::to_string(expected), bytes.size());
  }

  at::Tensor out = at::empty({numel}, at::kFloat);
  if (numel == 0) return out;
  float* y = out.mutable_data_ptr<float>();
  const uint8_t* src = bytes.data();
  const int64_t grain = int64_t{1} << 15;
  switch (type) {
    case io::GgmlType::F32:
      std::memcpy(y, src, bytes.size());
      break;
    case io::GgmlType::F16:
      at::parallel_for(0, numel, grain, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          ggml::ggml_half h;
          std::memcpy(&h, src + 2 * i, sizeof(h));
          y[i] = fp16_to_fp32(h);
        }
      });
      break;
    case io::GgmlType::BF16:  // gguf: (int16 -> int32) << 16 viewed as float32: exact
      at::parallel_for(0, numel, grain, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          uint16_t h;
          std::memcpy(&h, src + 2 * i, sizeof(h));
          y[i] = std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
        }
      });
      break;
    case io::GgmlType::Q8_0:
      decode_blocks<ggml::block_q8_0>(src, n_blocks, block_elements, y, decode_q8_0);
      break;
    case io::GgmlType::Q4_0:
      decode_blocks<ggml::block_q4_0>(src, n_blocks, block_elements, y, decode_q4_0);
      break;
    case io::GgmlType::Q4_1:
      decode_blocks<ggml::block_q4_1>(src, n_blocks, block_elements, y, decode_q4_1);
      break;
    case io::GgmlType::Q4_K:
      decode_blocks<ggml::block_q4_K>(src, n_blocks, block_elements, y, decode_q4_K);
      break;
    case io::GgmlType::Q5_K:
      decode_blocks<ggml::block_q5_K>(src, n_blocks, block_elements, y, decode_q5_K);
      break;
    case io::GgmlType::Q6_K:
      decode_blocks<ggml::block_q6_K>(src, n_blocks, block_elements, y, decode_q6_K);
      break;
    default:
      break;
  }
  return out;
}

}  // namespace qlt::quant
