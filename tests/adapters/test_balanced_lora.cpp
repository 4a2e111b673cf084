// Balanced LoRA (adapters/balanced_lora.h; METHODS.md §5): Q-BLoRA is exactly a rank-λr LoRA,
// the window form of the weight update, the exact QA-BLoRA merge into INT4 group offsets, and
// the native Q-BLoRA adapter against PEFT running its expanded rank-λr LoRA
// (tests/fixtures/blora_peft/, scripts/fixtures/make_blora_peft.py).
//
// ---- Why the QA-BLoRA merge is exact up to one fp16 rounding per group ----
// INT4 base (quant/int4.h): w[o, i] = d[o, G] * q[o, i] + m[o, G], G = i / g (group of g inputs).
// With pool = g the adapter's update is constant inside each group (pooled_lora_window_delta):
//   ΔW[o, i] = δ[o, G],   so   x ΔW^T [o] = Σ_G S_G δ[o, G],   S_G = Σ_{i ∈ G} x_i.
// The merge stores m'[o, G] = fp16(fp32(m + δ)). Write err[o, G] = m' - (m + δ). Then
//   W'[o, i] = d q + m' = W[o, i] + ΔW[o, i] + err[o, G]   (exactly, in real arithmetic), so
//   y_m - y_a = x W'^T - (x W^T + x ΔW^T) = Σ_G S_G err[o, G],
//   |y_m - y_a|[o] <= Σ_G |S_G| |err[o, G]|.                                   (*)
// The size of err: with s = m + δ (m is an fp16 value, δ fp32), fp32(s) = s (1 + e1),
// |e1| <= 2^-24, then fp16 rounds once more. In fp16's normal range (|s| >= 2^-14) the
// fp16 rounding error is at most half an ulp, <= u |s| with u = 2^-11 (fp16 unit roundoff);
// the preceding fp32 rounding cannot push the total past u |s| (a double-rounding error only
// happens next to an fp16 midpoint, where half an ulp is < u |s| by more than 2^-24 |s|), so
//   |err| <= 2^-11 |m + δ|            (normal range),
//   |err| <= 2^-25 + 2^-24 |m + δ|    (subnormal range: fp16 spacing 2^-24; the extra term is
//                                      the fp32 pre-rounding),
// and 2^-11 |s| + 2^-25 bounds both. Nothing else changes: d and the codes are kept, so there is
// no re-quantization error. (*) is asserted twice below:
//   - in double, from the fp16/fp32 values themselves (W = d q + m and W' = d q + m' are exact in
//     double, δ is the fp32 update the merge used): the only difference is err, and (*) must
//     hold with no slack (double evaluation error is ~1e-16 relative, far inside the margin of
//     the triangle inequality);
//   - in fp32, as the program computes it (y_a = x dequant(W)^T + pooled_lora_delta(x),
//     y_m = x dequant(W')^T), with a slack of γ_N times the magnitudes involved:
//     N u32 (Σ_i |x_i| (|w_i| + |w'_i|) + 2 s (pool(|x|) |A|^T |B|^T)[o]),
//     N = in + g + in/g + R + 4, u32 = 2^-24 (the classic recursive-summation bound for the
//     two dot products, the dequantization add, the pooled delta and the fp32 rounding of δ).
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>

#include "adapters/balanced_lora.h"
#include "adapters/frozen_weight.h"
#include "io/safetensors.h"
#include "model/adapter_test_util.h"
#include "model/llama.h"
#include "quant/int4.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using qlt::adapters::expand_pooled_lora;
using qlt::adapters::pool_features;
using qlt::adapters::pooled_lora_delta;
using qlt::adapters::pooled_lora_window_delta;
using qlt::adapters::repeat_features;
using qlt::test::kBloraPeftDir;
using qlt::test::max_abs;
using qlt::test::relative_error;

