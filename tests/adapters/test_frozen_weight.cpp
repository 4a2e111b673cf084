// The NF4 frozen linear against a dense linear holding the dequantized weight: same output,
// same input gradient, no gradient for the frozen weight.
#include <catch2/catch.hpp>

#include "adapters/frozen_weight.h"

namespace {

using qlt::adapters::FrozenWeight;

void check_against_dense(at::ScalarType dtype, std::vector<int64_t> x_shape) {
  at::manual_seed(7);
  const int64_t out = 48, in = x_shape.back();
  auto w = at::randn({out, in}) * 0.05;
  FrozenWeight frozen{qlt::quant::quantize_nf4(w.to(dtype))};
  FrozenWeight dense{frozen.materialize(dtype)};

  auto x1 = at::randn(x_shape).to(dtype).requires_grad_(true);
  auto x2 = x1.detach().clone().requires_grad_(true);
  auto y1 = qlt::adapters::frozen_linear(x1, frozen);
  auto y2 = qlt::adapters::frozen_linear(x2, dense);
  REQUIRE(y1.sizes() == y2.sizes());
  CHECK(at::equal(y1, y2));

  auto grad = at::randn(y1.sizes()).to(dtype);
  y1.backward(grad);
  y2.backward(grad);
  REQUIRE(x1.grad().defined());
  // Same math; matmul of grad against W versus autograd's linear backward may order the sums
  // differently, so compare to float tolerance rather than bitwise.
  const double tol = dtype == at::kFloat ? 1e-6 : 1e-2;
  CHECK(at::allclose(x1.grad().to(at::kFloat), x2.grad().to(at::kFloat), tol, tol));
}

}  // namespace

TEST_CASE("NF4 frozen linear equals a dense linear with the dequantized weight (fp32)",
          "[adapters][nf4]") {
  check_against_dense(at::kFloat, {3, 5, 128});
}

TEST_CASE("NF4 frozen linear equals a dense linear with the dequantized weight (bf16)",
          "[adapters][nf4]") {
  check_against_dense(at::kBFloat16, {4, 96});
}

TEST_CASE("NF4 frozen linear: two layers share the scratch buffer without interference",
          "[adapters][nf4]") {
  at::manual_seed(3);
  FrozenWeight a{qlt::quant::quantize_nf4(at::randn({64, 32}))};
  FrozenWeight b{qlt::quant::quantize_nf4(at::randn({16, 64}))};
  auto x = at::randn({2, 32}).requires_grad_(true);
  auto y = qlt::adapters::frozen_linear(qlt::adapters::frozen_linear(x, a), b);
  auto expected = at::linear(at::linear(x, a.materialize(at::kFloat)), b.materialize(at::kFloat));
  CHECK(at::allclose(y, expected, 1e-6, 1e-6));
  y.sum().backward();
  auto x2 = x.detach().clone().requires_grad_(true);
  at::linear(at::linear(x2, a.materialize(at::kFloat)), b.materialize(at::kFloat)).sum().backward();
  CHECK(at::allclose(x.grad(), x2.grad(), 1e-5, 1e-6));
  CHECK(a.storage_bytes() < 64 * 32 * 4 / 6);  // ~4.1 bits per parameter, not 32
}
