// Next-token choice (model/sampling.h): greedy ties, transformers' top-p rule on hand-made
// distributions, seeded reproducibility, and the sampled frequencies against the softmax.
#include <ATen/CPUGeneratorImpl.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <vector>

#include "model/sampling.h"
#include "test_common.h"

namespace {

using qlt::model::next_token;
using qlt::model::SamplingOptions;
using qlt::model::top_p_filter;
using qlt::test::seeded;

// Logits whose softmax is `probs` (log of the probabilities).
at::Tensor logits_of(const std::vector<float>& probs) {
  return at::tensor(probs, at::kFloat).log();
}

// Indices that top_p_filter keeps (finite logits).
std::vector<int64_t> kept(const at::Tensor& filtered) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < filtered.size(0); ++i)
    if (std::isfinite(filtered[i].item<float>())) out.push_back(i);
  return out;
}

}  // namespace

TEST_CASE("greedy: argmax, the first index on a tie, any dtype", "[model][sampling]") {
  auto gen = seeded(1);
  CHECK(next_token(at::tensor({0.1f, 3.0f, -2.0f, 2.9f}), {}, gen) == 1);
  CHECK(next_token(at::tensor({1.0f, 5.0f, 5.0f, 5.0f}), {}, gen) == 1);
  CHECK(next_token(at::tensor({1.0f, 2.0f, 7.0f}).to(at::kBFloat16), {}, gen) == 2);
  // Greedy draws nothing: the generator is left as it was.
  auto fresh = seeded(1);
  CHECK(at::multinomial(at::ones({8}), 1, false, gen).item<int64_t>() ==
        at::multinomial(at::ones({8}), 1, false, fresh).item<int64_t>());
}

TEST_CASE("top-p keeps the smallest most probable set reaching top_p", "[model][sampling]") {
  // Probabilities 0.5, 0.05, 0.3, 0.15 (descending: 0, 2, 3, 1; cumulative 0.5, 0.8, 0.95, 1).
  auto logits = logits_of({0.5f, 0.05f, 0.3f, 0.15f});
  CHECK(kept(top_p_filter(logits, 0.4)) == std::vector<int64_t>{0});
  CHECK(kept(top_p_filter(logits, 0.6)) == std::vector<int64_t>{0, 2});
  CHECK(kept(top_p_filter(logits, 0.85)) == std::vector<int64_t>{0, 2, 3});
  CHECK(kept(top_p_filter(logits, 0.99)) == std::vector<int64_t>{0, 1, 2, 3});
  // At least one token, however small top_p.
  CHECK(kept(top_p_filter(logits, 1e-9)) == std::vector<int64_t>{0});
  // 1.0: unchanged, even a token of probability 0 stays (transformers adds no warper).
  auto with_zero = at::tensor({0.0f, -std::numeric_limits<float>::infinity(), 1.0f});
  CHECK(at::equal(top_p_filter(with_zero, 1.0), with_zero));
  // Kept logits are unchanged; removed ones are -inf.
  auto filtered = top_p_filter(logits, 0.6);
  CHECK(filtered[0].item<float>() == logits[0].item<float>());
  CHECK(filtered[1].item<float>() == -std::numeric_limits<float>::infinity());
}

TEST_CASE("sampling with a seed is reproducible and differs between seeds", "[model][sampling]") {
  auto logits = at::randn({50}, seeded(3));
  const SamplingOptions options{0.8, 0.9};
  auto draw = [&](uint64_t seed) {
    auto gen = seeded(seed);
    std::vector<int64_t> ids;
    for (int i = 0; i < 40; ++i) ids.push_back(next_token(logits, options, gen));
    return ids;
  };
  CHECK(draw(11) == draw(11));
  CHECK(draw(11) != draw(12));
}

TEST_CASE("sampled frequencies follow the tempered, filtered softmax", "[model][sampling]") {
  const std::vector<float> probs = {0.5f, 0.05f, 0.3f, 0.15f};
  auto logits = logits_of(probs);
  const int n = 20000;
  auto frequencies = [&](const SamplingOptions& options) {
    auto gen = seeded(5);
    std::vector<double> count(probs.size(), 0.0);
    for (int i = 0; i < n; ++i) count[next_token(logits, options, gen)] += 1.0 / n;
    return count;
  };
  // Temperature 1: the probabilities themselves (4 standard deviations of a binomial).
  auto f = frequencies({1.0, 1.0});
  for (size_t i = 0; i < probs.size(); ++i) {
    INFO("token " << i);
    CHECK(std::abs(f[i] - probs[i]) <= 4 * std::sqrt(probs[i] * (1 - probs[i]) / n));
  }
  // Temperature 0.5 squares the probabilities: 0.685, 0.007, 0.247, 0.062 renormalized; top_p
  // applies to those: 0.8 keeps tokens 0 and 2.
  f = frequencies({0.5, 0.8});
  CHECK(f[1] == 0.0);
  CHECK(f[3] == 0.0);
  const double p0 = 0.25 / (0.25 + 0.09);
  CHECK(std::abs(f[0] - p0) <= 4 * std::sqrt(p0 * (1 - p0) / n));
}
