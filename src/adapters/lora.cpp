#include "adapters/lora.h"

#include <cmath>

#include "core/errors.h"

namespace qlt::adapters {

void check_lora_options(const LoraOptions& options) {
  if (options.rank < 1) {
    user_error(
        "LoRA rank must be >= 1, got {}; set the adapter rank (PEFT's r) to a positive "
        "integer such as 8 or 64",
        options.rank);
  }
  if (!std::isfinite(options.alpha)) {
    user_error("LoRA alpha must be a finite number, got {}", options.alpha);
  }
  if (!(options.dropout >= 0.0 && options.dropout < 1.0)) {
    user_error("LoRA dropout must be in [0, 1), got {}; use 0 to disable it", options.dropout);
  }
  if (options.target_modules.empty()) {
    user_error("LoRA target_modules is empty; name at least one linear layer (e.g. q_proj)");
  }
}

double lora_scaling(const LoraOptions& options) {
  const double r = static_cast<double>(options.rank);
  return options.use_rslora ? options.alpha / std::sqrt(r) : options.alpha / r;
}

double kaiming_uniform_bound(int64_t fan_in, double a) {
  TORCH_CHECK(fan_in > 0, "kaiming_uniform_bound: fan_in must be positive, got ", fan_in);
  // torch.nn.init.calculate_gain("leaky_relu", a) and kaiming_uniform_, in the same order.
  const double gain = std::sqrt(2.0 / (1 + a * a));
  const double std_dev = gain / std::sqrt(static_cast<double>(fan_in));
  return std::sqrt(3.0) * std_dev;
}

LoraWeights init_lora_weights(int64_t in_features, int64_t out_features, const LoraOptions& options,
                              at::Generator& generator, at::Device device) {
  check_lora_options(options);
  const double bound = kaiming_uniform_bound(in_features, std::sqrt(5.0));
  at::Tensor a;
  {
    at::NoGradGuard no_grad;
    // [r, in] fp32, drawn on the CPU so the values do not depend on the target device.
    a = at::empty({options.rank, in_features}, at::kFloat).uniform_(-bound, bound, generator);
  }
  LoraWeights w;
  w.A = a.to(device).detach().requires_grad_(true);
  w.B = at::zeros({out_features, options.rank}, at::TensorOptions(at::kFloat).device(device))
            .requires_grad_(true);  // [out, r] fp32
  w.scaling = lora_scaling(options);
  return w;
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

at::Tensor adapted_linear(const at::Tensor& x, const FrozenWeight& base,
                          const std::optional<LoraWeights>& lora, const LoraDropout& dropout) {
  auto result = frozen_linear(x, base);  // [..., out] compute dtype
  if (!lora) return result;
  const auto result_dtype = result.scalar_type();
  auto x_adapter = x.to(lora->A.scalar_type());  // _cast_input_dtype: [..., in] fp32
  // [..., in] -> [..., r] -> [..., out], fp32
  auto delta =
      at::linear(at::linear(lora_dropout(x_adapter, dropout), lora->A), lora->B) * lora->scaling;
  if (base.quantized()) return result + delta.to(result_dtype);  // bnb.Linear4bit
  return (result + delta).to(result_dtype);                      // lora.Linear
}

}  // namespace qlt::adapters
