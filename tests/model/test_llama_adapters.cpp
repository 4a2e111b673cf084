// Every adapter kind in the LLaMA model (model/llama.h over adapters/adapter.h): Q-BLoRA against
// PEFT running its expanded LoRA (tests/fixtures/blora_peft/) and its export, the exact merges
// of QA-BLoRA (into the INT4 group offsets) and L4Q (its own codes, bit-identical logits), the
// L4Q warm-up switch, the trainable tensors of each kind, and the configurations refused.
//
// ---- The QA-BLoRA merged-model tolerance ----
// The merge keeps every d and every code and stores m' = fp16(fp32(m) + δ) per group
// (adapters/balanced_lora.h). Per linear the merged output differs from the adapted one only by
// Σ_G S_G err_G, S_G = Σ_{i∈G} x_i, with |err_G| <= 2^-11 |m + δ| + 2^-25 (proven and checked in
// tests/adapters/test_balanced_lora.cpp), so
//   |y_m - y_a| <= 2^-11 Σ_G |S_G| |m'_G|   (to first order),
// i.e. 2^-11 κ relative to the output, κ = ||Σ_G |S_G| |m'_G| || / ||y||. κ is not 1: the
// offsets are the group minima, and their term in y cancels largely against the codes' term, so
// Σ_G |S_G| |m'_G| is a few times |y|. The test measures κ for every merged linear (random
// N(0, 1) inputs standing for the RMS-normed activations; measured 2.6 to 4.0, the largest for
// down_proj) and requires it <= 5. The two decoder layers' errors add, and the final RMS norm and
// lm_head pass a relative error on unchanged to first order, so the logits' relative error is at
// most about 2 κ_max 2^-11 (≈ 3.8e-3): the tolerance (measured: 1.2e-3; the per-layer bound is a
// worst case, with every sign aligned).
// A broken merge (wrong scaling, pooling window, repeat, or a missing 1/pool) moves the logits
// by the size of the update itself, which the test requires to be > 100 x the tolerance.
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "adapters/balanced_lora.h"
#include "adapters/l4q.h"
#include "core/errors.h"
#include "export/peft_adapter.h"
#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "model/adapter_test_util.h"
#include "model/llama.h"
#include "quant/int4.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::AdapterConfig;
using qlt::adapters::AdapterKind;
using qlt::model::LlamaModel;
using qlt::test::kBloraPeftDir;
using qlt::test::kFixtures;
using qlt::test::max_abs;
using qlt::test::read_json;
using qlt::test::relative_error;
using qlt::test::seeded;
using qlt::test::TempDir;

const std::vector<std::string> kAllLinears = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                              "gate_proj", "up_proj", "down_proj"};

LlamaModel load_gqa(const qlt::quant::WeightFormat& format = qlt::quant::DenseFormat{}) {
  return qlt::model::load_llama(kFixtures / "llama_gqa", at::kFloat, at::kCPU, format);
}

AdapterConfig make_adapter_config(const std::string& type, int64_t rank, double alpha,
                                  std::vector<std::string> targets = kAllLinears) {
  AdapterConfig c;
  c.type = type;
  c.rank = rank;
  c.alpha = alpha;
  c.dropout = 0;
  c.target_modules = std::move(targets);
  return c;
}

// The fixture's Q-BLoRA: λ = 2, r = 4, alpha = 16 on q, v, down (tests/fixtures/blora_peft/).
AdapterConfig fixture_blora_config() {
  auto c = make_adapter_config("blora", 4, 16, {"q_proj", "v_proj", "down_proj"});
  c.balance = 2;
  return c;
}

std::map<std::string, at::Tensor> read_tensors(const fs::path& file) {
  auto f = qlt::io::SafetensorsFile::open(file);
  std::map<std::string, at::Tensor> out;
  for (const auto& info : f.tensors()) out.emplace(info.name, f.tensor(info.name).clone());
  return out;
}

// The fixture model with the fixture's native Q-BLoRA tensors attached.
LlamaModel fixture_blora_model() {
  auto model = load_gqa();
  const auto opts =
      qlt::adapters::adapter_options(fixture_blora_config(), qlt::quant::DenseFormat{});
  qlt::model::attach_adapters(model, opts, read_tensors(kBloraPeftDir / "native.safetensors"),
                              "native.safetensors");
  return model;
}

