// Generation with the KV cache (model/generate.h): greedy tokens equal the argmax of a full
// forward over the whole sequence at every step, stop tokens end it, the cache grows past its
// first allocation, and a seed reproduces sampled tokens.
#include <catch2/catch.hpp>

#include "model/generate.h"
#include "model/kv_cache.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using qlt::model::GenerateOptions;
using qlt::model::LlamaModel;

const LlamaModel& tiny_model() {
  static const LlamaModel m = qlt::model::load_llama(qlt::test::kTinyLlama, at::kFloat, at::kCPU);
  return m;
}

// Greedy continuation by full forwards (no cache): the reference.
std::vector<int64_t> greedy_without_cache(const LlamaModel& m, std::vector<int64_t> ids,
                                          int64_t n) {
  at::NoGradGuard no_grad;
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    auto logits = m.logits(at::tensor(ids, at::kLong).unsqueeze(0));
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    out.push_back(next);
    ids.push_back(next);
  }
  return out;
}

}  // namespace

TEST_CASE("greedy generation with the cache equals full forwards, past the first allocation",
          "[model][generate]") {
  const std::vector<int64_t> prompt = {1, 1042, 261, 1777, 1263};
  GenerateOptions options;
  options.max_new_tokens = 300;  // the cache starts at 5 + 256 positions and must grow
  std::vector<int64_t> streamed;
  const auto r = qlt::model::generate(tiny_model(), prompt, options,
                                      [&](int64_t id) { streamed.push_back(id); });
  CHECK(!r.stop_id);
  REQUIRE(r.ids.size() == 300);
  CHECK(streamed == r.ids);
  CHECK(r.ids == greedy_without_cache(tiny_model(), prompt, 300));
}

TEST_CASE("a stop token ends generation and is not returned", "[model][generate]") {
  const std::vector<int64_t> prompt = {1, 1042, 261, 1777, 1263};
  GenerateOptions options;
  options.max_new_tokens = 20;
  const auto all = qlt::model::generate(tiny_model(), prompt, options);
  REQUIRE(all.ids.size() == 20);
  options.stop_ids = {all.ids[6]};
  const auto stopped = qlt::model::generate(tiny_model(), prompt, options);
  REQUIRE(stopped.stop_id == all.ids[6]);
  // Up to the first occurrence of the stop token.
  const auto first = std::find(all.ids.begin(), all.ids.end(), all.ids[6]) - all.ids.begin();
  CHECK(stopped.ids == std::vector<int64_t>(all.ids.begin(), all.ids.begin() + first));
  options.max_new_tokens = 1;
  options.stop_ids = {};
  CHECK(qlt::model::generate(tiny_model(), prompt, options).ids ==
        std::vector<int64_t>{all.ids[0]});
}

TEST_CASE("sampled generation: the same seed, the same tokens", "[model][generate]") {
  const std::vector<int64_t> prompt = {1, 300, 261};
  GenerateOptions options;
  options.max_new_tokens = 30;
  options.sampling = {1.0, 0.9};
  options.seed = 3;
  const auto a = qlt::model::generate(tiny_model(), prompt, options);
  const auto b = qlt::model::generate(tiny_model(), prompt, options);
  options.seed = 4;
  const auto c = qlt::model::generate(tiny_model(), prompt, options);
  CHECK(a.ids == b.ids);
  CHECK(a.ids != c.ids);
}

TEST_CASE("KvCache::grow keeps the cached positions", "[model][kv_cache]") {
  auto cache = qlt::model::make_kv_cache(tiny_model().config, 1, 4, at::kFloat, at::kCPU);
  qlt::model::forward_cached(tiny_model(), at::tensor(std::vector<int64_t>{1, 5, 9}).unsqueeze(0),
                             cache);
  const auto before = cache.keys[2].narrow(2, 0, 3).clone();
  cache.grow(10);
  CHECK(cache.capacity() == 10);
  CHECK(cache.length == 3);
  CHECK(at::equal(cache.keys[2].narrow(2, 0, 3), before));
  CHECK_THROWS(cache.grow(2));
}
