// AdamW + cosine schedule + clipping + gradient accumulation against torch.optim.AdamW,
// transformers' get_cosine_schedule_with_warmup and clip_grad_norm_ (tests/fixtures/adamw):
// parameters, learning rates, grad norms and final state are bit-identical at every step.
// Also: checkpoint round trip (save -> load -> continue == never stopping) and its errors.
#include <unistd.h>

#include <catch2/catch.hpp>

#include "adamw_fixture.h"
#include "core/errors.h"
#include "optim/clip_grad.h"

namespace {

namespace fx = adamw_fixture;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::optim::AdamW;

// Bitwise equality of fp32 tensors, with the max abs / rel difference in the failure message.
void require_same(const at::Tensor& ours, const at::Tensor& torch_ref, const std::string& what) {
  auto diff = (ours.to(at::kDouble) - torch_ref.to(at::kDouble)).abs();
  const double max_abs = diff.max().item<double>();
  const double max_rel =
      (diff / torch_ref.to(at::kDouble).abs().clamp_min(1e-30)).max().item<double>();
  INFO(what << ": max abs diff " << max_abs << ", max rel diff " << max_rel);
  REQUIRE(ours.scalar_type() == torch_ref.scalar_type());
  REQUIRE(ours.sizes() == torch_ref.sizes());
  REQUIRE(at::equal(ours, torch_ref));
}

// Replays optimizer steps [from, to) of the fixture run on `params` with `opt`, checking the
// lr, the grad norm and every parameter after every step against torch.
void replay(const std::vector<std::pair<std::string, at::Tensor>>& params, AdamW& opt, int from,
            int to) {
  const auto lrs = fx::file().tensor("lr");
  const auto norms = fx::file().tensor("grad_norm");
  for (int k = from; k < to; ++k) {
    fx::accumulate_grads(params, k);
    const double norm = qlt::optim::clip_grad_norm(fx::tensors_of(params), fx::kMaxNorm);
    CHECK(static_cast<float>(norm) == norms[k].item<float>());
    CHECK(norm == static_cast<double>(static_cast<float>(norm)));  // an fp32 value, as torch's
    const double lr = qlt::optim::lr_at(fx::schedule(), k);
    CHECK(lr == lrs[k].item<double>());
    opt.step(lr);
    opt.zero_grad();
    for (const auto& [name, p] : params) {
      REQUIRE_FALSE(p.grad().defined());
      require_same(p.detach(), fx::file().tensor("step." + std::to_string(k) + "." + name),
                   "step " + std::to_string(k) + " param " + name);
    }
  }
}

void require_final_state(const AdamW& opt) {
  const auto steps = fx::file().tensor("param_steps");
  for (size_t i = 0; i < opt.params().size(); ++i) {
    const auto& s = opt.params()[i];
    require_same(s.exp_avg, fx::file().tensor("final." + s.name + ".exp_avg"), s.name + ".exp_avg");
    require_same(s.exp_avg_sq, fx::file().tensor("final." + s.name + ".exp_avg_sq"),
                 s.name + ".exp_avg_sq");
    CHECK(s.step == steps[static_cast<int64_t>(i)].item<int64_t>());
  }
}

std::map<std::string, at::Tensor> as_map(const std::vector<std::pair<std::string, at::Tensor>>& v) {
  std::map<std::string, at::Tensor> m;
  for (const auto& [name, t] : v) m[name] = t.clone();
  return m;
}

}  // namespace

TEST_CASE("AdamW, cosine schedule, clipping and accumulation are bit-identical to torch",
          "[optim][adamw][fixture]") {
  auto params = fx::initial_params();
  AdamW opt(params, fx::options());
  replay(params, opt, 0, fx::kSteps);
  CHECK(opt.steps_taken() == fx::kSteps);
  require_final_state(opt);
}

TEST_CASE("AdamW state round-trips through safetensors and continues bit-exactly",
          "[optim][adamw][checkpoint]") {
  constexpr int kStop = 5;
  auto params = fx::initial_params();
  AdamW first(params, fx::options());
  replay(params, first, 0, kStop);

  // Save as a trainer would: tensors to safetensors, meta as JSON text.
  const fs::path path =
      fs::temp_directory_path() / ("qlt-adamw-" + std::to_string(::getpid()) + ".safetensors");
  qlt::io::save_safetensors(path, first.state_tensors());
  const std::string meta_text = first.state_meta().dump();
  std::vector<at::Tensor> values;
  for (const auto& [name, p] : params) values.push_back(p.detach().clone());

  // A new process would start here: fresh parameters (the saved adapter), fresh optimizer.
  auto resumed_params = fx::leaves(values);
  AdamW resumed(resumed_params, fx::options());
  {
    auto file = qlt::io::SafetensorsFile::open(path);
    std::map<std::string, at::Tensor> tensors;
    for (const auto& info : file.tensors()) tensors[info.name] = file.tensor(info.name);
    resumed.load_state(tensors, nlohmann::json::parse(meta_text));
  }
  fs::remove(path);
  CHECK(resumed.steps_taken() == kStop);
  replay(resumed_params, resumed, kStop, fx::kSteps);
  require_final_state(resumed);
}