// Overwrites every adapter tensor in place (the model's own leaves): A and B of a low-rank
// adapter get N(0, sd_a) / N(0, sd_b) (never exactly zero), l4q's scale is multiplied by
// U(0.8, 1.25) and its offset moved by U(-0.5, 0.5) steps.
void perturb_adapters(const LlamaModel& model, at::Generator& gen, double sd_a, double sd_b) {
  at::NoGradGuard no_grad;
  const auto params = qlt::model::adapter_parameters(model);
  for (size_t k = 0; k < params.size(); ++k) {
    const auto& name = params[k].name;
    at::Tensor t = params[k].tensor;
    if (name.find("lora_A") != std::string::npos || name.find("lora_B") != std::string::npos) {
      const double sd = name.find("lora_A") != std::string::npos ? sd_a : sd_b;
      t.normal_(0, sd, gen);
      t.masked_fill_(t == 0, sd);
    } else if (name.find("l4q_scale") != std::string::npos) {
      t.mul_(at::empty_like(t).uniform_(0.8, 1.25, gen));
    } else if (name.find("l4q_offset") != std::string::npos) {
      // The matching scale is the tensor just before (spec order: A, B, scale, offset).
      t.add_(params[k - 1].tensor * at::empty_like(t).uniform_(-0.5, 0.5, gen));
    }
  }
}

// The INT4 block bytes of every decoder linear, copied, by (layer, linear).
std::vector<std::vector<at::Tensor>> int4_blocks(const LlamaModel& model) {
  std::vector<std::vector<at::Tensor>> out;
  for (const auto& layer : model.weights.layers) {
    out.emplace_back();
    for (int j = 0; j < qlt::model::kNumLlamaLinears; ++j) {
      const auto& w = qlt::model::linear_weight(layer, j);
      const auto* int4 = std::get_if<qlt::quant::Int4Tensor>(&w.stored);
      REQUIRE(int4 != nullptr);
      out.back().push_back(int4->blocks.clone());
    }
  }
  return out;
}

// The fp16 field at byte `offset` of every INT4 block, as fp32 [out, groups].
at::Tensor block_half(const at::Tensor& blocks, int64_t offset) {
  return blocks.narrow(2, offset, 2).contiguous().view(at::kHalf).squeeze(-1).to(at::kFloat);
}

std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const qlt::UserError& e) {
    return e.what();
  }
  FAIL("no UserError");
  return {};
}

}  // namespace

TEST_CASE("Q-BLoRA in the model gives PEFT's logits; its PEFT form is PEFT's saved LoRA",
          "[model][adapters]") {
  auto model = fixture_blora_model();
  REQUIRE(model.adapter_options);
  const auto& opts = *model.adapter_options;
  CHECK(opts.kind == AdapterKind::kBlora);
  CHECK(opts.pool == 2);
  CHECK(opts.repeat == 2);
  CHECK(opts.inner_rank == 8);
  CHECK(opts.scaling == 4.0);  // alpha / r, not alpha / (λ r)

  auto expected = qlt::io::SafetensorsFile::open(kBloraPeftDir / "expected.safetensors");
  const at::Tensor ids = expected.tensor("input_ids");
  const at::Tensor want = expected.tensor("logits");
  at::NoGradGuard no_grad;
  const at::Tensor logits = model.logits(ids);
  const double err = relative_error(logits, want);
  INFO("logits relative error vs PEFT " << err);
  CHECK(err <= 1e-5);

  // The PEFT form: exactly the tensors PEFT saved (λ = 2: A' halves A's values, B' copies B's
  // rows, both exact in fp32), in adapter_parameters order, with PEFT's r and lora_alpha.
  const auto peft = read_tensors(kBloraPeftDir / "adapter/adapter_model.safetensors");
  const auto ours = qlt::model::peft_lora_tensors(model);
  REQUIRE(ours.size() == peft.size());
  const auto params = qlt::model::adapter_parameters(model);
  REQUIRE(params.size() == ours.size());
  for (size_t k = 0; k < ours.size(); ++k) {
    const auto& [name, t] = ours[k];
    INFO(name);
    CHECK(name == params[k].name);
    REQUIRE(peft.count(name));
    CHECK(t.sizes() == peft.at(name).sizes());
    CHECK(at::equal(t, peft.at(name)));
  }
  CHECK(qlt::adapters::peft_rank(opts) == 8);
  CHECK(qlt::adapters::peft_alpha(opts) == 32.0);
}

