// The LoRA layer (adapters/lora.h, adapters/adapter.h): PEFT's default init drawn exactly as
// torch.nn.init does, scaling, option checks, the forward and its dtype handling, and
// generator-driven dropout.
#include <ATen/CPUGeneratorImpl.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "adapters/adapter.h"
#include "core/errors.h"
#include "io/safetensors.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

using qlt::adapters::Adapter;
using qlt::adapters::AdapterOptions;
using qlt::adapters::FrozenWeight;
using qlt::adapters::LoraDropout;
using qlt::adapters::LowRankAdapter;
using qlt::test::seeded;

// LoRA options through the one conversion (adapter.type lora on a dense base).
AdapterOptions lora_options(int64_t rank, double alpha, bool rslora = false) {
  qlt::AdapterConfig c;
  c.rank = rank;
  c.alpha = alpha;
  c.use_rslora = rslora;
  return qlt::adapters::adapter_options(c, qlt::quant::DenseFormat{});
}

struct TestLora {
  Adapter adapter;
  AdapterOptions options;
  const at::Tensor& A() const { return std::get<LowRankAdapter>(adapter).A; }
  const at::Tensor& B() const { return std::get<LowRankAdapter>(adapter).B; }
};

// A LoRA with random A [r, in], B [out, r] and the given scaling (alpha = scaling * r).
TestLora random_lora(int64_t in, int64_t out, int64_t r, double scaling) {
  TestLora t{LowRankAdapter{(at::randn({r, in}) * 0.1).requires_grad_(true),
                            (at::randn({out, r}) * 0.1).requires_grad_(true)},
             lora_options(r, scaling * static_cast<double>(r))};
  REQUIRE(t.options.scaling == scaling);
  return t;
}

at::Tensor adapted(const at::Tensor& x, const FrozenWeight& base, const TestLora& lora,
                   const LoraDropout& dropout = {}) {
  return qlt::adapters::adapted_linear(x, base, &lora.adapter, lora.options, dropout);
}

}  // namespace

TEST_CASE("LoRA init draws A exactly as torch kaiming_uniform_(a=sqrt(5)) and zeroes B",
          "[adapters][lora]") {
  // kaiming_init.safetensors: torch.Generator().manual_seed(1234), then [4, 64] and [8, 160]
  // (scripts/fixtures/make_lora_fixtures.py).
  auto ref =
      qlt::io::SafetensorsFile::open(std::filesystem::path(QLT_SOURCE_DIR) /
                                     "tests/fixtures/lora_llama_gqa/kaiming_init.safetensors");
  auto gen = seeded(1234);
  qlt::adapters::FrozenWeight w1{at::zeros({32, 64})}, w2{at::zeros({48, 160})};
  auto first =
      std::get<LowRankAdapter>(qlt::adapters::init_adapter(lora_options(4, 16), w1, gen, at::kCPU));
  auto second =
      std::get<LowRankAdapter>(qlt::adapters::init_adapter(lora_options(8, 16), w2, gen, at::kCPU));
  CHECK(at::equal(first.A, ref.tensor("a_4x64")));
  CHECK(at::equal(second.A, ref.tensor("b_8x160")));
  CHECK(first.B.sizes() == at::IntArrayRef({32, 4}));
  CHECK(second.B.sizes() == at::IntArrayRef({48, 8}));
  CHECK(at::equal(second.B, at::zeros({48, 8})));
  for (const auto& t : {first.A, first.B, second.A, second.B}) {
    CHECK(t.scalar_type() == at::kFloat);
    CHECK(t.is_leaf());
    CHECK(t.requires_grad());
  }
  CHECK(lora_options(4, 16).scaling == 16.0 / 4);
  CHECK(qlt::adapters::kaiming_uniform_bound(64, std::sqrt(5.0)) == Approx(1.0 / 8).epsilon(1e-12));
}

TEST_CASE("LoRA scaling is alpha/r, or alpha/sqrt(r) with rsLoRA", "[adapters][lora]") {
  CHECK(lora_options(16, 8).scaling == 0.5);
  CHECK(lora_options(16, 8, true).scaling == 2.0);
}

TEST_CASE("bad adapter options are user errors naming the key", "[adapters][lora][errors]") {
  auto expect_error = [](const qlt::AdapterConfig& c, const std::string& what) {
    REQUIRE_THROWS_AS(qlt::adapters::adapter_options(c, qlt::quant::DenseFormat{}), qlt::UserError);
    REQUIRE_THROWS_WITH(qlt::adapters::adapter_options(c, qlt::quant::DenseFormat{}),
                        Catch::Matchers::Contains(what));
  };
  qlt::AdapterConfig o;
  o.rank = 0;
  expect_error(o, "adapter.rank must be >= 1, got 0");
  o = {};
  o.dropout = 1.0;
  expect_error(o, "adapter.dropout must be in [0, 1), got 1");
  o.dropout = -0.1;
  expect_error(o, "adapter.dropout must be in [0, 1)");
  o = {};
  o.alpha = std::numeric_limits<double>::quiet_NaN();
  expect_error(o, "adapter.alpha must be a finite number");
  o = {};
  o.target_modules.clear();
  expect_error(o, "adapter.target_modules is empty");
  o = {};
  o.type = "dora";
  expect_error(o, "adapter.type \"dora\" is unknown; use one of none, lora, blora, qa-blora, l4q");
}

