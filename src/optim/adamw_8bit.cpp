#include "optim/adamw_8bit.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>

#include "core/errors.h"
#include "optim/saved_state.h"

namespace qlt::optim {
AdamW8bit::AdamW8bit(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options,
                     const std::set<std::string>& no_weight_decay, int64_t min_8bit_size)
    : options_(options),
      min_8bit_size_(min_8bit_size),
      signed_lut_(build_quant_lut(create_dynamic_map(/*signed_map=*/true))),
      unsigned_lut_(build_quant_lut(create_dynamic_map(/*signed_map=*/false))) {
  validate(options_);
  TORCH_CHECK(min_8bit_size_ >= 0, "AdamW8bit: min_8bit_size ", min_8bit_size_, " < 0");
  std::set<std::string> names;
  params_.reserve(params.size());
  for (auto& [name, p] : params) {
    TORCH_CHECK(names.insert(name).second, "AdamW8bit: duplicate parameter name ", name);
    TORCH_CHECK(p.defined() && p.is_leaf() && p.requires_grad(), "AdamW8bit: parameter ", name,
                " must be a leaf tensor that requires grad");
    TORCH_CHECK(p.scalar_type() == at::kFloat, "AdamW8bit: parameter ", name, " is ",
                p.scalar_type(), "; the optimizer keeps fp32 master weights only");
    // (A CPU build cannot hold a CUDA tensor, so there every parameter is a CPU one.)
    if (!p.device().is_cpu() && !p.device().is_cuda()) {
      user_error(
          "optimizer.type adamw_8bit: parameter {} is on {}; the 8-bit optimizer runs on CPU "
          "and CUDA tensors: put the adapters on the CPU or a CUDA device (training.device)",
          name, p.device().str());
    }
    AdamW8bitParam s{name, p, p.numel() >= min_8bit_size_,     {}, {}, {},
                     {},   0, no_weight_decay.count(name) == 0};
    if (s.quantized) {
      // bnb init_state: zero codes and zero absmax (dequantized: m = -0 (map[0] * 0), v = 0).
      s.state1 = at::zeros(p.sizes(), p.options().dtype(at::kByte));
      s.state2 = at::zeros(p.sizes(), p.options().dtype(at::kByte));
      s.absmax1 = at::zeros({state_blocks(p.numel())}, p.options().dtype(at::kFloat));
      s.absmax2 = at::zeros({state_blocks(p.numel())}, p.options().dtype(at::kFloat));
    } else {
      s.state1 = at::zeros(p.sizes(), p.options());
      s.state2 = at::zeros(p.sizes(), p.options());
    }
    if (s.quantized && p.is_cuda()) device_tables(p.device());  // upload once, here
    params_.push_back(std::move(s));
  }
}

AdamW8bitStepScalars adamw_8bit_scalars(const AdamWOptions& options, int64_t step, double lr,
                                        double weight_decay) {
  TORCH_CHECK(step >= 1, "adamw_8bit_scalars: step ", step, " < 1");
  const double beta1 = options.beta1, beta2 = options.beta2;
  const double t = static_cast<double>(step);  // Python: beta ** step (int) = pow in double
  const double correction1 = 1.0 - std::pow(beta1, t);
  AdamW8bitStepScalars sc;
  sc.beta1 = beta1;
  sc.one_minus_beta1 = 1.0 - beta1;
  sc.beta2 = beta2;
  sc.one_minus_beta2 = 1.0 - beta2;
  sc.correction2 = std::sqrt(1.0 - std::pow(beta2, t));
  sc.eps = options.eps;
  sc.decay_applies = weight_decay > 0.0;
  sc.decay = 1.0 - lr * weight_decay;
  sc.step_size = -lr / correction1;
  return sc;
}

const AdamW8bitDeviceTables& AdamW8bit::device_tables(at::Device device) {
  for (const auto& t : device_tables_)
    if (t.device == device) return t;
  device_tables_.push_back(adamw_8bit_device_tables(signed_lut_, unsigned_lut_, device));
  return device_tables_.back();
}

// bitsandbytes/backends/cpu/ops.py _optimizer_update_8bit_blockwise_cpu, "adam" branch
// (gnorm_scale 1: `g.float() * 1.0` is g itself).
void AdamW8bit::update_8bit(AdamW8bitParam& s, const at::Tensor& grad, double lr,
                            double weight_decay) {
  const AdamW8bitStepScalars sc = adamw_8bit_scalars(options_, s.step, lr, weight_decay);
  if (s.param.is_cuda()) {
    // The fused kernel: the same update with the same scalars, state1 / state2 / absmax in
    // place (kernels/adamw_8bit.cu).
    adamw_8bit_update_cuda(s.param, grad, s.state1, s.state2, s.absmax1, s.absmax2, sc,
                           device_tables(s.param.device()));
    return;
  }
  auto m = dequantize_blockwise_8bit(s.state1, s.absmax1, signed_lut_.map);    // param's shape
  auto v = dequantize_blockwise_8bit(s.state2, s.absmax2, unsigned_lut_.map);  // param's shape
  m.mul_(sc.beta1).add_(grad, sc.one_minus_beta1);
  v.mul_(sc.beta2).addcmul_(grad, grad, sc.one_minus_beta2);
  auto denom = (v.sqrt() / sc.correction2).add_(sc.eps);
  if (sc.decay_applies) s.param.mul_(sc.decay);
  s.param.addcdiv_(m, denom, sc.step_size);
  quantize_blockwise_8bit(m, signed_lut_, s.state1, s.absmax1);
  quantize_blockwise_8bit(v, unsigned_lut_, s.state2, s.absmax2);
}

// bitsandbytes/backends/cpu/ops.py _optimizer_update_32bit_cpu, "adam" branch (max_unorm 0:
// update_scale 1).
void AdamW8bit::update_32bit(AdamW8bitParam& s, const at::Tensor& grad, double lr,
                             double weight_decay) {
  const double beta1 = options_.beta1, beta2 = options_.beta2;
  s.state1.mul_(beta1).add_(grad, 1.0 - beta1);
  s.state2.mul_(beta2).addcmul_(grad, grad, 1.0 - beta2);
  const double t = static_cast<double>(s.step);
  const double correction1 = 1.0 - std::pow(beta1, t);
  const double correction2 = std::sqrt(1.0 - std::pow(beta2, t));
  const double step_size = -lr * correction2 / correction1;
  if (weight_decay > 0.0) s.param.mul_(1.0 - lr * weight_decay);
  auto update = s.state1 / (s.state2.sqrt() + options_.eps * correction2);
  s.param.add_(update, step_size * 1.0);
}

#if !defined(QLT_WITH_CUDA)
// CPU build: no CUDA tensor can reach these (the constructor accepts CUDA parameters, and a CPU
// LibTorch cannot make one); reaching them is a bug.
AdamW8bitDeviceTables adamw_8bit_device_tables(const QuantLut&, const QuantLut&,
                                               at::Device device) {
  TORCH_CHECK(false, "adamw_8bit_device_tables: ", device,
              " in a build without CUDA (rebuild with -DQLT_CUDA=ON)");
}
void adamw_8bit_update_cuda(const at::Tensor& param, const at::Tensor&, at::Tensor&, at::Tensor&,
                            at::Tensor&, at::Tensor&, const AdamW8bitStepScalars&,
                            const AdamW8bitDeviceTables&) {
  TORCH_CHECK(false, "adamw_8bit_update_cuda: parameter on ", param.device(),
              " in a build without CUDA (rebuild with -DQLT_CUDA=ON)");
}
#endif

void AdamW8bit::step(double lr) {
  TORCH_CHECK(std::isfinite(lr) && lr >= 0, "AdamW8bit::step: learning rate ", lr, " is invalid");
  at::NoGradGuard no_grad;
  for (auto& s : params_) {
    const at::Tensor& grad = s.param.grad();
    if (!grad.defined()) continue;
    TORCH_CHECK(!grad.is_sparse(), "AdamW8bit: sparse gradient for ", s.name);
    TORCH_CHECK(grad.scalar_type() == at::kFloat, "AdamW8bit: gradient of ", s.name, " is ",
                grad.scalar_type());
    TORCH_CHECK(grad.device() == s.param.device(), "AdamW8bit: gradient of ", s.name, " is on ",
                grad.device(), ", the parameter on ", s.param.device());
    s.step += 1;
    const double weight_decay = s.decay ? options_.weight_decay : 0.0;
    const auto g = grad.contiguous();  // bnb: p.grad = p.grad.contiguous()
    if (s.quantized) {
      update_8bit(s, g, lr, weight_decay);
    } else {
      update_32bit(s, g, lr, weight_decay);
    }
  }
  ++steps_taken_;
}

void AdamW8bit::zero_grad() {
  for (auto& s : params_) s.param.mutable_grad().reset();
}

std::vector<std::pair<std::string, at::Tensor>> AdamW8bit::state_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& s : params_) {
    out.emplace_back(s.name + ".state1", s.state1);
    out.emplace_back(s.name + ".state2", s.state2);
    if (s.quantized) {
      out.emplace_back(s.name + ".absmax1", s.absmax1);
      out.emplace_back(s.name + ".absmax2", s.absmax2);
    }
  }
  return out;
}