// The fields of an INT4 tensor decoded straight from its block bytes (kernels/int4_layout.h),
// independent of quant/int4.cpp: d, m [out, groups] fp32 (exact fp16 values), q [out, in] fp32.
struct DecodedInt4 {
  at::Tensor d, m, q;
};
DecodedInt4 decode_int4(const qlt::quant::Int4Tensor& t) {
  const auto& b = t.blocks;  // [out, groups, 4 + g/2] uint8
  auto half_at = [&](int64_t offset) {
    return b.narrow(2, offset, 2).contiguous().view(at::kHalf).squeeze(-1).to(at::kFloat);
  };
  auto qs = b.narrow(2, 4, t.group_size / 2).to(at::kInt);  // [out, groups, g/2]
  // Low nibbles: the first half of the group; high nibbles: the second half.
  auto q = at::cat({qs.bitwise_and(15), qs.bitwise_right_shift(4)}, -1);  // [out, groups, g]
  return {half_at(0), half_at(2), q.reshape({t.shape[0], t.shape[1]}).to(at::kFloat)};
}

// [out, groups] -> [out, groups * g]: each group value repeated over its g inputs.
at::Tensor per_input(const at::Tensor& per_group, int64_t g) {
  return per_group.repeat_interleave(g, 1);
}

}  // namespace

TEST_CASE("pool_features and repeat_features: window means and consecutive repeats", "[blora]") {
  auto x = at::arange(12, at::kFloat).reshape({2, 6});  // rows 0..5, 6..11
  auto pooled = pool_features(x, 3);
  CHECK(pooled.sizes() == at::IntArrayRef({2, 2}));
  CHECK(at::equal(pooled, at::tensor({1.0f, 4.0f, 7.0f, 10.0f}).reshape({2, 2})));
  CHECK(pool_features(x, 1).is_same(x));
  auto repeated = repeat_features(at::tensor({1.0f, 2.0f, 3.0f}), 2);
  CHECK(at::equal(repeated, at::tensor({1.0f, 1.0f, 2.0f, 2.0f, 3.0f, 3.0f})));
  CHECK(repeat_features(x, 1).is_same(x));
  auto y = at::randn({2, 3, 5});
  CHECK(at::equal(repeat_features(y, 4), y.repeat_interleave(4, -1)));

  REQUIRE_THROWS_WITH(pool_features(at::zeros({2, 7}), 2),
                      Catch::Matchers::Contains("pool_features: 7 features") &&
                          Catch::Matchers::Contains("not a multiple of the window 2"));
  REQUIRE_THROWS_WITH(repeat_features(y, 0),
                      Catch::Matchers::Contains("repeat_features: repeat must be >= 1"));
}

