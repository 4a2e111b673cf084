#include "model/rope.h"

#include <cmath>
#include <numbers>

namespace qlt::model {

at::Tensor rope_inv_freq(const LlamaConfig& config) {
  const int64_t dim = config.head_dim;
  auto exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  auto inv_freq = 1.0 / at::pow(at::scalar_tensor(config.rope_theta, at::kFloat), exponents);
  if (!config.rope_scaling.llama3) return inv_freq;

  // Llama 3.1 rule: wavelengths longer than old_len/low_freq_factor are divided by `factor`,
  // shorter than old_len/high_freq_factor are kept, and the band between is interpolated.
  const RopeScaling& s = config.rope_scaling;
  const double old_len = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_len / s.low_freq_factor;
  const double high_freq_wavelen = old_len / s.high_freq_factor;
  auto wavelen = 2 * std::numbers::pi / inv_freq;
  auto scaled = at::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
  auto smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  auto medium =
      at::logical_not(wavelen < high_freq_wavelen) & at::logical_not(wavelen > low_freq_wavelen);
  return at::where(medium, smoothed, scaled);
}

RopeTables rope_tables(const at::Tensor& inv_freq, const at::Tensor& position_ids,
                       at::ScalarType dtype) {
  // [B, T, 1] * [1, 1, D/2] -> [B, T, D/2], fp32 like transformers (autocast disabled there).
  auto freqs = position_ids.to(at::kFloat).unsqueeze(-1) *
               inv_freq.to(position_ids.device()).view({1, 1, -1});
  auto angles = at::cat({freqs, freqs}, -1);  // [B, T, D]
  return {angles.cos().to(dtype), angles.sin().to(dtype)};
}

at::Tensor apply_rope(const at::Tensor& x, const RopeTables& tables) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half);
  auto x2 = x.narrow(-1, half, half);
  auto rotated = at::cat({-x2, x1}, -1);
  auto cos = tables.cos.unsqueeze(1);  // [B, 1, T, D] broadcast over heads
  auto sin = tables.sin.unsqueeze(1);
  return x * cos + rotated * sin;
}

}  // namespace qlt::model
