#include "optim/clip_grad.h"

namespace qlt::optim {
namespace {

std::vector<at::Tensor> defined_grads(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  return grads;
}

// 0-dim tensor on the grads' device and dtype: the norm of the per-tensor norms.
at::Tensor total_norm(const std::vector<at::Tensor>& grads) {
  std::vector<at::Tensor> norms;
  norms.reserve(grads.size());
  for (const auto& g : grads) {
    TORCH_CHECK(g.scalar_type() == grads[0].scalar_type() && g.device() == grads[0].device(),
                "clip_grad_norm: all grads must share one dtype and device");
    norms.push_back(at::linalg_vector_norm(g, 2));
  }
  return at::linalg_vector_norm(at::stack(norms), 2);
}

}  // namespace

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  auto grads = defined_grads(params);
  if (grads.empty()) return 0.0;
  const at::Tensor total = total_norm(grads);
  if (max_norm > 0) {
    const at::Tensor coef = at::clamp_max(at::reciprocal(total + 1e-6) * max_norm, 1.0);
    for (auto& g : grads) g.mul_(coef);
  }
  return total.item<double>();
}

double grad_norm(const std::vector<at::Tensor>& params) {
  at::NoGradGuard no_grad;
  auto grads = defined_grads(params);
  return grads.empty() ? 0.0 : total_norm(grads).item<double>();
}

}  // namespace qlt::optim