TEST_CASE("Q-BLoRA delta equals its expanded rank-lambda*r LoRA; pool=repeat=1 is PEFT LoRA",
          "[blora]") {
  at::manual_seed(11);
  const int64_t in = 96, out = 72, r = 4;  // divisible by 2, 3 and 4
  const double scaling = 16.0 / r;         // alpha / r of Q-BLoRA
  auto x = at::randn({2, 5, in});
  for (int64_t lambda : {2, 3, 4}) {
    INFO("lambda " << lambda);
    const int64_t R = lambda * r;
    auto A = at::randn({R, in / lambda}) * 0.2;
    auto B = at::randn({out / lambda, R}) * 0.1;
    auto delta = pooled_lora_delta(x, A, B, lambda, lambda, scaling);
    REQUIRE(delta.sizes() == at::IntArrayRef({2, 5, out}));

    auto e = expand_pooled_lora(A, B, lambda, lambda);
    REQUIRE(e.A.sizes() == at::IntArrayRef({R, in}));
    REQUIRE(e.B.sizes() == at::IntArrayRef({out, R}));
    // A'[:, i] = A[:, i / λ] / λ and B'[o, :] = B[o / λ, :].
    for (int64_t i : {int64_t{0}, lambda - 1, lambda, in - 1}) {
      CHECK(at::equal(e.A.select(1, i), A.select(1, i / lambda) / static_cast<double>(lambda)));
    }
    for (int64_t o : {int64_t{0}, lambda - 1, lambda, out - 1}) {
      CHECK(at::equal(e.B.select(0, o), B.select(0, o / lambda)));
    }
    auto expanded_delta = at::linear(at::linear(x, e.A), e.B) * scaling;
    const double err = relative_error(delta, expanded_delta);
    INFO("relative error " << err);
    CHECK(err <= 1e-6);

    // Gradients agree too (expand_pooled_lora is differentiable): training either form is the
    // same up to rounding.
    auto a1 = A.clone().requires_grad_(true), b1 = B.clone().requires_grad_(true);
    auto a2 = A.clone().requires_grad_(true), b2 = B.clone().requires_grad_(true);
    auto w = at::randn({2, 5, out});
    (pooled_lora_delta(x, a1, b1, lambda, lambda, scaling) * w).sum().backward();
    auto e2 = expand_pooled_lora(a2, b2, lambda, lambda);
    (at::linear(at::linear(x, e2.A), e2.B) * scaling * w).sum().backward();
    CHECK(relative_error(a1.grad(), a2.grad()) <= 1e-5);
    CHECK(relative_error(b1.grad(), b2.grad()) <= 1e-5);
  }

  // QA-BLoRA shape: pool = a group of 32 inputs, repeat λ_out = 2.
  {
    auto xq = at::randn({3, 128});
    auto A = at::randn({6, 128 / 32}) * 0.2;
    auto B = at::randn({out / 2, 6}) * 0.1;
    auto e = expand_pooled_lora(A, B, 32, 2);
    CHECK(e.A.sizes() == at::IntArrayRef({6, 128}));
    CHECK(relative_error(pooled_lora_delta(xq, A, B, 32, 2, 0.5),
                         at::linear(at::linear(xq, e.A), e.B) * 0.5) <= 1e-6);
  }

  // Plain LoRA: pool = repeat = 1 is exactly PEFT's lora.Linear in eval mode,
  // base(x) + B(A(x)) * scaling (METHODS.md §4), the same ops as adapted_linear's low-rank
  // path (adapters/adapter.h; written out here so this test does not depend on the adapter
  // plumbing).
  qlt::adapters::FrozenWeight base{at::randn({out, in}) * 0.1};
  auto lora_A = at::randn({r, in}) * 0.2, lora_B = at::randn({out, r}) * 0.1;
  auto adapted =
      qlt::adapters::frozen_linear(x, base) + at::linear(at::linear(x, lora_A), lora_B) * scaling;
  auto ours =
      qlt::adapters::frozen_linear(x, base) + pooled_lora_delta(x, lora_A, lora_B, 1, 1, scaling);
  CHECK(at::equal(adapted, ours));
  auto e1 = expand_pooled_lora(lora_A, lora_B, 1, 1);
  CHECK(at::equal(e1.A, lora_A));
  CHECK(at::equal(e1.B, lora_B));
  CHECK(!e1.A.is_same(lora_A));

  // A bf16 input is cast to the adapter's fp32 first; the delta is fp32.
  auto xb = x.to(at::kBFloat16);
  auto A = at::randn({8, in / 2}) * 0.2, B = at::randn({out / 2, 8}) * 0.1;
  auto db = pooled_lora_delta(xb, A, B, 2, 2, 1.0);
  CHECK(db.scalar_type() == at::kFloat);
  CHECK(at::equal(db, pooled_lora_delta(xb.to(at::kFloat), A, B, 2, 2, 1.0)));
}

TEST_CASE("pooled LoRA shape errors are internal errors naming the function and the shapes",
          "[blora]") {
  auto A = at::zeros({8, 32}), B = at::zeros({36, 8});
  REQUIRE_THROWS_WITH(pooled_lora_delta(at::zeros({2, 63}), A, B, 2, 2, 1.0),
                      Catch::Matchers::Contains("pooled_lora_delta: x shape [2, 63]") &&
                          Catch::Matchers::Contains("need 64 input features"));
  REQUIRE_THROWS_WITH(pooled_lora_delta(at::zeros({2, 64}), A, at::zeros({36, 4}), 2, 2, 1.0),
                      Catch::Matchers::Contains("pooled_lora_delta: need A [R, in/pool] and B "
                                                "[out/repeat, R], got A [8, 32], B [36, 4]"));
  REQUIRE_THROWS_WITH(
      expand_pooled_lora(A, B, 0, 2),
      Catch::Matchers::Contains("expand_pooled_lora: pool and repeat must be >= 1"));
  REQUIRE_THROWS_WITH(pooled_lora_window_delta(at::zeros({8}), B, 2, 2, 1.0),
                      Catch::Matchers::Contains("pooled_lora_window_delta: need A"));
}

