#include "adapters/lora.h"

#include <cmath>

namespace qlt::adapters {

double kaiming_uniform_bound(int64_t fan_in, double a) {
  TORCH_CHECK(fan_in > 0, "kaiming_uniform_bound: fan_in must be positive, got ", fan_in);
  // torch.nn.init.calculate_gain("leaky_relu", a) and kaiming_uniform_, in the same order.
  const double gain = std::sqrt(2.0 / (1 + a * a));
  const double std_dev = gain / std::sqrt(static_cast<double>(fan_in));
  return std::sqrt(3.0) * std_dev;
}

std::pair<at::Tensor, at::Tensor> init_low_rank_pair(int64_t a_in, int64_t b_out, int64_t rank,
                                                     at::Generator& generator, at::Device device) {
  const double bound = kaiming_uniform_bound(a_in, std::sqrt(5.0));
  at::Tensor a;
  {
    at::NoGradGuard no_grad;
    // [rank, a_in] fp32, drawn on the CPU so the values do not depend on the target device.
    a = at::empty({rank, a_in}, at::kFloat).uniform_(-bound, bound, generator);
  }
  return {a.to(device).detach().requires_grad_(true),
          at::zeros({b_out, rank}, at::TensorOptions(at::kFloat).device(device))
              .requires_grad_(true)};  // B [b_out, rank] fp32
}

at::Tensor lora_dropout(const at::Tensor& x, const LoraDropout& dropout) {
  if (!dropout.training || dropout.p == 0.0) return x;
  TORCH_CHECK(dropout.p > 0.0 && dropout.p < 1.0, "lora_dropout: p must be in [0, 1), got ",
              dropout.p);
  TORCH_CHECK(dropout.generator.has_value(),
              "lora_dropout: training with dropout > 0 needs an explicit generator");
  // ATen's CPU dropout: noise = bernoulli(1 - p) / (1 - p); the mask is not part of the graph.
  auto noise = at::empty_like(x, at::MemoryFormat::Contiguous);
  {
    at::NoGradGuard no_grad;
    noise.bernoulli_(1.0 - dropout.p, *dropout.generator);
    noise.div_(1.0 - dropout.p);
  }
  return x * noise;
}

}  // namespace qlt::adapters