TEST_CASE("Q-BLoRA export: the native file reloads bit-identically, the PEFT files as a LoRA",
          "[model][adapters]") {
  auto model = fixture_blora_model();
  auto ids = read_tensors(kBloraPeftDir / "expected.safetensors").at("input_ids");
  at::NoGradGuard no_grad;
  const at::Tensor logits = model.logits(ids);

  TempDir tmp;
  const fs::path out = tmp / "adapter";
  fs::create_directories(out);
  qlt::exporter::write_peft_adapter(out, model, "tests/fixtures/llama_gqa");
  CHECK(fs::is_regular_file(out / qlt::exporter::kNativeAdapterFile));
  CHECK(fs::is_regular_file(out / qlt::exporter::kPeftWeightsFile));
  const auto config = read_json(out / qlt::exporter::kPeftConfigFile);
  CHECK(config["r"] == 8);
  CHECK(config["lora_alpha"] == 32);

  // Through the native file: the same adapter, bit-identical logits.
  auto reloaded = load_gqa();
  qlt::exporter::load_peft_adapter(reloaded, out, qlt::quant::DenseFormat{});
  REQUIRE(reloaded.adapter_options);
  CHECK(reloaded.adapter_options->kind == AdapterKind::kBlora);
  CHECK(reloaded.adapter_options->config.rank == 4);
  CHECK(reloaded.adapter_options->config.balance == 2);
  CHECK(at::equal(reloaded.logits(ids), logits));

  // Without it the folder is what PEFT sees: a plain rank-8 LoRA with the same update.
  fs::remove(out / qlt::exporter::kNativeAdapterFile);
  auto as_lora = load_gqa();
  qlt::exporter::load_peft_adapter(as_lora, out, qlt::quant::DenseFormat{});
  REQUIRE(as_lora.adapter_options);
  CHECK(as_lora.adapter_options->kind == AdapterKind::kLora);
  CHECK(as_lora.adapter_options->config.rank == 8);
  CHECK(as_lora.adapter_options->scaling == 4.0);
  const double err = relative_error(as_lora.logits(ids), logits);
  INFO("plain LoRA view vs Q-BLoRA: logits relative error " << err);
  CHECK(err <= 1e-5);
}