TEST_CASE("pooled_lora_window_delta expanded to full size is scaling * B' A'", "[blora]") {
  at::manual_seed(12);
  struct Case {
    int64_t in, out, pool, repeat, R;
  };
  for (const auto& c : {Case{96, 72, 2, 2, 8}, Case{96, 72, 3, 3, 12}, Case{96, 72, 4, 4, 16},
                        Case{128, 48, 32, 2, 6}, Case{256, 48, 64, 1, 4}}) {
    INFO("pool " << c.pool << ", repeat " << c.repeat);
    auto A = at::randn({c.R, c.in / c.pool}) * 0.2;
    auto B = at::randn({c.out / c.repeat, c.R}) * 0.1;
    const double scaling = 2.5;
    auto window = pooled_lora_window_delta(A, B, c.pool, c.repeat, scaling);
    REQUIRE(window.sizes() == at::IntArrayRef({c.out, c.in / c.pool}));
    auto full = repeat_features(window, c.pool);  // ΔW[o, i] = window[o, i / pool]
    auto e = expand_pooled_lora(A, B, c.pool, c.repeat);
    auto product = at::matmul(e.B, e.A) * scaling;  // [out, in]
    const double err = relative_error(full, product);
    INFO("relative error " << err);
    CHECK(err <= 1e-6);
    // And it is the update the pooled delta applies: x ΔW^T == delta(x).
    auto x = at::randn({4, c.in});
    CHECK(relative_error(at::linear(x, full),
                         pooled_lora_delta(x, A, B, c.pool, c.repeat, scaling)) <= 1e-5);
  }
}

