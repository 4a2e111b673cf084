// GGML encoders on the CPU, byte-identical to gguf.quants.quantize (gguf-py 0.19.0,
// gguf/quants.py: Q8_0.quantize_blocks, Q4_0.quantize_blocks, BF16.quantize_blocks, F16 =
// numpy's float16 cast), in its order of fp32 operations (each rounded separately: qlt builds
// with -ffp-contract=off). Checked against committed gguf outputs by
// tests/quant/test_ggml_quantize.cpp (tests/fixtures/ggml_quantize/).
#include "quant/ggml_quantize.h"

#include <ATen/Parallel.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/errors.h"
#include "quant/ggml_dequantize.h"
#include "quant/int4.h"

namespace qlt::quant {
namespace {

std::string prefix(std::string_view tensor_name) {
  return tensor_name.empty() ? std::string() : fmt::format("tensor {}: ", tensor_name);
}

// A float code -> its integer, with NaN / +-inf -> 0 (numpy's cast on x86; see the header).
int32_t code_of(float v) { return std::isfinite(v) ? static_cast<int32_t>(v) : 0; }

// Bytes of one row of `cols` values of `type` (cols a multiple of the block).
int64_t row_bytes(io::GgmlType type, int64_t cols) {
  const io::GgmlTypeTraits t = io::ggml_type_traits(type);
  return cols / t.block_elements * t.block_bytes;
}

// Rows [0, rows) of x (row-major, `cols` each) -> `out` (rows * row_bytes(type, cols) bytes).
void encode_rows(io::GgmlType type, const float* x, int64_t rows, int64_t cols, uint8_t* out) {
  const int64_t rb = row_bytes(type, cols);
  switch (type) {
    case io::GgmlType::F32:
      std::memcpy(out, x, static_cast<size_t>(rows * cols) * sizeof(float));
      return;
    case io::GgmlType::F16:
    case io::GgmlType::BF16: {
      const bool f16 = type == io::GgmlType::F16;
      for (int64_t i = 0; i < rows * cols; ++i) {
        const uint16_t h = f16 ? ggml::fp32_to_fp16(x[i]) : fp32_to_bf16_bits(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    }
    case io::GgmlType::Q8_0:
    case io::GgmlType::Q4_0:
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t nb = cols / ggml::QK8_0;
        if (type == io::GgmlType::Q8_0) {
          std::vector<ggml::block_q8_0> blocks(static_cast<size_t>(nb));
          quantize_row_q8_0(x + r * cols, blocks.data(), cols);
          std::memcpy(out + r * rb, blocks.data(), static_cast<size_t>(rb));
        } else {
          std::vector<ggml::block_q4_0> blocks(static_cast<size_t>(nb));
          quantize_row_q4_0(x + r * cols, blocks.data(), cols);
          std::memcpy(out + r * rb, blocks.data(), static_cast<size_t>(rb));
        }
      }
      return;
    case io::GgmlType::Q4_1: {
      // INT4 group 32 = Q4_1 (quant/int4.h); quantize_int4 is the byte-identical reference.
      const at::Tensor w = at::from_blob(const_cast<float*>(x), {rows, cols}, at::kFloat);
      const Int4Tensor q = quantize_int4(w, Int4Options{32});
      const at::Tensor blocks = q.blocks.contiguous();
      std::memcpy(out, blocks.const_data_ptr<uint8_t>(), static_cast<size_t>(rows * rb));
      return;
    }
    default:
      TORCH_CHECK(false, "encode_rows: unsupported type ", static_cast<uint32_t>(type));
  }
}

// The weight as a contiguous fp32 CPU [rows, cols] tensor, after the input checks.
at::Tensor checked_input(io::GgmlType type, const at::Tensor& weight,
                         std::string_view tensor_name) {
  const std::string what = prefix(tensor_name);
  if (!ggml_can_quantize(type)) {
    user_error("{}cannot write GGML type {} (written: F32, F16, BF16, Q8_0, Q4_0, Q4_1)", what,
               io::ggml_type_name(static_cast<uint32_t>(type)));
  }
  const auto s = weight.scalar_type();
  if (s != at::kFloat && s != at::kBFloat16 && s != at::kHalf) {
    user_error(
        "{}dtype {} cannot be written as {}; GGML encoding takes float32, bfloat16 or "
        "float16 weights",
        what, c10::toString(s), io::ggml_type_name(static_cast<uint32_t>(type)));
  }
  if (weight.dim() < 1 || weight.dim() > 2) {
    user_error("{}GGML encoding takes 1-D or 2-D [rows, cols] weights; this one has shape [{}]",
               what, fmt::join(weight.sizes().vec(), ", "));
  }
  const at::Tensor w = weight.dim() == 1 ? weight.unsqueeze(0) : weight;
  const int64_t block = io::ggml_type_traits(type).block_elements;
  if (w.size(1) % block != 0) {
    user_error(
        "{}shape [{}]: the row length {} is not a multiple of {}'s block of {} values; write "
        "this tensor as F16 or F32",
        what, fmt::join(weight.sizes().vec(), ", "), w.size(1),
        io::ggml_type_name(static_cast<uint32_t>(type)), block);
  }
  return w.to(at::kCPU, at::kFloat).contiguous();
}

}  // namespace

void quantize_row_q8_0(const float* x, ggml::block_q8_0* y, int64_t n) {
  TORCH_CHECK(n % ggml::QK8_0 == 0, "quantize_row_q8_0: n = ", n, " is not a multiple of 32");
  for (int64_t b = 0; b < n / ggml::QK8_0; ++b) {
    const float* xb = x + b * ggml::QK8_0;
    // gguf: abs(blocks).max(axis=1) (NaN propagates: the first NaN's magnitude is kept).
    float amax = std::fabs(xb[0]);
    for (int64_t j = 1; j < ggml::QK8_0 && !std::isnan(amax); ++j) {
      const float a = std::fabs(xb[j]);
      if (std::isnan(a) || a > amax) amax = a;
    }
    const float d = amax / 127.0f;
    const float id = d == 0.0f ? 0.0f : 1.0f / d;
    for (int64_t j = 0; j < ggml::QK8_0; ++j) {
      // np_roundf(x * id) = roundf: half away from zero.
      y[b].qs[j] = static_cast<int8_t>(code_of(std::round(xb[j] * id)));
    }
    y[b].d = ggml::fp32_to_fp16(d);
  }
}

void quantize_row_q4_0(const float* x, ggml::block_q4_0* y, int64_t n) {
  TORCH_CHECK(n % ggml::QK4_0 == 0, "quantize_row_q4_0: n = ", n, " is not a multiple of 32");
  constexpr int64_t half = ggml::QK4_0 / 2;
  for (int64_t b = 0; b < n / ggml::QK4_0; ++b) {
    const float* xb = x + b * ggml::QK4_0;
    // gguf: the value at abs(blocks).argmax(): the first largest magnitude, a NaN first of all.
    float max = xb[0], amax = std::fabs(xb[0]);
    for (int64_t j = 1; j < ggml::QK4_0 && !std::isnan(amax); ++j) {
      const float a = std::fabs(xb[j]);
      if (std::isnan(a) || a > amax) {
        amax = a;
        max = xb[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d == 0.0f ? 0.0f : 1.0f / d;
    uint8_t q[ggml::QK4_0];
    for (int64_t j = 0; j < ggml::QK4_0; ++j) {
      // trunc(x * id + 8.5) as uint8, clipped to 15 (never negative: x * id >= -8).
      const int32_t c = code_of(std::trunc(xb[j] * id + 8.5f));
      q[j] = static_cast<uint8_t>(std::clamp(c, 0, 15));
    }
    for (int64_t j = 0; j < half; ++j) y[b].qs[j] = static_cast<uint8_t>(q[j] | (q[j + half] << 4));
    y[b].d = ggml::fp32_to_fp16(d);
  }
}

bool ggml_can_quantize(io::GgmlType type) {
  switch (type) {
    case io::GgmlType::F32:
    case io::GgmlType::F16:
    case io::GgmlType::BF16:
    case io::GgmlType::Q8_0:
    case io::GgmlType::Q4_0:
    case io::GgmlType::Q4_1:
      return true;
    default:
      return false;
  }
}

std::vector<uint8_t> ggml_quantize(io::GgmlType type, const at::Tensor& weight,
                                   std::string_view tensor_name) {
  const at::Tensor w = checked_input(type, weight, tensor_name);
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t rb = row_bytes(type, cols);
  std::vector<uint8_t> out(static_cast<size_t>(rows * rb));
  const float* x = w.const_data_ptr<float>();
  if (type == io::GgmlType::Q4_1) {  // quantize_int4 runs its own parallel loop
    encode_rows(type, x, rows, cols, out.data());
    return out;
  }
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    encode_rows(type, x + r0 * cols, r1 - r0, cols, out.data() + r0 * rb);
  });
  return out;
}

bool ggml_holds_exactly(io::GgmlType type, const at::Tensor& weight, std::string_view tensor_name) {
  const at::Tensor w = checked_input(type, weight, tensor_name);
  const int64_t rows = w.size(0), cols = w.size(1);
  if (type == io::GgmlType::F32) return true;  // the bits as they are
  const int64_t rb = row_bytes(type, cols);
  const float* x = w.const_data_ptr<float>();
  // Chunks of rows; the first difference stops every chunk not yet started.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(cols, 1));
  const int64_t n_chunks = (rows + chunk - 1) / chunk;
  std::atomic<bool> differs{false};
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<uint8_t> bytes;
    for (int64_t c = c0; c < c1 && !differs.load(std::memory_order_relaxed); ++c) {
      const int64_t r0 = c * chunk, n = std::min(chunk, rows - r0);
      bytes.resize(static_cast<size_t>(n * rb));
      encode_rows(type, x + r0 * cols, n, cols, bytes.data());
      const at::Tensor back = ggml_dequantize(type, bytes, n * cols, std::string(tensor_name));
      if (std::memcmp(back.const_data_ptr<float>(), x + r0 * cols,
                      static_cast<size_t>(n * cols) * sizeof(float)) != 0) {
        differs.store(true, std::memory_order_relaxed);
      }
    }
  });
  return !differs.load();
}

}  // namespace qlt::quant
