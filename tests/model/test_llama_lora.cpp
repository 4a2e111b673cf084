// LoRA in the LLaMA model against PEFT 0.21.2 (fixtures of scripts/fixtures/make_lora_fixtures.py):
// logits, loss and every adapter gradient; plus attachment, parameter naming, packed
// (segment-masked) attention and training-mode dropout.
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <set>

#include "core/errors.h"
#include "export/peft_adapter.h"
#include "io/safetensors.h"
#include "model/adapter_test_util.h"
#include "model/causal_lm_loss.h"
#include "model/llama.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using qlt::model::LlamaModel;
using qlt::test::adapter_opts;
using qlt::test::kFixtures;
using qlt::test::load_llama_gqa;
using qlt::test::lora_params;
using qlt::test::relative_error;
using qlt::test::seeded;

// Loads the PEFT adapter folder onto the fp32 base, runs the fixture batch, back-propagates the
// mean loss and compares with PEFT's logits, loss and gradients.
void check_peft_parity(const std::string& adapter_folder, const std::string& expected_file,
                       size_t expected_tensors) {
  auto model = load_llama_gqa();
  qlt::exporter::load_peft_adapter(model, kFixtures / "lora_llama_gqa" / adapter_folder,
                                   qlt::quant::DenseFormat{});
  auto ref = qlt::io::SafetensorsFile::open(kFixtures / "lora_llama_gqa" / expected_file);
  auto params = lora_params(model);
  REQUIRE(params.size() == expected_tensors);

  auto hidden = model.hidden_states(ref.tensor("input_ids"));
  auto logits = at::linear(hidden, model.weights.lm_head);
  const double logits_err = relative_error(logits, ref.tensor("logits"));
  CHECK(logits_err <= 1e-5);

  auto loss = qlt::model::causal_lm_loss(hidden, model.weights.lm_head, ref.tensor("labels"), 5);
  const double want_loss = ref.tensor("loss").item<double>();
  const double loss_err = std::abs(loss.mean() - want_loss) / std::abs(want_loss);
  CHECK(loss_err <= 1e-5);

  (loss.sum / static_cast<double>(loss.count)).backward();
  double max_grad_err = 0;
  std::string worst;
  for (const auto& [name, tensor] : params) {
    REQUIRE(tensor.grad().defined());
    const double err = relative_error(tensor.grad(), ref.tensor("grad." + name));
    INFO(name << ": relative error " << err);
    CHECK(err <= 1e-5);
    if (err >= max_grad_err) {
      max_grad_err = err;
      worst = name;
    }
  }
  WARN(fmt::format(
      "{}: max relative error logits {:.2e}, loss {:.2e} ({:.8f} vs {:.8f}), "
      "grads {:.2e} ({})",
      adapter_folder, logits_err, loss_err, loss.mean(), want_loss, max_grad_err, worst));
}

}  // namespace

TEST_CASE("LoRA model matches PEFT: logits, loss and every adapter gradient (r=4, alpha=8)",
          "[model][lora][reference]") {
  check_peft_parity("adapter", "expected.safetensors", 28);
}

TEST_CASE("rsLoRA on a subset of modules matches PEFT (r=2, alpha=6, q/v/down)",
          "[model][lora][reference]") {
  check_peft_parity("adapter_rslora", "expected_rslora.safetensors", 12);
}

TEST_CASE("freshly attached adapters (B = 0) leave the model's output unchanged", "[model][lora]") {
  auto model = load_llama_gqa();
  auto ids = at::randint(3, 96, {2, 9}, at::kLong);
  at::Tensor before;
  {
    at::NoGradGuard no_grad;
    before = model.logits(ids);
  }
  auto gen = seeded(5);
  qlt::model::attach_adapters(model, adapter_opts({}), gen);
  at::NoGradGuard no_grad;
  CHECK(at::equal(model.logits(ids), before));
}

