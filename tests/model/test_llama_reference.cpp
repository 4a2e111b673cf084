// The LLaMA forward pass against Hugging Face transformers (fixtures made by
// scripts/fixtures/make_llama_fixtures.py): logits within 1e-4 and the loss, in fp32.
#include <fmt/format.h>

#include <catch2/catch.hpp>

#include "io/safetensors.h"
#include "model/causal_lm_loss.h"
#include "model/llama.h"
#include "model/rope.h"
#include "test_paths.h"

namespace {

using qlt::model::LlamaModel;

struct LlamaReference {
  at::Tensor input_ids, labels, logits, loss;
};

LlamaReference load_reference(const std::string& fixture) {
  auto file = qlt::io::SafetensorsFile::open(std::filesystem::path(QLT_SOURCE_DIR) /
                                             "tests/fixtures" / fixture / "batch.safetensors");
  return {file.tensor("input_ids").clone(), file.tensor("labels").clone(),
          file.tensor("logits").clone(), file.tensor("loss").clone()};
}

LlamaModel load_fixture_model(const std::string& fixture, at::ScalarType dtype = at::kFloat) {
  return qlt::model::load_llama(std::filesystem::path(QLT_SOURCE_DIR) / "tests/fixtures" / fixture,
                                dtype, at::kCPU);
}

void check_matches_reference(const std::string& fixture) {
  auto model = load_fixture_model(fixture);
  auto ref = load_reference(fixture);
  at::NoGradGuard no_grad;
  auto logits = model.logits(ref.input_ids);
  REQUIRE(logits.sizes() == ref.logits.sizes());
  const double max_diff = (logits - ref.logits).abs().max().item<double>();
  UNSCOPED_INFO(fmt::format("{}: max |logits - reference| = {:.3e}", fixture, max_diff));
  CHECK(max_diff <= 1e-4);

  auto loss = qlt::model::causal_lm_loss(model.hidden_states(ref.input_ids), model.weights.lm_head,
                                         ref.labels, /*chunk_size=*/7);  // odd chunks on purpose
  const double ref_loss = ref.loss.item<double>();
  UNSCOPED_INFO(fmt::format("{}: loss {:.8f} vs reference {:.8f}", fixture, loss.mean(), ref_loss));
  CHECK(loss.mean() == Approx(ref_loss).epsilon(1e-5));
  // Report the figure even when passing (ctest -V shows it).
  WARN(fmt::format("{}: max |logits diff| {:.3e}, loss {:.8f} (reference {:.8f})", fixture,
                   max_diff, loss.mean(), ref_loss));
}

}  // namespace

TEST_CASE("llama GQA + untied embeddings matches transformers in fp32", "[model][reference]") {
  check_matches_reference("llama_gqa");
}

TEST_CASE("llama3 rope scaling + tied embeddings (sharded) matches transformers in fp32",
          "[model][reference]") {
  check_matches_reference("llama3_tied");
}

TEST_CASE("llama3 rope scaling changes low frequencies and keeps high ones", "[model][rope]") {
  auto model = load_fixture_model("llama3_tied");
  auto scaled = qlt::model::rope_inv_freq(model.config);
  auto plain_config = model.config;
  plain_config.rope_scaling.llama3 = false;
  auto plain = qlt::model::rope_inv_freq(plain_config);
  REQUIRE(scaled.sizes() == plain.sizes());
  CHECK(scaled[0].item<float>() == plain[0].item<float>());  // highest frequency unchanged
  const int64_t last = scaled.size(0) - 1;
  CHECK(scaled[last].item<double>() ==
        Approx(plain[last].item<double>() / model.config.rope_scaling.factor));
}

TEST_CASE("bf16 compute stays close to the fp32 reference", "[model][reference]") {
  auto model = load_fixture_model("llama_gqa", at::kBFloat16);
  auto ref = load_reference("llama_gqa");
  at::NoGradGuard no_grad;
  auto logits = model.logits(ref.input_ids).to(at::kFloat);
  CHECK(logits.scalar_type() == at::kFloat);
  // bf16 has an 8-bit mantissa: compare by normalized error, not elementwise.
  const double rel = ((logits - ref.logits).norm() / ref.logits.norm()).item<double>();
  CHECK(rel < 2e-2);
}

TEST_CASE("loss ignores labels of -100 and padding", "[model][loss]") {
  auto model = load_fixture_model("llama_gqa");
  auto ref = load_reference("llama_gqa");
  at::NoGradGuard no_grad;
  auto hidden = model.hidden_states(ref.input_ids);
  auto all_ignored = at::full_like(ref.labels, qlt::model::kIgnoreIndex);
  auto none = qlt::model::causal_lm_loss(hidden, model.weights.lm_head, all_ignored);
  CHECK(none.count == 0);
  CHECK(none.sum.item<double>() == 0.0);
  // Chunking does not change the sum.
  auto a = qlt::model::causal_lm_loss(hidden, model.weights.lm_head, ref.labels, 1);
  auto b = qlt::model::causal_lm_loss(hidden, model.weights.lm_head, ref.labels, 4096);
  CHECK(a.count == b.count);
  CHECK(a.sum.item<double>() == Approx(b.sum.item<double>()).epsilon(1e-6));
}

TEST_CASE("loss gradients flow to the hidden states", "[model][loss]") {
  auto model = load_fixture_model("llama_gqa");
  auto ref = load_reference("llama_gqa");
  auto hidden = model.hidden_states(ref.input_ids).detach().requires_grad_(true);
  auto loss = qlt::model::causal_lm_loss(hidden, model.weights.lm_head, ref.labels, 5);
  loss.sum.backward();
  REQUIRE(hidden.grad().defined());
  CHECK(hidden.grad().abs().sum().item<double>() > 0);
}
