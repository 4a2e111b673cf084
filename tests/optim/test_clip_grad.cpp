// Global-norm clipping: bit-identical to clip_grad_norm_ inside the AdamW fixture replay
// (test_adamw.cpp, max_norm 1) and alone at max_norm 0.3 (fixture clip.<i>.*); plus the edge
// cases torch defines and the ones we add (max_norm <= 0).
#include <catch2/catch.hpp>
#include <cmath>

#include "adamw_fixture.h"
#include "optim/clip_grad.h"

namespace {

at::Tensor leaf_with_grad(at::Tensor grad) {
  auto p = at::zeros_like(grad).set_requires_grad(true);
  p.mutable_grad() = grad;
  return p;
}

}  // namespace

TEST_CASE("clip_grad_norm scales by max_norm / (total + 1e-6) when the norm is too large",
          "[optim][clip]") {
  auto p = leaf_with_grad(at::tensor({3.0f, 0.0f}));
  auto q = leaf_with_grad(at::tensor({4.0f}));
  auto no_grad = at::zeros({2}).set_requires_grad(true);
  const double total = qlt::optim::clip_grad_norm({p, no_grad, q}, 1.0);
  CHECK(total == 5.0);
  const float coef = 1.0f / (5.0f + 1e-6f);
  CHECK(p.grad()[0].item<float>() == Approx(3.0f * coef).epsilon(1e-7));
  CHECK(q.grad()[0].item<float>() == Approx(4.0f * coef).epsilon(1e-7));
  CHECK(qlt::optim::grad_norm({p, q}) == Approx(1.0).epsilon(1e-6));
  CHECK_FALSE(no_grad.grad().defined());
}

TEST_CASE("clip_grad_norm leaves small grads bit-identical", "[optim][clip]") {
  const auto g = at::tensor({0.1f, -0.2f, 0.3f});
  auto p = leaf_with_grad(g.clone());
  const double total = qlt::optim::clip_grad_norm({p}, 1.0);
  CHECK(total == Approx(std::sqrt(0.14)).epsilon(1e-6));
  CHECK(at::equal(p.grad(), g));
}

TEST_CASE("clip_grad_norm with max_norm <= 0 only measures", "[optim][clip]") {
  const auto g = at::tensor({30.0f, 40.0f});
  auto p = leaf_with_grad(g.clone());
  CHECK(qlt::optim::clip_grad_norm({p}, 0.0) == 50.0);
  CHECK(qlt::optim::clip_grad_norm({p}, -1.0) == 50.0);
  CHECK(at::equal(p.grad(), g));
}

TEST_CASE("clip_grad_norm without grads returns 0", "[optim][clip]") {
  auto p = at::zeros({2}).set_requires_grad(true);
  CHECK(qlt::optim::clip_grad_norm({p}, 1.0) == 0.0);
  CHECK(qlt::optim::clip_grad_norm({}, 1.0) == 0.0);
  CHECK_FALSE(p.grad().defined());
}

TEST_CASE("clip_grad_norm returns a non-finite norm instead of throwing", "[optim][clip]") {
  auto p = leaf_with_grad(at::tensor({1.0f, NAN}));
  CHECK(std::isnan(qlt::optim::clip_grad_norm({p}, 1.0)));
  auto q = leaf_with_grad(at::tensor({INFINITY, 1.0f}));
  CHECK(std::isinf(qlt::optim::clip_grad_norm({q}, 1.0)));
}

TEST_CASE("clip_grad_norm at max_norm 0.3 is bit-identical to torch", "[optim][clip][fixture]") {
  const auto& f = adamw_fixture::file();
  for (int i = 0; i < 4; ++i) {
    const std::string prefix = "clip." + std::to_string(i) + ".";
    std::vector<at::Tensor> params;
    for (const auto& n : adamw_fixture::kNames)
      params.push_back(leaf_with_grad(f.tensor(prefix + "grad." + n).clone()));
    INFO("case " << i);
    CHECK(static_cast<float>(qlt::optim::clip_grad_norm(params, 0.3)) ==
          f.tensor(prefix + "norm").item<float>());
    for (size_t k = 0; k < params.size(); ++k) {
      INFO("param " << adamw_fixture::kNames[k]);
      CHECK(at::equal(params[k].grad(), f.tensor(prefix + "clipped." + adamw_fixture::kNames[k])));
    }
  }
}