TEST_CASE("lora_parameters: PEFT names, fixed order, trainable leaves, seeded init",
          "[model][lora]") {
  auto model = load_llama_gqa();
  CHECK(lora_params(model).empty());
  auto gen = seeded(42);
  qlt::AdapterConfig options;
  options.rank = 4;
  qlt::model::attach_adapters(model, adapter_opts(options), gen);
  auto params = lora_params(model);
  REQUIRE(params.size() == 2 * 7 * 2);
  CHECK(params[0].first == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  CHECK(params[1].first == "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  CHECK(params[13].first == "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  CHECK(params[14].first == "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
  CHECK(params[2].second.sizes() == at::IntArrayRef({4, 64}));    // k_proj A [r, hidden]
  CHECK(params[3].second.sizes() == at::IntArrayRef({32, 4}));    // k_proj B [kv_size, r]
  CHECK(params[13].second.sizes() == at::IntArrayRef({64, 4}));   // down_proj B [hidden, r]
  CHECK(params[12].second.sizes() == at::IntArrayRef({4, 160}));  // down_proj A [r, inter]
  // The same names and shapes PEFT saved for this model.
  auto peft = qlt::io::SafetensorsFile::open(kFixtures /
                                             "lora_llama_gqa/adapter/"
                                             "adapter_model.safetensors");
  std::set<std::string> peft_names;
  for (const auto& info : peft.tensors()) peft_names.insert(info.name);
  std::set<std::string> our_names;
  for (const auto& [name, t] : params) {
    our_names.insert(name);
    CHECK(t.is_leaf());
    CHECK(t.requires_grad());
    CHECK(t.scalar_type() == at::kFloat);
    CHECK(t.sizes() == at::IntArrayRef(peft.info(name).shape));
  }
  CHECK(our_names == peft_names);
  // The tensors are the model's own: a gradient step through them changes the model.
  CHECK(params[0].second.is_same(std::get<qlt::adapters::LowRankAdapter>(*model.adapters[0][0]).A));

  // Same seed, same adapters; another seed, other adapters.
  auto again = load_llama_gqa();
  auto gen2 = seeded(42);
  qlt::model::attach_adapters(again, adapter_opts(options), gen2);
  auto gen3 = seeded(43);
  auto other = load_llama_gqa();
  qlt::model::attach_adapters(other, adapter_opts(options), gen3);
  CHECK(at::equal(lora_params(again)[26].second, params[26].second));
  CHECK(!at::equal(lora_params(other)[0].second, params[0].second));
}

TEST_CASE("attach_adapters refuses unknown target modules", "[model][lora][errors]") {
  auto model = load_llama_gqa();
  auto gen = seeded(1);
  qlt::AdapterConfig options;
  options.target_modules = {"q_proj", "lm_head"};
  REQUIRE_THROWS_AS(qlt::model::attach_adapters(model, adapter_opts(options), gen), qlt::UserError);
  REQUIRE_THROWS_WITH(qlt::model::attach_adapters(model, adapter_opts(options), gen),
                      Catch::Matchers::Contains("unknown adapter target module 'lm_head'") &&
                          Catch::Matchers::Contains(
                              "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"));
  CHECK(!model.has_adapters());  // nothing attached by a failed call
}

TEST_CASE("packed_position_ids restart at every segment", "[model][packing]") {
  auto seg = at::tensor({1, 1, 1, 2, 2, 3, 0, 0, 2, 2, 2, 2, 1, 0, 0, 0}, at::kLong).view({2, 8});
  auto pos = qlt::model::packed_position_ids(seg);
  auto want = at::tensor({0, 1, 2, 0, 1, 0, 0, 1, 0, 1, 2, 3, 0, 0, 1, 2}, at::kLong).view({2, 8});
  CHECK(at::equal(pos, want));
  auto mask = qlt::model::segment_attention_mask(seg);
  REQUIRE(mask.sizes() == at::IntArrayRef({2, 1, 8, 8}));
  CHECK(mask[0][0][4][3].item<bool>());              // same segment, earlier key
  CHECK(!mask[0][0][4][2].item<bool>());             // other segment
  CHECK(!mask[0][0][3][4].item<bool>());             // later key
  CHECK(mask.diagonal(0, 2, 3).all().item<bool>());  // no empty row, padding included
}

TEST_CASE("packed rows with segment_ids equal each example run alone", "[model][packing]") {
  auto model = load_llama_gqa();
  auto gen = seeded(8);
  qlt::model::attach_adapters(model, adapter_opts({}), gen);
  {  // non-zero B so the adapters take part
    at::NoGradGuard no_grad;
    for (auto& [name, t] : lora_params(model)) {
      if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.05);
    }
  }
  at::manual_seed(2);
  auto a = at::randint(3, 96, {1, 5}, at::kLong);
  auto b = at::randint(3, 96, {1, 6}, at::kLong);
  auto pad = at::zeros({1, 2}, at::kLong);
  auto packed = at::cat({a, b, pad}, 1);  // [1, 13]
  auto seg = at::cat({at::full({1, 5}, 1, at::kLong), at::full({1, 6}, 2, at::kLong),
                      at::zeros({1, 2}, at::kLong)},
                     1);
  at::NoGradGuard no_grad;
  auto h = model.hidden_states(packed, qlt::model::packed_position_ids(seg), seg);
  auto ha = model.hidden_states(a);
  auto hb = model.hidden_states(b);
  CHECK(at::allclose(h.narrow(1, 0, 5), ha, 1e-5, 1e-5));
  CHECK(at::allclose(h.narrow(1, 5, 6), hb, 1e-5, 1e-5));
  CHECK(at::isfinite(h).all().item<bool>());  // padding rows too

  // One segment covering the row is plain causal attention.
  auto ids = at::randint(3, 96, {2, 7}, at::kLong);
  auto one = at::ones({2, 7}, at::kLong);
  CHECK(at::allclose(model.hidden_states(ids, {}, one), model.hidden_states(ids), 1e-6, 1e-6));
}

TEST_CASE("decoder_layer alone reproduces hidden_states", "[model][lora]") {
  auto model = load_llama_gqa();
  auto ids = at::randint(3, 96, {2, 6}, at::kLong);
  at::NoGradGuard no_grad;
  auto positions = at::arange(6, at::kLong).unsqueeze(0).expand({2, 6});
  auto rope = qlt::model::rope_tables(model.inv_freq, positions, model.compute_dtype);
  auto x = at::embedding(model.weights.embed_tokens, ids);
  for (int64_t i = 0; i < model.config.num_hidden_layers; ++i) {
    x = qlt::model::decoder_layer(model, i, x, rope, {}, {});
  }
  x = qlt::model::rms_norm(x, model.weights.norm, model.config.rms_norm_eps);
  CHECK(at::equal(x, model.hidden_states(ids)));
}

TEST_CASE("training-mode LoRA dropout is reproducible from the generator; eval ignores it",
          "[model][lora][dropout]") {
  auto model = load_llama_gqa();
  qlt::AdapterConfig options;
  options.dropout = 0.3;
  auto gen = seeded(3);
  qlt::model::attach_adapters(model, adapter_opts(options), gen);
  {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : lora_params(model)) {
      if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.05);
    }
  }
  auto ids = at::randint(3, 96, {2, 8}, at::kLong);
  at::NoGradGuard no_grad;
  auto train = [&](uint64_t seed) {
    return model.hidden_states(ids, {}, {}, {true, seeded(seed)});
  };
  auto eval = model.hidden_states(ids);
  CHECK(at::equal(train(11), train(11)));
  CHECK(!at::equal(train(11), train(12)));
  CHECK(!at::equal(train(11), eval));
  CHECK(at::equal(model.hidden_states(ids, {}, {}, {false, seeded(11)}), eval));
  REQUIRE_THROWS_WITH(model.hidden_states(ids, {}, {}, {true, std::nullopt}),
                      Catch::Matchers::Contains("needs an explicit generator"));
}