TEST_CASE("QA-BLoRA merges into the INT4 group offsets: d and codes unchanged, every merge exact",
          "[model][adapters]") {
  const qlt::quant::Int4Options int4{32};
  auto model = load_gqa(int4);
  auto c = make_adapter_config("qa-blora", 4, 8);
  c.balance = 2;
  const auto opts = qlt::adapters::adapter_options(c, int4);
  CHECK(opts.pool == 32);
  CHECK(opts.repeat == 2);
  auto gen = seeded(31);
  qlt::model::attach_adapters(model, opts, gen);
  perturb_adapters(model, gen, 0.5, 0.5);

  at::manual_seed(3);
  const at::Tensor ids = at::randint(3, 96, {2, 11}, at::kLong);
  at::NoGradGuard no_grad;
  const at::Tensor base_logits = [&] {
    auto base = load_gqa(int4);
    return base.logits(ids);
  }();
  const at::Tensor adapted = model.logits(ids);
  const auto before = int4_blocks(model);
  // The update each linear's offsets must receive: the window form of its adapter.
  std::vector<std::vector<at::Tensor>> window(model.adapters.size());
  for (size_t i = 0; i < model.adapters.size(); ++i) {
    for (int j = 0; j < qlt::model::kNumLlamaLinears; ++j) {
      const auto& lr = std::get<qlt::adapters::LowRankAdapter>(*model.adapters[i][j]);
      window[i].push_back(qlt::adapters::pooled_lora_window_delta(lr.A, lr.B, 32, 2, opts.scaling));
    }
  }

  const auto report = qlt::model::merge_adapters(model, int4);
  CHECK(report.merged == 2 * 7);
  CHECK(report.exact == report.merged);
  CHECK(!model.has_adapters());
  CHECK(!model.adapter_options);
  const auto after = int4_blocks(model);
  for (size_t i = 0; i < after.size(); ++i) {
    for (int j = 0; j < qlt::model::kNumLlamaLinears; ++j) {
      INFO("layer " << i << " " << qlt::model::llama_linear_names()[j]);
      const at::Tensor& b0 = before[i][j];
      const at::Tensor& b1 = after[i][j];
      REQUIRE(b1.sizes() == b0.sizes());
      CHECK(at::equal(b1.narrow(2, 0, 2), b0.narrow(2, 0, 2)));                            // d
      CHECK(at::equal(b1.narrow(2, 4, b0.size(2) - 4), b0.narrow(2, 4, b0.size(2) - 4)));  // codes
      // m' = fp16(fp32(m) + δ), δ the window update (the pool, repeat and scaling are wired).
      const at::Tensor m0 = block_half(b0, 2), m1 = block_half(b1, 2);
      CHECK(at::equal(m1, (m0 + window[i][j]).to(at::kHalf).to(at::kFloat)));
      CHECK(!at::equal(m1, m0));
    }
  }

  // κ of every merged linear (see the top of this file).
  const double u16 = std::ldexp(1.0, -11);
  double kappa = 0;
  const at::Tensor x = at::randn({64, 160}, at::kDouble);
  for (size_t i = 0; i < after.size(); ++i) {
    for (int j = 0; j < qlt::model::kNumLlamaLinears; ++j) {
      const int64_t groups = after[i][j].size(1);
      const at::Tensor xj = x.narrow(1, 0, groups * 32);
      const at::Tensor S = xj.unflatten(-1, {groups, 32}).sum(-1);  // [64, groups]
      const at::Tensor m = block_half(after[i][j], 2).to(at::kDouble);
      const at::Tensor w = qlt::model::linear_weight(model.weights.layers[i], j)
                               .materialize(at::kFloat)
                               .to(at::kDouble);
      const at::Tensor bound = at::matmul(S.abs(), m.abs().t());
      kappa = std::max(kappa, (bound.norm() / at::matmul(xj, w.t()).norm()).item<double>());
    }
  }
  CHECK(kappa <= 5);

  const at::Tensor merged = model.logits(ids);
  const double tolerance = 2 * kappa * u16;
  const double err = relative_error(merged, adapted);
  const double moved = relative_error(adapted, base_logits);
  WARN(fmt::format(
      "QA-BLoRA merged vs adapted logits: relative error {:.2e} (tolerance {:.2e}; max kappa "
      "{:.2f}); the adapter moves the logits by {:.2e} relative",
      err, tolerance, kappa, moved));
  CHECK(err <= tolerance);
  CHECK(moved > 100 * tolerance);  // a wrong merge cannot pass
}

TEST_CASE("L4Q merges into INT4 as its own codes: bit-identical logits (dense / INT4 base, 3-bit)",
          "[model][adapters]") {
  struct Case {
    const char* name;
    qlt::quant::WeightFormat base;
    int64_t bits;
  };
  for (const Case& k : {Case{"dense base, 4-bit", qlt::quant::DenseFormat{}, 4},
                        Case{"INT4 base, 4-bit", qlt::quant::Int4Options{32}, 4},
                        Case{"dense base, 3-bit", qlt::quant::DenseFormat{}, 3}}) {
    INFO(k.name);
    auto model = load_gqa(k.base);
    auto c = make_adapter_config("l4q", 4, 8);
    c.l4q_bits = k.bits;
    c.l4q_group_size = 32;
    const auto opts = qlt::adapters::adapter_options(c, k.base);
    auto gen = seeded(41 + static_cast<uint64_t>(k.bits));
    qlt::model::attach_adapters(model, opts, gen);
    REQUIRE(qlt::model::l4q_quantizing(model));
    perturb_adapters(model, gen, 0.1, 0.1);

    at::manual_seed(4);
    const at::Tensor ids = at::randint(3, 96, {2, 11}, at::kLong);
    at::NoGradGuard no_grad;
    const at::Tensor adapted = model.logits(ids);
    const auto report = qlt::model::merge_adapters(model, qlt::quant::Int4Options{32});
    CHECK(report.merged == 2 * 7);
    CHECK(report.exact == report.merged);
    // The storage error report: nothing changed (the merged layer IS the trained one).
    CHECK(report.errors.size() == 2 * 7);
    for (const auto& e : report.errors) CHECK(e.max_abs == 0);
    CHECK(report.overall_relative == 0);
    CHECK(!model.has_adapters());
    if (k.bits == 3) {  // 3-bit codes stored in 4-bit blocks: every nibble <= 7
      for (const auto& layer : int4_blocks(model)) {
        for (const auto& b : layer) {
          const auto codes = b.narrow(2, 4, b.size(2) - 4).to(at::kInt);
          CHECK(codes.bitwise_and(15).max().item<int>() <= 7);
          CHECK(codes.bitwise_right_shift(4).max().item<int>() <= 7);
        }
      }
    }
    CHECK(at::equal(model.logits(ids), adapted));
  }
}