namespace {

struct MergeCase {
  const char* name;
  int64_t out, in, group, repeat, R;
  double weight_scale, weight_offset, scaling;
  // Dyadic data: x = k/8 (|k| <= 16), A, B = k/64 (0 < |k| <= 32), scaling a power of two. Then
  // δ = (B A) * scaling / g is exact in fp32, and every double operation below is exact (every
  // value and partial sum fits 53 bits: at most ~48 in the cases here), so the double check is
  // an identity with no rounding at all. Otherwise x, A, B are Gaussian.
  bool dyadic;
  bool rounding_visible;  // large offsets: the fp16 rounding of m' is visible in the outputs
};

// k / denominator with k uniform in [-max_k, max_k] and, when nonzero, k != 0.
at::Tensor dyadic(at::IntArrayRef shape, int64_t max_k, double denominator, bool nonzero) {
  auto k = at::randint(-max_k, max_k + 1, shape, at::kLong);
  if (nonzero) k = at::where(k == 0, at::ones_like(k), k);
  return k.to(at::kFloat) / denominator;
}

void check_merge_case(const MergeCase& c) {
  INFO(c.name << ": group " << c.group << ", repeat " << c.repeat
              << (c.dyadic ? ", dyadic" : ", Gaussian"));
  at::manual_seed(static_cast<uint64_t>(c.group * 7 + c.out + (c.dyadic ? 1000 : 0)));
  const int64_t groups = c.in / c.group;
  auto weight = at::randn({c.out, c.in}) * c.weight_scale + c.weight_offset;
  auto base = qlt::quant::quantize_int4(weight, {c.group});
  auto A = c.dyadic ? dyadic({c.R, groups}, 32, 64, true) : at::randn({c.R, groups}) * 0.3;
  auto B = c.dyadic ? dyadic({c.out / c.repeat, c.R}, 32, 64, true)
                    : at::randn({c.out / c.repeat, c.R}) * 0.3;
  auto x = c.dyadic ? dyadic({3, 7, c.in}, 16, 8, false) : at::randn({3, 7, c.in});
  REQUIRE((A != 0).all().item<bool>());
  REQUIRE((B != 0).all().item<bool>());
  auto delta = pooled_lora_window_delta(A, B, c.group, c.repeat, c.scaling);  // [out, groups]
  auto merged = qlt::adapters::merge_into_int4_offsets(base, delta);

  // The result: same fields, and only the m bytes (offset 2, 3 of each block) changed.
  REQUIRE(merged.shape == base.shape);
  CHECK(merged.group_size == base.group_size);
  CHECK(merged.dtype == base.dtype);
  CHECK(merged.device() == base.device());
  CHECK(!merged.blocks.is_same(base.blocks));
  CHECK(at::equal(merged.blocks.narrow(2, 0, 2), base.blocks.narrow(2, 0, 2)));  // d
  CHECK(at::equal(merged.blocks.narrow(2, 4, c.group / 2), base.blocks.narrow(2, 4, c.group / 2)));
  CHECK(at::equal(base.blocks, qlt::quant::quantize_int4(weight, {c.group}).blocks));  // untouched

  const auto before = decode_int4(base);
  const auto after = decode_int4(merged);
  // Weight domain: the merged offsets are fp16(fp32(m) + δ), and the weights decode from them
  // exactly: dequant(merged) = fp32(d q) + fp32(m') per element, nothing re-quantized.
  auto expected_m = (before.m + delta).to(at::kHalf).to(at::kFloat);
  CHECK(at::equal(after.m, expected_m));
  auto d_full = per_input(before.d, c.group);
  auto expected_w = d_full * before.q + per_input(expected_m, c.group);  // two fp32 roundings
  CHECK(at::equal(qlt::quant::dequantize_int4(merged), expected_w));
  CHECK(at::equal(qlt::quant::dequantize_int4(base),
                  d_full * before.q + per_input(before.m, c.group)));

  // err = m' - (m + δ) in double (exact: m, m' fp16, δ fp32) and its bound.
  auto m_d = before.m.to(at::kDouble), m2_d = after.m.to(at::kDouble);
  auto delta_d = delta.to(at::kDouble);
  auto s = m_d + delta_d;
  auto err = m2_d - s;  // [out, groups]
  const double u = std::ldexp(1.0, -11);
  auto normal = s.abs() >= std::ldexp(1.0, -14);
  CHECK((err.abs() <= s.abs() * u + std::ldexp(1.0, -25)).all().item<bool>());
  CHECK((err.abs() <= s.abs() * u).masked_select(normal).all().item<bool>());
  const double max_err = max_abs(err);
  CHECK(max_err > 0);                             // the rounding happens
  if (c.rounding_visible) CHECK(max_err > 1e-3);  // fp16 spacing 2^-6 near |m| ~ 30

  // Outputs in double from the stored values: W = d q + m, W' = d q + m' (exact in double).
  auto x_d = x.to(at::kDouble);
  auto d_d = d_full.to(at::kDouble), q_d = before.q.to(at::kDouble);
  auto w_d = d_d * q_d + per_input(m_d, c.group);
  auto w2_d = d_d * q_d + per_input(m2_d, c.group);
  CHECK(at::equal(w_d.to(at::kFloat), qlt::quant::dequantize_int4(base)));
  CHECK(at::equal(w2_d.to(at::kFloat), qlt::quant::dequantize_int4(merged)));
  auto S = x_d.unflatten(-1, {groups, c.group}).sum(-1);  // [3, 7, groups]: Σ_{i∈G} x_i
  auto y_a_d = at::matmul(x_d, w_d.t()) + at::matmul(S, delta_d.t());
  auto y_m_d = at::matmul(x_d, w2_d.t());
  auto bound = at::matmul(S.abs(), err.abs().t());  // (*) per output
  auto gap_d = (y_m_d - y_a_d).abs();
  // The δ form of y_a is the pooled delta (evaluated in double from the same fp32 A, B).
  auto pooled_d =
      pooled_lora_delta(x_d, A.to(at::kDouble), B.to(at::kDouble), c.group, c.repeat, c.scaling);
  if (c.dyadic) {
    // Everything exact: y_m - y_a IS Σ_G S_G err_G, and (*) holds with no slack at all
    // (with equality where every term has the same sign).
    CHECK(at::equal(y_m_d - y_a_d, at::matmul(S, err.t())));
    CHECK((gap_d <= bound).all().item<bool>());
    CHECK(at::equal(at::matmul(S, delta_d.t()), pooled_d));
  } else {
    // Gaussian data: double rounding (~1e-16 relative) can tip a tight (*) (all terms of one
    // sign, which happens for a few outputs with 4 or 8 groups), so allow γ_N in double.
    const double n = static_cast<double>(c.in + groups + 2);
    auto slack = n * std::ldexp(1.0, -53) * 2 *
                 (at::matmul(x_d.abs(), (w_d.abs() + w2_d.abs()).t()) +
                  at::matmul(S.abs(), delta_d.abs().t()));
    CHECK((gap_d <= bound + slack).all().item<bool>());
    CHECK(relative_error(at::matmul(S, delta_d.t()), pooled_d) <= 1e-6);  // δ rounded to fp32
  }

  // fp32, as the program computes: adapted (base + pooled delta) vs merged INT4, with the slack
  // of the comment at the top of this file.
  auto y_a = at::linear(x, qlt::quant::dequantize_int4(base)) +
             pooled_lora_delta(x, A, B, c.group, c.repeat, c.scaling);
  auto y_m = at::linear(x, qlt::quant::dequantize_int4(merged));
  const double n = static_cast<double>(c.in + c.group + groups + c.R + 4);
  const double gamma = n * std::ldexp(1.0, -24) / (1 - n * std::ldexp(1.0, -24));
  auto magnitude =
      at::matmul(x_d.abs(), (w_d.abs() + w2_d.abs()).t()) +
      2 * c.scaling *
          repeat_features(
              at::matmul(at::matmul(pool_features(x_d.abs(), c.group), A.to(at::kDouble).abs().t()),
                         B.to(at::kDouble).abs().t()),
              c.repeat);
  auto gap = (y_m - y_a).to(at::kDouble).abs();
  CHECK((gap <= bound + gamma * magnitude).all().item<bool>());
  WARN(fmt::format(
      "{} (g {}, {}): max |m' - (m + δ)| {:.3e}; double: max gap {:.3e}, max bound {:.3e}, "
      "max gap/bound {:.6f}; fp32: max gap {:.3e}, max slack {:.3e}; update moves y by {:.3e}",
      c.name, c.group, c.dyadic ? "dyadic" : "Gaussian", max_err, max_abs(gap_d), max_abs(bound),
      (gap_d / bound).max().item<double>(), max_abs(gap), (gamma * magnitude).max().item<double>(),
      max_abs(at::matmul(S, delta_d.t()))));
}

}  // namespace

