#include "optim/adamw.h"

#include <cmath>
#include <set>

#include "core/errors.h"
#include "optim/saved_state.h"

namespace qlt::optim {
namespace {

void require_range(bool ok, const char* key, double value, const char* range) {
  if (!ok) {
    user_error("optimizer.{} = {} is out of range: it must be {} (torch.optim.AdamW's rule)", key,
               value, range);
  }
}

}  // namespace

void validate(const AdamWOptions& o) {
  require_range(std::isfinite(o.lr) && o.lr >= 0, "lr", o.lr, ">= 0");
  require_range(std::isfinite(o.eps) && o.eps >= 0, "eps", o.eps, ">= 0");
  require_range(o.beta1 >= 0 && o.beta1 < 1, "beta1", o.beta1, "in [0, 1)");
  require_range(o.beta2 >= 0 && o.beta2 < 1, "beta2", o.beta2, "in [0, 1)");
  require_range(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "weight_decay",
                o.weight_decay, ">= 0");
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options,
             const std::set<std::string>& no_weight_decay)
    : options_(options) {
  validate(options_);
  std::set<std::string> names;
  params_.reserve(params.size());
  for (auto& [name, p] : params) {
    TORCH_CHECK(names.insert(name).second, "AdamW: duplicate parameter name ", name);
    TORCH_CHECK(p.defined() && p.is_leaf() && p.requires_grad(), "AdamW: parameter ", name,
                " must be a leaf tensor that requires grad");
    TORCH_CHECK(p.scalar_type() == at::kFloat, "AdamW: parameter ", name, " is ", p.scalar_type(),
                "; the optimizer keeps fp32 master weights only");
    // [&t = p]: clang (C++20 as implemented in clang 14) cannot capture a structured binding.
    auto zeros = [&t = p] { return at::zeros_like(t, at::MemoryFormat::Preserve); };
    params_.push_back({name, p, zeros(), zeros(), 0, no_weight_decay.count(name) == 0});
  }
}

void AdamW::step(double lr) {
  TORCH_CHECK(std::isfinite(lr) && lr >= 0, "AdamW::step: learning rate ", lr, " is invalid");
  at::NoGradGuard no_grad;
  const double beta1 = options_.beta1, beta2 = options_.beta2;
  for (auto& s : params_) {
    const at::Tensor& grad = s.param.grad();
    if (!grad.defined()) continue;
    TORCH_CHECK(!grad.is_sparse(), "AdamW: sparse gradient for ", s.name);
    TORCH_CHECK(grad.scalar_type() == at::kFloat, "AdamW: gradient of ", s.name, " is ",
                grad.scalar_type());
    s.step += 1;
    if (options_.weight_decay != 0 && s.decay) s.param.mul_(1 - lr * options_.weight_decay);
    s.exp_avg.lerp_(grad, 1 - beta1);
    s.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
    // torch keeps the step as a float32 tensor and reads it back with item(): exact below 2^24.
    const double t = static_cast<double>(static_cast<float>(s.step));
    const double bias_correction1 = 1 - std::pow(beta1, t);
    const double bias_correction2 = 1 - std::pow(beta2, t);
    const double step_size = lr / bias_correction1;
    const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);  // Python's **0.5
    auto denom = (s.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(options_.eps);
    s.param.addcdiv_(s.exp_avg, denom, -step_size);
  }
  ++steps_taken_;
}

void AdamW::zero_grad() {
  for (auto& s : params_) s.param.mutable_grad().reset();
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.reserve(2 * params_.size());
  for (const auto& s : params_) {
    out.emplace_back(s.name + ".exp_avg", s.exp_avg);
    out.emplace_back(s.name + ".exp_avg_sq", s.exp_avg_sq);
  }
  return out;
}

nlohmann::json AdamW::state_meta() const {
  std::vector<std::string> names;
  std::vector<int64_t> steps;
  for (const auto& s : params_) {
    names.push_back(s.name);
    steps.push_back(s.step);
  }
  return saved_state_meta(steps_taken_, names, steps, options_);
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& tensors,
                       const nlohmann::json& meta) {
  using Pointer = nlohmann::json::json_pointer;
  expect_state_meta_object(meta);
  // Validate everything first, so a bad checkpoint leaves this optimizer untouched.
  std::set<std::string> expected;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;  // (live state, saved): handles
  std::vector<int64_t> steps;
  auto expect = [&](const std::string& name, const at::Tensor& live) {
    expected.insert(name);
    copies.emplace_back(live, expect_saved_tensor(tensors, name, live.sizes(), at::kFloat));
  };
  for (const auto& s : params_) {
    expect(s.name + ".exp_avg", s.exp_avg);
    expect(s.name + ".exp_avg_sq", s.exp_avg_sq);
    steps.push_back(expect_saved_count(meta, Pointer("/param_steps") / s.name));
  }
  refuse_unexpected_state(tensors, expected);
  const int64_t steps_taken = expect_saved_count(meta, Pointer("/steps_taken"));

  at::NoGradGuard no_grad;
  for (auto& [state, saved] : copies) state.copy_(saved);
  for (size_t i = 0; i < params_.size(); ++i) params_[i].step = steps[i];
  steps_taken_ = steps_taken;
}

void AdamW::relocate_state(const std::function<at::Tensor(const at::Tensor&)>& to) {
  for (auto& s : params_) {
    s.exp_avg = to(s.exp_avg);
    s.exp_avg_sq = to(s.exp_avg_sq);
  }
}

}  // namespace qlt::optim