TEST_CASE("L4Q of group 64 merges exactly into INT4 group 32 (= Q4_1): its d, m in two blocks",
          "[model][adapters]") {
  for (const int64_t bits : {4, 3}) {
    INFO("bits " << bits);
    auto model = load_gqa();
    auto c = make_adapter_config("l4q", 4, 8);
    c.l4q_bits = bits;
    c.l4q_group_size = 64;  // the fixture's hidden size; down_proj (in 160) is not targeted
    c.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"};
    const auto opts = qlt::adapters::adapter_options(c, qlt::quant::DenseFormat{});
    auto gen = seeded(47 + static_cast<uint64_t>(bits));
    qlt::model::attach_adapters(model, opts, gen);
    perturb_adapters(model, gen, 0.1, 0.1);
    std::vector<at::Tensor> trained;  // the layers the forward uses, [out, in] fp32
    for (int64_t i = 0; i < 2; ++i) {
      for (int j = 0; j < 6; ++j) {
        trained.push_back(qlt::adapters::effective_weight(
            qlt::model::linear_weight(model.weights.layers[i], j), &*model.adapters[i][j], opts));
      }
    }
    const auto report = qlt::model::merge_adapters(model, qlt::quant::Int4Options{32});
    CHECK(report.merged == 12);
    CHECK(report.exact == 12);
    size_t k = 0;
    for (int64_t i = 0; i < 2; ++i) {
      for (int j = 0; j < 6; ++j) {
        const auto& stored = qlt::model::linear_weight(model.weights.layers[i], j).stored;
        const auto* int4 = std::get_if<qlt::quant::Int4Tensor>(&stored);
        REQUIRE(int4 != nullptr);
        CHECK(int4->group_size == 32);
        CHECK(at::equal(qlt::quant::dequantize(stored, at::kFloat), trained[k++]));
      }
    }
  }
}

TEST_CASE("L4Q warm-up: a plain LoRA first (B = 0: the base model), then the quantizer starts",
          "[model][adapters]") {
  auto model = load_gqa();
  at::manual_seed(5);
  const at::Tensor ids = at::randint(3, 96, {2, 9}, at::kLong);
  at::Tensor base_logits;
  {
    at::NoGradGuard no_grad;
    base_logits = model.logits(ids);
  }
  auto c = make_adapter_config("l4q", 4, 8);
  c.l4q_warmup_steps = 2;
  const auto opts = qlt::adapters::adapter_options(c, qlt::quant::DenseFormat{});
  auto gen = seeded(51);
  qlt::model::attach_adapters(model, opts, gen);
  CHECK(!qlt::model::l4q_quantizing(model));
  {
    at::NoGradGuard no_grad;
    CHECK(at::equal(model.logits(ids), base_logits));
  }

  // Trained-looking LoRA, then the switch: scale / offset re-initialized in place from min-max
  // of W0 + s B A, the optimizer's tensors kept.
  perturb_adapters(model, gen, 0.1, 0.1);
  const auto before = qlt::model::adapter_parameters(model);
  std::vector<at::Tensor> values;
  for (const auto& p : before) values.push_back(p.tensor.detach().clone());
  qlt::model::start_l4q_quantization(model);
  CHECK(qlt::model::l4q_quantizing(model));
  const auto after = qlt::model::adapter_parameters(model);
  REQUIRE(after.size() == before.size());
  for (size_t k = 0; k < after.size(); ++k) {
    INFO(after[k].name);
    CHECK(after[k].name == before[k].name);
    CHECK(after[k].tensor.is_same(before[k].tensor));
    CHECK(after[k].tensor.is_leaf());
    CHECK(after[k].tensor.requires_grad());
  }
  // A, B unchanged; scale / offset = min-max of the adapted weight (checked on layer 1 o_proj).
  CHECK(at::equal(after[0].tensor, values[0]));
  CHECK(at::equal(after[1].tensor, values[1]));
  const auto& o = std::get<qlt::adapters::L4qAdapter>(*model.adapters[1][3]);
  const auto& w0 = qlt::model::linear_weight(model.weights.layers[1], 3);
  at::NoGradGuard no_grad;
  const auto init = qlt::adapters::l4q_init_scale_offset(
      w0.materialize(at::kFloat) + at::matmul(o.B, o.A) * opts.scaling, opts.l4q);
  CHECK(at::equal(o.scale, init.scale));
  CHECK(at::equal(o.offset, init.offset));
  CHECK(!at::equal(model.logits(ids), base_logits));
}