TEST_CASE("NF4 base + LoRA equals a dense base holding the dequantized weights (fp32)",
          "[model][lora][nf4]") {
  auto nf4 = qlt::model::load_llama(kFixtures / "llama_gqa", at::kFloat, at::kCPU,
                                    qlt::quant::Nf4Options{});
  auto dense = load_llama_gqa();
  using qlt::model::LlamaLayerWeights;
  for (auto member :
       {&LlamaLayerWeights::q_proj, &LlamaLayerWeights::k_proj, &LlamaLayerWeights::v_proj,
        &LlamaLayerWeights::o_proj, &LlamaLayerWeights::gate_proj, &LlamaLayerWeights::up_proj,
        &LlamaLayerWeights::down_proj}) {
    for (size_t i = 0; i < dense.weights.layers.size(); ++i) {
      const auto& q = nf4.weights.layers[i].*member;
      REQUIRE(q.quantized());
      dense.weights.layers[i].*member = qlt::adapters::FrozenWeight(q.materialize(at::kFloat));
    }
  }
  const auto adapter = kFixtures / "lora_llama_gqa/adapter";
  qlt::exporter::load_peft_adapter(nf4, adapter, qlt::quant::DenseFormat{});
  qlt::exporter::load_peft_adapter(dense, adapter, qlt::quant::DenseFormat{});
  auto ref = qlt::io::SafetensorsFile::open(kFixtures / "lora_llama_gqa/expected.safetensors");
  auto run = [&](const LlamaModel& m) {
    auto hidden = m.hidden_states(ref.tensor("input_ids"));
    auto loss = qlt::model::causal_lm_loss(hidden, m.weights.lm_head, ref.tensor("labels"));
    (loss.sum / static_cast<double>(loss.count)).backward();
    return at::linear(hidden, m.weights.lm_head).detach();
  };
  CHECK(at::allclose(run(nf4), run(dense), 1e-5, 1e-5));
  auto p_nf4 = lora_params(nf4);
  auto p_dense = lora_params(dense);
  REQUIRE(p_nf4.size() == p_dense.size());
  for (size_t i = 0; i < p_nf4.size(); ++i) {
    INFO(p_nf4[i].first);
    REQUIRE(p_nf4[i].second.grad().defined());
    CHECK(relative_error(p_nf4[i].second.grad(), p_dense[i].second.grad()) < 1e-5);
  }
}