TEST_CASE("QA-BLoRA merge into INT4 group offsets is exact up to the fp16 rounding of m'",
          "[blora]") {
  // name, out, in, group, repeat (λ_out), R, weight scale, weight offset, scaling, dyadic, visible
  check_merge_case({"randn*0.05", 48, 256, 32, 2, 8, 0.05, 0.0, 2.0, true, false});
  check_merge_case({"randn*0.05", 48, 256, 64, 2, 8, 0.05, 0.0, 2.0, true, false});
  check_merge_case({"large offsets ~30", 48, 256, 32, 2, 8, 0.05, 30.0, 2.0, true, true});
  check_merge_case({"large offsets ~30", 48, 256, 64, 3, 4, 0.05, 30.0, 2.0, true, true});
  // Tiny weights and update: offsets in fp16's subnormal range (|m + δ| < 2^-14).
  check_merge_case(
      {"subnormal offsets", 32, 128, 32, 1, 4, 1e-6, 0.0, std::ldexp(1.0, -14), true, false});
  // Gaussian x, A, B.
  check_merge_case({"randn*0.05", 48, 256, 32, 2, 8, 0.05, 0.0, 2.0, false, false});
  check_merge_case({"large offsets ~30", 48, 256, 64, 2, 8, 0.05, 30.0, 2.0, false, true});
  check_merge_case({"subnormal offsets", 32, 128, 32, 1, 4, 1e-6, 0.0, 1e-4, false, false});
}

