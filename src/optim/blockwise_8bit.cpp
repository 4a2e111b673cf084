#include "optim/blockwise_8bit.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace qlt::optim {

at::Tensor create_dynamic_map(bool signed_map) {
  // bitsandbytes/functional.py create_dynamic_map with max_exponent_bits 7, total_bits 8: decade
  // i (scale 10^(i-6)) holds the midpoints of a float32 linspace(0.1, 1) of 2^i + 1 points
  // (2^(i+1) + 1 unsigned), computed with the same float32 tensor ops; additional_items =
  // 2^(7-7) - 1 = 0, so no extra decade; then 0 and 1, sorted (no padding: exactly 256).
  constexpr int kMaxExponentBits = 7, kNonSignBits = 7;
  std::vector<double> data;  // Python's list of floats (.tolist() of fp32 values: exact)
  for (int i = 0; i < kMaxExponentBits; ++i) {
    const int64_t fraction_items =
        signed_map ? (int64_t{1} << (i + kNonSignBits - kMaxExponentBits)) + 1
                   : (int64_t{1} << (i + kNonSignBits - kMaxExponentBits + 1)) + 1;
    const auto boundaries = at::linspace(0.1, 1, fraction_items, at::kFloat);
    const auto means = (boundaries.slice(0, 0, -1) + boundaries.slice(0, 1)) / 2.0;
    // Python: 10 ** (-(7 - 1) + i), an int power with a negative exponent = pow in double.
    const double scale = std::pow(10.0, -(kMaxExponentBits - 1) + i);
    // Python: (scale * means).tolist(), then (-scale * means).tolist() when signed.
    const auto positive = (means * scale).contiguous();
    const float* p = positive.data_ptr<float>();
    data.insert(data.end(), p, p + positive.numel());
    if (signed_map) {
      const auto negative = (means * -scale).contiguous();
      const float* q = negative.data_ptr<float>();
      data.insert(data.end(), q, q + negative.numel());
    }
  }
  data.push_back(0.0);
  data.push_back(1.0);
  TORCH_CHECK(data.size() == 256, "create_dynamic_map: ", data.size(), " values, expected 256");
  std::sort(data.begin(), data.end());
  auto map = at::empty({256}, at::kFloat);
  float* out = map.data_ptr<float>();
  for (size_t i = 0; i < data.size(); ++i) out[i] = static_cast<float>(data[i]);
  return map;
}

QuantLut build_quant_lut(const at::Tensor& map) {
  TORCH_CHECK(map.scalar_type() == at::kFloat && map.numel() == 256 && map.device().is_cpu(),
              "build_quant_lut: the map must be [256] fp32 on the CPU");
  QuantLut lut;
  lut.map = map.contiguous();
  const float* code = lut.map.data_ptr<float>();
  // csrc/cpu_ops.cpp build_quantize_lut, expression for expression (float arithmetic).
  float midpoints[255];
  for (int i = 0; i < 255; ++i) midpoints[i] = 0.5f * (code[i] + code[i + 1]);
  int code_idx = 0;
  for (int i = 0; i < kLutSize; ++i) {
    const float val = -1.0f + (2.0f * static_cast<float>(i)) / static_cast<float>(kLutSize - 1);
    while (code_idx < 255 && midpoints[code_idx] < val) ++code_idx;
    lut.index[static_cast<size_t>(i)] = static_cast<uint8_t>(code_idx);
  }
  return lut;
}

namespace {

// csrc/cpu_ops.cpp norm_to_lut_index: a normalized value in [-1, 1] -> table index 0..65535.
// (Whether a compiler fuses the multiply-add into an FMA does not change the truncated index:
// adding 0.5 shifts by whole ulps within a binade; checked near every bin edge.)
inline uint16_t lut_bin(float val) {
  val = std::clamp(val, -1.0f, 1.0f);
  return static_cast<uint16_t>((val + 1.0f) * 0.5f * static_cast<float>(kLutSize - 1) + 0.5f);
}

void check_codes(const at::Tensor& codes, const at::Tensor& absmax, int64_t n) {
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() &&
                  codes.device().is_cpu() && codes.numel() == n,
              "blockwise 8-bit: codes must be a contiguous uint8 CPU tensor of ", n, " elements");
  TORCH_CHECK(absmax.scalar_type() == at::kFloat && absmax.is_contiguous() &&
                  absmax.device().is_cpu() && absmax.numel() == state_blocks(n),
              "blockwise 8-bit: absmax must be a contiguous fp32 CPU tensor of ", state_blocks(n),
              " elements");
}

}  // namespace

void quantize_blockwise_8bit(const at::Tensor& x, const QuantLut& lut, at::Tensor& codes,
                             at::Tensor& absmax) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "quantize_blockwise_8bit: x must be an fp32 CPU tensor");
  const auto xc = x.contiguous();
  const int64_t n = xc.numel();
  check_codes(codes, absmax, n);
  const float* a = xc.data_ptr<float>();
  uint8_t* out = codes.data_ptr<uint8_t>();
  float* amax = absmax.data_ptr<float>();
  // csrc/cpu_ops.cpp quantize_cpu_impl (x86 path), block by block.
  for (int64_t b = 0; b < state_blocks(n); ++b) {
    const int64_t begin = b * kStateBlockSize, end = std::min(begin + kStateBlockSize, n);
    float absmax_block = 0.0f;
    for (int64_t i = begin; i < end; ++i) absmax_block = std::max(absmax_block, std::fabs(a[i]));
    amax[b] = absmax_block;
    if (absmax_block == 0.0f) {
      std::fill(out + begin, out + end, uint8_t{0});
      continue;
    }
    const float inv_absmax = 1.0f / absmax_block;  // bnb multiplies by the reciprocal
    for (int64_t i = begin; i < end; ++i) out[i] = lut.index[lut_bin(a[i] * inv_absmax)];
  }
}

at::Tensor dequantize_blockwise_8bit(const at::Tensor& codes, const at::Tensor& absmax,
                                     const at::Tensor& map) {
  const int64_t n = codes.numel();
  check_codes(codes, absmax, n);
  TORCH_CHECK(map.scalar_type() == at::kFloat && map.numel() == 256 && map.is_contiguous(),
              "dequantize_blockwise_8bit: the map must be [256] fp32, contiguous");
  auto out = at::empty(codes.sizes(), codes.options().dtype(at::kFloat));
  const uint8_t* q = codes.data_ptr<uint8_t>();
  const float* amax = absmax.data_ptr<float>();
  const float* code = map.data_ptr<float>();
  float* o = out.data_ptr<float>();
  // csrc/cpu_ops.cpp dequantizeBlockwise8bitCpu: one fp32 product per element.
  for (int64_t i = 0; i < n; ++i) o[i] = code[q[i]] * amax[i / kStateBlockSize];
  return out;
}

}  // namespace qlt::optim
