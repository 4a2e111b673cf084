// Incremental decoding with a KV cache (model/kv_cache.h, forward_cached in model/llama.h):
// the logits of a prompt followed by one token at a time (and by chunks of several tokens
// after a past) equal those of the whole sequence in one forward, in fp32, on the GQA fixture,
// the bundled tiny model, the llama3-RoPE tied fixture, and with LoRA adapters attached.
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <catch2/catch.hpp>

#include "export/peft_adapter.h"
#include "model/kv_cache.h"
#include "model/llama.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using qlt::model::LlamaModel;
using qlt::test::kRoot;

// Logits [B, T, vocab] of `ids` [B, T] computed through the cache, feeding the sequence in
// pieces of the given lengths (their sum is T).
at::Tensor cached_logits(const LlamaModel& model, const at::Tensor& ids,
                         const std::vector<int64_t>& pieces) {
  auto cache = qlt::model::make_kv_cache(model.config, ids.size(0), ids.size(1),
                                         model.compute_dtype, model.device());
  std::vector<at::Tensor> out;
  int64_t start = 0;
  for (int64_t n : pieces) {
    auto hidden = qlt::model::forward_cached(model, ids.narrow(1, start, n), cache);
    out.push_back(at::linear(hidden, model.weights.lm_head));
    start += n;
    CHECK(cache.length == start);
  }
  REQUIRE(start == ids.size(1));
  return at::cat(out, 1);
}

// Max |cached - full| / max |full| over every position, for several ways of cutting the
// sequence: all at once, prompt then one by one, one by one from the start, and chunks of 3
// after a past (the explicit-mask path).
void check_cached_equals_full(const LlamaModel& model, const std::string& what) {
  const int64_t B = 2, T = 11;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto ids = at::randint(3, model.config.vocab_size, {B, T}, gen, at::kLong);
  at::Tensor full;
  {
    at::NoGradGuard no_grad;
    full = model.logits(ids);
  }
  const std::vector<std::vector<int64_t>> cuts = {
      {11}, {4, 1, 1, 1, 1, 1, 1, 1}, std::vector<int64_t>(11, 1), {2, 3, 3, 3}};
  for (const auto& cut : cuts) {
    auto got = cached_logits(model, ids, cut);
    REQUIRE(got.sizes() == full.sizes());
    const double err = (got - full).abs().max().item<double>() / full.abs().max().item<double>();
    INFO(what << ", pieces of " << fmt::format("{}", fmt::join(cut, ",")) << ": relative error "
              << err);
    CHECK(err <= 1e-5);
  }
}

}  // namespace

TEST_CASE("cached decoding equals the full forward (GQA fixture, fp32)", "[model][kv_cache]") {
  auto model = qlt::model::load_llama(kRoot / "tests/fixtures/llama_gqa", at::kFloat, at::kCPU);
  REQUIRE(model.config.num_key_value_heads < model.config.num_attention_heads);
  check_cached_equals_full(model, "llama_gqa");
}

TEST_CASE("cached decoding equals the full forward (tiny model, fp32)", "[model][kv_cache]") {
  auto model = qlt::model::load_llama(kRoot / "data/tiny-llama", at::kFloat, at::kCPU);
  check_cached_equals_full(model, "tiny-llama");
}

TEST_CASE("cached decoding equals the full forward (llama3 RoPE, tied, fp32)",
          "[model][kv_cache]") {
  auto model = qlt::model::load_llama(kRoot / "tests/fixtures/llama3_tied", at::kFloat, at::kCPU);
  check_cached_equals_full(model, "llama3_tied");
}

TEST_CASE("cached decoding applies LoRA adapters as the full forward does", "[model][kv_cache]") {
  auto model = qlt::model::load_llama(kRoot / "tests/fixtures/llama_gqa", at::kFloat, at::kCPU);
  auto ids = at::arange(3, 13, at::kLong).unsqueeze(0);
  at::Tensor base;
  {
    at::NoGradGuard no_grad;
    base = model.logits(ids);
  }
  qlt::exporter::load_peft_adapter(model, kRoot / "tests/fixtures/lora_llama_gqa/adapter",
                                   qlt::quant::DenseFormat{});
  REQUIRE(!!model.has_adapters());
  check_cached_equals_full(model, "llama_gqa + LoRA");
  // The adapter changes the output, so the comparison above saw it.
  CHECK((cached_logits(model, ids, {5, 5}) - base).abs().max().item<double>() > 1e-3);
}

TEST_CASE("the cache keeps rotated keys at their positions and refuses overflow",
          "[model][kv_cache]") {
  auto model = qlt::model::load_llama(kRoot / "tests/fixtures/llama_gqa", at::kFloat, at::kCPU);
  const auto& c = model.config;
  auto cache = qlt::model::make_kv_cache(c, 1, 6, at::kFloat, at::kCPU);
  REQUIRE(cache.keys.size() == static_cast<size_t>(c.num_hidden_layers));
  CHECK(cache.keys[0].sizes() == at::IntArrayRef({1, c.num_key_value_heads, 6, c.head_dim}));
  CHECK(cache.capacity() == 6);
  auto ids = at::tensor(std::vector<int64_t>{5, 9, 17, 33}, at::kLong).unsqueeze(0);
  qlt::model::forward_cached(model, ids.narrow(1, 0, 3), cache);
  CHECK(cache.length == 3);
  // Positions past the length are untouched (still zero).
  CHECK(cache.keys[1].narrow(2, 3, 3).abs().max().item<double>() == 0.0);
  CHECK(cache.values[1].narrow(2, 0, 3).abs().max().item<double>() > 0.0);
  // In layer 0 token 5 at position 1 has the values it has at position 0, other keys (RoPE).
  auto again = qlt::model::make_kv_cache(c, 1, 6, at::kFloat, at::kCPU);
  qlt::model::forward_cached(model, at::tensor(std::vector<int64_t>{9, 5}, at::kLong).unsqueeze(0),
                             again);
  CHECK(at::allclose(again.values[0].narrow(2, 1, 1), cache.values[0].narrow(2, 0, 1)));
  CHECK(!at::allclose(again.keys[0].narrow(2, 1, 1), cache.keys[0].narrow(2, 0, 1)));
  qlt::model::forward_cached(model, ids.narrow(1, 3, 1), cache);
  CHECK_THROWS_WITH(qlt::model::forward_cached(model, ids.narrow(1, 0, 3), cache),
                    Catch::Contains("exceed the capacity 6"));
  auto other_batch = qlt::model::make_kv_cache(c, 2, 6, at::kFloat, at::kCPU);
  CHECK_THROWS_WITH(qlt::model::forward_cached(model, ids, other_batch),
                    Catch::Contains("not made for this model and batch"));
}