TEST_CASE("merge_into_int4_offsets refuses a window other than the group, and fp16 overflow",
          "[blora]") {
  auto base = qlt::quant::quantize_int4(at::randn({8, 128}), {32});
  REQUIRE_THROWS_WITH(
      qlt::adapters::merge_into_int4_offsets(base, at::zeros({8, 2})),
      Catch::Matchers::Contains("merge_into_int4_offsets: the update must be [out, in / "
                                "group_size] = [8, 4]") &&
          Catch::Matchers::Contains("got [8, 2]"));
  REQUIRE_THROWS_WITH(qlt::adapters::merge_into_int4_offsets(base, at::zeros({8, 4}, at::kDouble)),
                      Catch::Matchers::Contains("must be fp32"));
  auto huge = at::zeros({8, 4});
  huge.index_put_({3, 1}, 70000.0f);
  REQUIRE_THROWS_WITH(qlt::adapters::merge_into_int4_offsets(base, huge),
                      Catch::Matchers::Contains("1 merged group offsets overflow fp16"));
  // A zero update changes nothing.
  CHECK(at::equal(qlt::adapters::merge_into_int4_offsets(base, at::zeros({8, 4})).blocks,
                  base.blocks));
}

namespace {

constexpr int64_t kLambda = 2, kRank = 4;
constexpr double kAlpha = 16, kScaling = kAlpha / kRank;  // Q-BLoRA's alpha / r = 4
const char* const kTargets[] = {"q_proj", "v_proj", "down_proj"};

std::string module_key(int64_t layer, const std::string& proj) {
  const bool mlp = proj == "gate_proj" || proj == "up_proj" || proj == "down_proj";
  return fmt::format("base_model.model.model.layers.{}.{}.{}", layer, mlp ? "mlp" : "self_attn",
                     proj);
}

// A linear's extra output: (layer, projection name, its input x) -> delta [..., out], or an
// undefined tensor for none.
using LinearDelta = std::function<at::Tensor(int64_t, const std::string&, const at::Tensor&)>;

// A small fp32 LLaMA forward over the model's weights (HF semantics, as model/llama.cpp), with
// `delta` added to each linear's output: independent of the model's adapter plumbing.
at::Tensor local_logits(const qlt::model::LlamaModel& m, const at::Tensor& ids,
                        const LinearDelta& delta) {
  const auto& c = m.config;
  const int64_t B = ids.size(0), T = ids.size(1);
  auto positions = at::arange(T, ids.options()).unsqueeze(0).expand({B, T});
  auto rope = qlt::model::rope_tables(m.inv_freq, positions, at::kFloat);
  auto x = at::embedding(m.weights.embed_tokens, ids).to(at::kFloat);
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const auto& l = m.weights.layers[layer];
    auto lin = [&](const std::string& proj, const qlt::adapters::FrozenWeight& w,
                   const at::Tensor& in) {
      auto y = qlt::adapters::frozen_linear(in, w);
      auto extra = delta(layer, proj, in);
      return extra.defined() ? y + extra : y;
    };
    auto heads = [&](const at::Tensor& t, int64_t n) {
      return t.view({B, T, n, c.head_dim}).transpose(1, 2);
    };
    auto h = qlt::model::rms_norm(x, l.input_layernorm, c.rms_norm_eps);
    auto q = qlt::model::apply_rope(heads(lin("q_proj", l.q_proj, h), c.num_attention_heads), rope);
    auto k = qlt::model::apply_rope(heads(lin("k_proj", l.k_proj, h), c.num_key_value_heads), rope);
    auto v = heads(lin("v_proj", l.v_proj, h), c.num_key_value_heads);
    auto attn = at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, /*is_causal=*/true,
                                                 std::nullopt, /*enable_gqa=*/true);
    x = x + lin("o_proj", l.o_proj, attn.transpose(1, 2).reshape({B, T, c.q_size()}));
    auto h2 = qlt::model::rms_norm(x, l.post_attention_layernorm, c.rms_norm_eps);
    auto act = at::silu(lin("gate_proj", l.gate_proj, h2)) * lin("up_proj", l.up_proj, h2);
    x = x + lin("down_proj", l.down_proj, act);
  }
  return at::linear(qlt::model::rms_norm(x, m.weights.norm, c.rms_norm_eps), m.weights.lm_head);
}

}  // namespace