TEST_CASE("bf16 compute with fp32 adapters stays close to PEFT's fp32 logits",
          "[model][lora][reference]") {
  auto model = load_llama_gqa(at::kBFloat16);
  qlt::exporter::load_peft_adapter(model, kFixtures / "lora_llama_gqa/adapter",
                                   qlt::quant::DenseFormat{});
  auto ref = qlt::io::SafetensorsFile::open(kFixtures / "lora_llama_gqa/expected.safetensors");
  auto hidden = model.hidden_states(ref.tensor("input_ids"));
  CHECK(hidden.scalar_type() == at::kBFloat16);
  auto logits = at::linear(hidden, model.weights.lm_head).to(at::kFloat);
  auto want = ref.tensor("logits");
  // bf16 has an 8-bit mantissa: compare by normalized error.
  const double rel = ((logits - want).norm() / want.norm()).item<double>();
  CHECK(rel < 2e-2);
  auto loss = qlt::model::causal_lm_loss(hidden, model.weights.lm_head, ref.tensor("labels"));
  (loss.sum / static_cast<double>(loss.count)).backward();
  for (const auto& [name, t] : lora_params(model)) {
    INFO(name);
    CHECK(t.scalar_type() == at::kFloat);
    REQUIRE(t.grad().defined());
    CHECK(t.grad().scalar_type() == at::kFloat);
    CHECK(at::isfinite(t.grad()).all().item<bool>());
  }
  WARN("bf16 + LoRA: normalized logits error vs PEFT fp32 " << rel);
}