TEST_CASE("adapter_parameters: names, shapes and weight decay of every kind, in model order",
          "[model][adapters]") {
  // llama_gqa linears (in, out): q (64, 64), k (64, 32), v (64, 32), o (64, 64), gate / up
  // (64, 160), down (160, 64).
  const std::vector<std::pair<int64_t, int64_t>> dims = {{64, 64},  {64, 32},  {64, 32}, {64, 64},
                                                         {64, 160}, {64, 160}, {160, 64}};
  struct Spec {
    std::string suffix;
    std::vector<int64_t> shape;
    bool decay;
  };
  struct Case {
    const char* type;
    qlt::quant::WeightFormat format;
    std::function<std::vector<Spec>(int64_t in, int64_t out)> specs;
  };
  const int64_t r = 4, lambda = 2;
  const std::vector<Case> cases = {
      {"lora", qlt::quant::DenseFormat{},
       [&](int64_t in, int64_t out) -> std::vector<Spec> {
         return {{"lora_A.weight", {r, in}, true}, {"lora_B.weight", {out, r}, true}};
       }},
      {"blora", qlt::quant::DenseFormat{},
       [&](int64_t in, int64_t out) -> std::vector<Spec> {
         return {{"lora_A.weight", {lambda * r, in / lambda}, true},
                 {"lora_B.weight", {out / lambda, lambda * r}, true}};
       }},
      {"qa-blora", qlt::quant::Int4Options{32},
       [&](int64_t in, int64_t out) -> std::vector<Spec> {
         return {{"lora_A.weight", {r, in / 32}, true}, {"lora_B.weight", {out / lambda, r}, true}};
       }},
      {"l4q", qlt::quant::DenseFormat{},
       [&](int64_t in, int64_t out) -> std::vector<Spec> {
         return {{"lora_A.weight", {r, in}, true},
                 {"lora_B.weight", {out, r}, true},
                 {"l4q_scale", {out, in / 32}, false},
                 {"l4q_offset", {out, in / 32}, false}};
       }},
  };
  for (const auto& k : cases) {
    INFO(k.type);
    auto model = load_gqa(k.format);
    auto c = make_adapter_config(k.type, r, 8);
    c.balance = lambda;
    const auto opts = qlt::adapters::adapter_options(c, k.format);
    auto gen = seeded(61);
    qlt::model::attach_adapters(model, opts, gen);
    std::vector<std::string> names;
    std::vector<std::vector<int64_t>> shapes;
    std::vector<bool> decay;
    for (int64_t layer = 0; layer < 2; ++layer) {
      for (int j = 0; j < 7; ++j) {
        const std::string key = fmt::format("base_model.model.model.layers.{}.{}.{}", layer,
                                            j < 4 ? "self_attn" : "mlp", kAllLinears[j]);
        for (const auto& s : k.specs(dims[j].first, dims[j].second)) {
          names.push_back(key + "." + s.suffix);
          shapes.push_back(s.shape);
          decay.push_back(s.decay);
        }
      }
    }
    const auto params = qlt::model::adapter_parameters(model);
    const auto expected = qlt::model::expected_adapter_tensors(model, opts);
    REQUIRE(params.size() == names.size());
    REQUIRE(expected.size() == names.size());
    for (size_t n = 0; n < names.size(); ++n) {
      INFO(names[n]);
      CHECK(params[n].name == names[n]);
      CHECK(params[n].tensor.sizes() == at::IntArrayRef(shapes[n]));
      CHECK(params[n].weight_decay == decay[n]);
      CHECK(params[n].tensor.is_leaf());
      CHECK(params[n].tensor.requires_grad());
      CHECK(params[n].tensor.scalar_type() == at::kFloat);
      CHECK(expected[n].name == names[n]);
      CHECK(expected[n].shape == shapes[n]);
    }
  }
}