TEST_CASE("native Q-BLoRA adapter matches PEFT running its expanded rank-2r LoRA", "[blora]") {
  // scripts/fixtures/make_blora_peft.py: λ = 2, r = 4, alpha = 16 on q/v/down_proj of
  // llama_gqa; adapter/ is PEFT's save_pretrained of the expansion (r = 8, lora_alpha = 32).
  auto native = qlt::io::SafetensorsFile::open(kBloraPeftDir / "native.safetensors");
  auto peft = qlt::io::SafetensorsFile::open(kBloraPeftDir / "adapter/adapter_model.safetensors");
  auto expected = qlt::io::SafetensorsFile::open(kBloraPeftDir / "expected.safetensors");
  auto model = qlt::model::load_llama(fs::path(QLT_SOURCE_DIR) / "tests/fixtures/llama_gqa",
                                      at::kFloat, at::kCPU);
  const int64_t layers = model.config.num_hidden_layers;
  REQUIRE(native.tensors().size() == static_cast<size_t>(layers * 3 * 2));
  REQUIRE(peft.tensors().size() == native.tensors().size());

  // 1. The expansion of every native pair is PEFT's adapter tensor (exactly: λ = 2 is a power
  //    of two, so A' holds A's values halved, and B' copies B's rows).
  for (int64_t layer = 0; layer < layers; ++layer) {
    for (const char* proj : kTargets) {
      const auto key = module_key(layer, proj);
      INFO(key);
      auto A = native.tensor(key + ".lora_A.weight");
      auto B = native.tensor(key + ".lora_B.weight");
      CHECK(A.size(0) == kLambda * kRank);
      CHECK(B.size(1) == kLambda * kRank);
      auto e = expand_pooled_lora(A, B, kLambda, kLambda);
      CHECK(at::equal(e.A, peft.tensor(key + ".lora_A.weight")));
      CHECK(at::equal(e.B, peft.tensor(key + ".lora_B.weight")));
    }
  }

  // 2. Logits: the native pooled update added by a local forward vs PEFT's logits.
  at::NoGradGuard no_grad;
  auto ids = expected.tensor("input_ids");
  auto want = expected.tensor("logits");
  auto none = [](int64_t, const std::string&, const at::Tensor&) { return at::Tensor(); };
  auto blora = [&](int64_t layer, const std::string& proj, const at::Tensor& x) {
    const auto key = module_key(layer, proj);
    if (!native.contains(key + ".lora_A.weight")) return at::Tensor();
    return pooled_lora_delta(x, native.tensor(key + ".lora_A.weight"),
                             native.tensor(key + ".lora_B.weight"), kLambda, kLambda, kScaling);
  };
  auto base_logits = local_logits(model, ids, none);
  // The local forward is the model's forward (so only the adapter differs).
  CHECK(relative_error(base_logits, model.logits(ids)) <= 1e-6);
  auto got = local_logits(model, ids, blora);
  const double err = relative_error(got, want);
  CHECK(err <= 1e-5);
  const double moved = max_abs(want - base_logits);
  CHECK(moved > 0.1);  // the adapter matters
  WARN(
      fmt::format("Q-BLoRA vs PEFT expanded LoRA: logits relative error {:.2e} (the adapter moves "
                  "the logits by up to {:.3f})",
                  err, moved));
}