TEST_CASE("adapted_linear: no adapter is exactly frozen_linear; fp32 adds B A x * scaling",
          "[adapters][lora]") {
  at::manual_seed(3);
  FrozenWeight base{at::randn({24, 40}) * 0.1};
  auto x = at::randn({2, 5, 40});
  CHECK(at::equal(qlt::adapters::adapted_linear(x, base, nullptr, lora_options(4, 8), {}),
                  qlt::adapters::frozen_linear(x, base)));

  auto lora = random_lora(40, 24, 4, 1.5);
  auto y = adapted(x, base, lora);
  auto expected =
      at::matmul(x, base.dense().t()) + at::matmul(at::matmul(x, lora.A().t()), lora.B().t()) * 1.5;
  CHECK(at::allclose(y, expected, 1e-6, 1e-6));
  // Only the adapter gets gradients (the dense base weight is not a leaf with requires_grad).
  y.sum().backward();
  CHECK(lora.A().grad().defined());
  CHECK(lora.B().grad().defined());
  CHECK(!base.dense().grad().defined());
}

TEST_CASE("adapted_linear dtype handling follows PEFT lora.Linear and bnb Linear4bit (bf16)",
          "[adapters][lora]") {
  at::manual_seed(4);
  auto w = (at::randn({32, 64}) * 0.1).to(at::kBFloat16);
  FrozenWeight dense{w};
  FrozenWeight nf4{qlt::quant::quantize_nf4(w)};
  auto x = at::randn({3, 64}).to(at::kBFloat16);
  auto lora = random_lora(64, 32, 8, 2.0);
  auto delta = at::linear(at::linear(x.to(at::kFloat), lora.A()), lora.B()) * 2.0;  // fp32

  // Dense: bf16 base + fp32 delta promotes to fp32, one rounding to bf16 at the end.
  auto y_dense = adapted(x, dense, lora);
  CHECK(y_dense.scalar_type() == at::kBFloat16);
  CHECK(at::equal(y_dense, (at::linear(x, w) + delta).to(at::kBFloat16)));

  // NF4: the delta is rounded to bf16 first, then added in bf16.
  auto y_nf4 = adapted(x, nf4, lora);
  CHECK(y_nf4.scalar_type() == at::kBFloat16);
  auto base_nf4 = qlt::adapters::frozen_linear(x, nf4);
  CHECK(at::equal(y_nf4, base_nf4 + delta.to(at::kBFloat16)));
}

TEST_CASE("LoRA dropout: identity in eval, seeded Bernoulli mask / (1-p) in training",
          "[adapters][lora][dropout]") {
  auto x = at::ones({64, 128});
  // Eval (training false) and p = 0 are the identity, even with a generator.
  CHECK(at::equal(qlt::adapters::lora_dropout(x, {0.5, false, seeded(1)}), x));
  CHECK(at::equal(qlt::adapters::lora_dropout(x, {0.0, true, std::nullopt}), x));

  auto a = qlt::adapters::lora_dropout(x, {0.25, true, seeded(9)});
  auto b = qlt::adapters::lora_dropout(x, {0.25, true, seeded(9)});
  auto c = qlt::adapters::lora_dropout(x, {0.25, true, seeded(10)});
  CHECK(at::equal(a, b));   // reproducible from the seed
  CHECK(!at::equal(a, c));  // and driven by it
  // Every value is 0 or 1/(1-p); about p of them are dropped.
  const float kept = 1.0f / 0.75f;
  CHECK(at::logical_or(a == 0, a == kept).all().item<bool>());
  const double dropped = (a == 0).to(at::kFloat).mean().item<double>();
  CHECK(dropped == Approx(0.25).margin(0.02));
  // The mask is the generator's Bernoulli draw: replay it from a copy of the state.
  auto gen = seeded(77);
  auto replay = gen.clone();
  auto y = qlt::adapters::lora_dropout(x * 3, {0.5, true, gen});
  auto mask = at::empty({64, 128}).bernoulli_(0.5, replay);
  CHECK(at::equal(y, x * 3 * mask / 0.5));

  REQUIRE_THROWS_WITH(qlt::adapters::lora_dropout(x, {0.5, true, std::nullopt}),
                      Catch::Matchers::Contains("needs an explicit generator"));
}

TEST_CASE("adapted_linear drops out only the adapter input, in training",
          "[adapters][lora][dropout]") {
  at::manual_seed(5);
  FrozenWeight base{at::randn({16, 32}) * 0.1};
  auto x = at::randn({4, 32});
  auto lora = random_lora(32, 16, 2, 0.5);
  auto gen = seeded(21);
  auto replay = gen.clone();
  auto y = adapted(x, base, lora, {0.3, true, gen});
  auto mask = at::empty({4, 32}).bernoulli_(0.7, replay).div_(0.7);
  auto expected =
      at::linear(x, base.dense()) + at::linear(at::linear(x * mask, lora.A()), lora.B()) * 0.5;
  CHECK(at::allclose(y, expected, 1e-6, 1e-6));
  // Eval mode: no dropout, same generator untouched.
  auto y_eval = adapted(x, base, lora, {0.3, false, gen});
  CHECK(at::allclose(y_eval, adapted(x, base, lora), 0, 0));
}