nlohmann::json AdamW8bit::state_meta() const {
  std::vector<std::string> names;
  std::vector<int64_t> steps;
  for (const auto& s : params_) {
    names.push_back(s.name);
    steps.push_back(s.step);
  }
  auto meta = saved_state_meta(steps_taken_, names, steps, options_);
  meta["options"]["min_8bit_size"] = min_8bit_size_;
  meta["options"]["block_size"] = kStateBlockSize;
  return meta;
}

void AdamW8bit::load_state(const std::map<std::string, at::Tensor>& tensors,
                           const nlohmann::json& meta) {
  using Pointer = nlohmann::json::json_pointer;
  expect_state_meta_object(meta);
  // Validate everything first, so a bad checkpoint leaves this optimizer untouched.
  std::set<std::string> expected;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (live state, saved)
  std::vector<int64_t> steps;
  auto expect = [&](const std::string& name, const at::Tensor& live) {
    expected.insert(name);
    copies.emplace_back(live, expect_saved_tensor(tensors, name, live.sizes(), live.scalar_type()));
  };
  for (const auto& s : params_) {
    expect(s.name + ".state1", s.state1);
    expect(s.name + ".state2", s.state2);
    if (s.quantized) {
      expect(s.name + ".absmax1", s.absmax1);
      expect(s.name + ".absmax2", s.absmax2);
    }
    steps.push_back(expect_saved_count(meta, Pointer("/param_steps") / s.name));
  }
  refuse_unexpected_state(tensors, expected);
  const int64_t steps_taken = expect_saved_count(meta, Pointer("/steps_taken"));

  at::NoGradGuard no_grad;
  for (auto& [state, saved] : copies) state.copy_(saved);
  for (size_t i = 0; i < params_.size(); ++i) params_[i].step = steps[i];
  steps_taken_ = steps_taken;
}

void AdamW8bit::relocate_state(const std::function<at::Tensor(const at::Tensor&)>& to) {
  for (auto& s : params_) {
    for (at::Tensor* t : {&s.state1, &s.state2, &s.absmax1, &s.absmax2})
      if (t->defined()) *t = to(*t);
  }
}

}  // namespace qlt::optim