TEST_CASE("AdamW skips parameters without a gradient and zero_grad drops grads", "[optim][adamw]") {
  auto p = at::ones({3}).set_requires_grad(true);
  auto q = at::ones({2}).set_requires_grad(true);
  qlt::optim::AdamWOptions o;
  o.weight_decay = 0.5;
  AdamW opt({{"p", p}, {"q", q}}, o);
  p.mutable_grad() = at::full({3}, 0.25);
  opt.step(0.1);
  CHECK(opt.params()[0].step == 1);
  CHECK(opt.params()[1].step == 0);
  CHECK(at::equal(q.detach(), at::ones({2})));  // no decay either, like torch
  CHECK_FALSE(at::equal(p.detach(), at::ones({3})));
  opt.zero_grad();
  CHECK_FALSE(p.grad().defined());
}

TEST_CASE("AdamW options out of range are user errors naming the key", "[optim][adamw][errors]") {
  auto make = [](auto edit) {
    qlt::optim::AdamWOptions o;
    edit(o);
    return AdamW({{"p", at::zeros({2}).set_requires_grad(true)}}, o);
  };
  using O = qlt::optim::AdamWOptions;
  CHECK_THROWS_WITH(make([](O& o) { o.lr = -1; }), Contains("optimizer.lr = -1"));
  CHECK_THROWS_WITH(make([](O& o) { o.beta1 = 1.0; }), Contains("optimizer.beta1 = 1"));
  CHECK_THROWS_WITH(make([](O& o) { o.beta2 = -0.1; }), Contains("optimizer.beta2 = -0.1"));
  CHECK_THROWS_WITH(make([](O& o) { o.eps = -1e-8; }), Contains("optimizer.eps"));
  CHECK_THROWS_WITH(make([](O& o) { o.weight_decay = -0.1; }), Contains("optimizer.weight_decay"));
  CHECK_THROWS_AS(make([](O& o) { o.lr = -1; }), qlt::UserError);
}

TEST_CASE("AdamW load_state rejects incompatible checkpoints and changes nothing",
          "[optim][adamw][checkpoint][errors]") {
  auto params = fx::initial_params();
  AdamW source(params, fx::options());
  replay(params, source, 0, 2);
  const auto good = as_map(source.state_tensors());
  const auto meta = source.state_meta();

  auto target_params = fx::initial_params();
  AdamW target(target_params, fx::options());
  auto require_rejected = [&](const std::map<std::string, at::Tensor>& tensors,
                              const nlohmann::json& m, const std::string& message) {
    REQUIRE_THROWS_AS(target.load_state(tensors, m), qlt::UserError);
    REQUIRE_THROWS_WITH(target.load_state(tensors, m), Contains(message));
    CHECK(target.steps_taken() == 0);
    for (const auto& s : target.params()) {
      CHECK(s.step == 0);
      CHECK(at::equal(s.exp_avg, at::zeros_like(s.exp_avg)));
      CHECK(at::equal(s.exp_avg_sq, at::zeros_like(s.exp_avg_sq)));
    }
  };

  SECTION("missing tensor") {
    auto t = good;
    t.erase("c.exp_avg_sq");
    require_rejected(t, meta, "'c.exp_avg_sq' is missing");
  }
  SECTION("wrong shape") {
    auto t = good;
    t["b.exp_avg"] = at::zeros({8});
    require_rejected(t, meta, "'b.exp_avg' in the checkpoint is Float [8], expected Float [16]");
  }
  SECTION("wrong dtype") {
    auto t = good;
    t["a.exp_avg"] = t["a.exp_avg"].to(at::kBFloat16);
    require_rejected(t, meta, "'a.exp_avg' in the checkpoint is BFloat16 [4, 8]");
  }
  SECTION("unexpected tensor") {
    auto t = good;
    t["e.exp_avg"] = at::zeros({2});
    require_rejected(t, meta, "'e.exp_avg' for a parameter this run does not train");
  }
  SECTION("meta without a parameter's step") {
    auto m = meta;
    m["param_steps"].erase("d");
    require_rejected(good, m, "'/param_steps/d' is missing");
  }
  SECTION("meta with a bad steps_taken") {
    auto m = meta;
    m["steps_taken"] = "two";
    require_rejected(good, m, "'/steps_taken' is missing or not a non-negative integer");
  }
  SECTION("meta not an object") { require_rejected(good, nlohmann::json::array(), "JSON object"); }
  SECTION("the good state loads") {
    target.load_state(good, meta);
    CHECK(target.steps_taken() == 2);
    CHECK(at::equal(target.params()[0].exp_avg, source.params()[0].exp_avg));
  }
}