TEST_CASE("adapter kinds refuse what they cannot do: UserError naming the key",
          "[model][adapters][errors]") {
  const auto qa = make_adapter_config("qa-blora", 4, 8);
  CHECK_THAT(what_of([&] {
               qlt::adapters::adapter_options(qa, qlt::quant::Nf4Options{64, true});
             }),
             Contains("quantization.type") && Contains("qa-blora") && Contains("int4"));
  CHECK_THAT(what_of([&] { qlt::adapters::adapter_options(qa, qlt::quant::DenseFormat{}); }),
             Contains("quantization.type") && Contains("qa-blora"));

  {
    auto model = load_gqa();
    auto c = make_adapter_config("blora", 4, 8);
    c.balance = 3;
    const auto opts = qlt::adapters::adapter_options(c, qlt::quant::DenseFormat{});
    auto gen = seeded(71);
    CHECK_THAT(what_of([&] { qlt::model::attach_adapters(model, opts, gen); }),
               Contains("adapter.balance 3 does not divide") && Contains("layer 0 q_proj"));
    CHECK(!model.has_adapters());
  }

  auto l4q = make_adapter_config("l4q", 4, 8);
  l4q.l4q_group_size = 48;
  CHECK_THAT(what_of([&] { qlt::adapters::adapter_options(l4q, qlt::quant::DenseFormat{}); }),
             Contains("adapter.l4q_group_size") && Contains("48"));

  // A resumed run of another type: the blora folder refused as the lora it is not.
  auto model = fixture_blora_model();
  TempDir tmp;
  const fs::path out = tmp / "adapter";
  fs::create_directories(out);
  qlt::exporter::write_peft_adapter(out, model, "tests/fixtures/llama_gqa");
  auto other = load_gqa();
  CHECK_THAT(what_of([&] {
               qlt::exporter::load_peft_adapter(other, out, qlt::quant::DenseFormat{}, "lora");
             }),
             Contains("of type blora") && Contains("adapter.type is lora"));
  CHECK(!other.has_adapters());
}

TEST_CASE("a LoRA merged into NF4 reports the re-quantization error per linear and overall",
          "[model][adapters]") {
  const auto opts =
      qlt::adapters::adapter_options(make_adapter_config("lora", 4, 8), qlt::quant::DenseFormat{});
  auto merged_model = [&](const qlt::quant::WeightFormat& target) {
    auto model = load_gqa();
    auto gen = seeded(7);
    qlt::model::attach_adapters(model, opts, gen);
    perturb_adapters(model, gen, 0.1, 0.1);
    return std::make_pair(qlt::model::merge_adapters(model, target), std::move(model));
  };
  // Into NF4: every decoder linear is re-quantized, adapted or not, and each one is reported.
  const auto [report, model] = merged_model(qlt::quant::Nf4Options{});
  CHECK(report.exact == 0);
  REQUIRE(report.errors.size() == 2 * 7);
  for (const auto& e : report.errors) {
    CHECK(e.max_abs > 0);
    CHECK(e.relative > 0.01);  // NF4 + double quant: a few percent of the weight norm
    CHECK(e.relative < 0.2);
    const auto& w = qlt::model::linear_weight(model.weights.layers[e.layer], e.linear);
    CHECK(std::holds_alternative<qlt::quant::Nf4Tensor>(w.stored));
  }
  CHECK(report.overall_relative > 0.01);
  CHECK(report.overall_relative < 0.2);
  // Into the dense fp32 base: W0 + s B A is stored as computed; nothing is lost.
  const auto [dense_report, dense_model] = merged_model(qlt::quant::DenseFormat{});
  CHECK(dense_report.overall_relative == 0);
  for (const auto& e : dense_report.errors) CHECK(e.max_abs == 0);
}
