// 8-bit AdamW against bitsandbytes 0.50.2's AdamW8bit on its CPU backend
// (tests/fixtures/adamw8bit, scripts/fixtures/make_adamw8bit_fixtures.py): the dynamic maps, the
// blockwise quantizer, and parameters + 8-bit codes + absmax + fp32 small-tensor state after one
// and after three steps, all bit for bit. Also: checkpoint round trip, its errors, the type table.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "core/config.h"
#include "core/config_schema.h"
#include "core/errors.h"
#include "io/safetensors.h"
#include "optim/adamw_8bit.h"
#include "optim/blockwise_8bit.h"
#include "optim/optimizer.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::optim::AdamW8bit;

const qlt::io::SafetensorsFile& bnb8() {
  static auto f = qlt::io::SafetensorsFile::open(fs::path(QLT_SOURCE_DIR) /
                                                 "tests/fixtures/adamw8bit/adamw8bit.safetensors");
  return f;
}

const std::vector<std::string> kBnbParams = {"a", "b", "c"};  // c: < 4096 elements, fp32 state

// Bit-for-bit equality (fp32 compared as int32 bit patterns, so -0 != +0), with the number of
// differing elements and the max abs difference in the failure message.
void require_bits(const at::Tensor& ours, const at::Tensor& ref, const std::string& what) {
  INFO(what);
  REQUIRE(ours.scalar_type() == ref.scalar_type());
  REQUIRE(ours.sizes() == ref.sizes());
  const auto a = ours.contiguous(), b = ref.contiguous();
  const bool fp = a.scalar_type() == at::kFloat;
  const auto differs = fp ? a.view(at::kInt).ne(b.view(at::kInt)) : a.ne(b);
  const int64_t n = differs.sum().item<int64_t>();
  const double max_abs = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  INFO(n << " of " << a.numel() << " elements differ; max abs diff " << max_abs);
  REQUIRE(n == 0);
}

qlt::optim::AdamWOptions bnb_options() {
  qlt::optim::AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.995;
  o.eps = 1e-8;
  o.weight_decay = 0.01;
  return o;
}

// Fresh leaves from the fixture's BF16 initial values (or from `values`).
std::vector<std::pair<std::string, at::Tensor>> bnb_leaves(std::vector<at::Tensor> values = {}) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < kBnbParams.size(); ++i) {
    auto v = values.empty() ? bnb8().tensor("init." + kBnbParams[i]).to(at::kFloat) : values[i];
    out.emplace_back(kBnbParams[i], v.clone().set_requires_grad(true));
  }
  return out;
}

bool bnb_has_grad(const std::string& name, int step) { return name != "b" || step != 2; }

// bnb's state after step k for every parameter, and the parameters themselves.
void require_bnb_step(const AdamW8bit& opt, int k) {
  const std::string step = std::to_string(k);
  for (const auto& s : opt.params()) {
    const std::string prefix = "state." + step + "." + s.name + ".";
    require_bits(s.param.detach(), bnb8().tensor("step." + step + "." + s.name),
                 "param " + s.name + " after step " + step);
    require_bits(s.state1, bnb8().tensor(prefix + "state1"), prefix + "state1");
    require_bits(s.state2, bnb8().tensor(prefix + "state2"), prefix + "state2");
    if (s.quantized) {
      require_bits(s.absmax1, bnb8().tensor(prefix + "absmax1"), prefix + "absmax1");
      require_bits(s.absmax2, bnb8().tensor(prefix + "absmax2"), prefix + "absmax2");
    }
  }
}

// Steps [from, to] (1-based) of the fixture run, with its lr and grads.
void replay_bnb(const std::vector<std::pair<std::string, at::Tensor>>& params, AdamW8bit& opt,
                int from, int to) {
  const auto lrs = bnb8().tensor("lr");
  for (int k = from; k <= to; ++k) {
    for (const auto& [name, p] : params) {
      if (bnb_has_grad(name, k))
        p.mutable_grad() = bnb8().tensor("grad." + std::to_string(k) + "." + name).to(at::kFloat);
    }
    opt.step(lrs[k - 1].item<double>());
    opt.zero_grad();
    if (k == 1 || k == 3) require_bnb_step(opt, k);
  }
}

}  // namespace

TEST_CASE("adamw_8bit: the dynamic maps are bitsandbytes' create_dynamic_map", "[adamw8bit]") {
  require_bits(qlt::optim::create_dynamic_map(true), bnb8().tensor("map.signed"), "signed map");
  require_bits(qlt::optim::create_dynamic_map(false), bnb8().tensor("map.unsigned"),
               "unsigned map");
}

TEST_CASE("adamw_8bit: blockwise quantization matches bitsandbytes' CPU quantize_blockwise",
          "[adamw8bit]") {
  for (const char* c : {"signed", "unsigned"}) {
    const std::string name = c;
    INFO("case " << name);
    const auto map = qlt::optim::create_dynamic_map(name == "signed");
    const auto lut = qlt::optim::build_quant_lut(map);
    const auto x = bnb8().tensor("quant." + name + ".input");
    auto codes = at::empty(x.sizes(), at::kByte);
    auto absmax = at::empty({qlt::optim::state_blocks(x.numel())}, at::kFloat);
    qlt::optim::quantize_blockwise_8bit(x, lut, codes, absmax);
    require_bits(codes, bnb8().tensor("quant." + name + ".codes"), "codes");
    require_bits(absmax, bnb8().tensor("quant." + name + ".absmax"), "absmax");
    // Dequantized: map[code] * absmax of the block; an all-zero block stays zero.
    const auto back = qlt::optim::dequantize_blockwise_8bit(codes, absmax, map);
    const auto expect =
        map.index({codes.to(at::kLong)}) *
        absmax.repeat_interleave(qlt::optim::kStateBlockSize).slice(0, 0, x.numel());
    require_bits(back, expect, "dequantized");
    CHECK(back.slice(0, 256, 512).abs().max().item<float>() == 0.0f);
  }
}

TEST_CASE("adamw_8bit: one and three steps are bit-identical to bitsandbytes AdamW8bit (CPU)",
          "[adamw8bit]") {
  auto params = bnb_leaves();
  AdamW8bit opt(params, bnb_options(), /*no_weight_decay=*/{"b"});
  REQUIRE(opt.params()[0].quantized);
  REQUIRE(opt.params()[1].quantized);
  REQUIRE_FALSE(opt.params()[2].quantized);      // 300 < min_8bit_size: fp32 state as bnb
  CHECK(opt.params()[0].absmax1.numel() == 17);  // 4100 = 16 * 256 + 4
  replay_bnb(params, opt, 1, 3);
  const auto steps = bnb8().tensor("param_steps");
  for (size_t i = 0; i < opt.params().size(); ++i)
    CHECK(opt.params()[i].step == steps[static_cast<int64_t>(i)].item<int64_t>());
  CHECK(opt.steps_taken() == 3);
}

TEST_CASE("adamw_8bit: state round-trips through safetensors and continues bit-exactly",
          "[adamw8bit]") {
  auto params = bnb_leaves();
  AdamW8bit first(params, bnb_options(), {"b"});
  replay_bnb(params, first, 1, 1);
  const fs::path path =
      fs::temp_directory_path() / ("qlt-adamw8bit-" + std::to_string(::getpid()) + ".safetensors");
  qlt::io::save_safetensors(path, first.state_tensors());
  const std::string meta = first.state_meta().dump();
  std::vector<at::Tensor> values;
  for (const auto& [name, p] : params) values.push_back(p.detach().clone());

  auto resumed_params = bnb_leaves(values);
  AdamW8bit resumed(resumed_params, bnb_options(), {"b"});
  {
    auto file = qlt::io::SafetensorsFile::open(path);
    std::map<std::string, at::Tensor> tensors;
    for (const auto& info : file.tensors()) tensors[info.name] = file.tensor(info.name);
    CHECK(tensors.size() == 2 * 4 + 2);  // a, b: codes + absmax; c: fp32 m, v
    CHECK(tensors.at("a.state1").scalar_type() == at::kByte);
    CHECK(tensors.at("c.state1").scalar_type() == at::kFloat);
    resumed.load_state(tensors, nlohmann::json::parse(meta));
  }
  fs::remove(path);
  CHECK(resumed.steps_taken() == 1);
  replay_bnb(resumed_params, resumed, 2, 3);
}

TEST_CASE("adamw_8bit: load_state rejects other layouts and changes nothing", "[adamw8bit]") {
  auto params = bnb_leaves();
  AdamW8bit source(params, bnb_options(), {"b"});
  replay_bnb(params, source, 1, 1);
  std::map<std::string, at::Tensor> good;
  for (const auto& [name, t] : source.state_tensors()) good[name] = t.clone();
  const auto meta = source.state_meta();

  auto target_params = bnb_leaves();
  AdamW8bit target(target_params, bnb_options(), {"b"});
  auto require_rejected = [&](const std::map<std::string, at::Tensor>& tensors,
                              const nlohmann::json& m, const std::string& message) {
    REQUIRE_THROWS_AS(target.load_state(tensors, m), qlt::UserError);
    REQUIRE_THROWS_WITH(target.load_state(tensors, m), Contains(message));
    CHECK(target.steps_taken() == 0);
    for (const auto& s : target.params()) {
      CHECK(s.step == 0);
      CHECK(s.state1.abs().max().item<double>() == 0);
    }
  };
  SECTION("missing absmax") {
    auto t = good;
    t.erase("a.absmax2");
    require_rejected(t, meta, "'a.absmax2' is missing");
  }
  SECTION("fp32 state where 8-bit codes belong (an adamw checkpoint's layout)") {
    auto t = good;
    t["b.state1"] = at::zeros({32, 128});
    require_rejected(t, meta, "'b.state1' in the checkpoint is Float [32, 128], expected Byte");
  }
  SECTION("adamw's tensor names") {
    auto t = good;
    t["c.exp_avg"] = at::zeros({10, 30});
    require_rejected(t, meta, "'c.exp_avg'");
  }
  SECTION("meta without a parameter's step") {
    auto m = meta;
    m["param_steps"].erase("a");
    require_rejected(good, m, "'/param_steps/a' is missing");
  }
  SECTION("the good state loads") {
    target.load_state(good, meta);
    CHECK(target.steps_taken() == 1);
    CHECK(at::equal(target.params()[0].state1, source.params()[0].state1));
  }
}

TEST_CASE("adamw_8bit: the optimizer.type table, the config choices, type checks on resume",
          "[adamw8bit]") {
  CHECK(qlt::optim::optimizer_type_names() ==
        std::vector<std::string>{"adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit"});
  const qlt::ConfigKey* key = nullptr;
  for (const auto& k : qlt::config_keys())
    if (k.path == "optimizer.type") key = &k;
  REQUIRE(key != nullptr);
  CHECK(key->choices == qlt::optim::optimizer_type_names());
  CHECK_THROWS_WITH(qlt::optim::optimizer_type("adam8"),
                    Contains("optimizer.type \"adam8\" is unknown; use one of adamw, adamw_8bit, "
                             "paged_adamw, paged_adamw_8bit"));

  auto params = bnb_leaves();
  qlt::optim::Optimizer eight(qlt::optim::optimizer_type("adamw_8bit"), params, bnb_options());
  CHECK(eight.state_meta()["type"] == "adamw_8bit");
  auto fp32_params = bnb_leaves();
  qlt::optim::Optimizer fp32(qlt::optim::optimizer_type("adamw"), fp32_params, bnb_options());
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, t] : fp32.state_tensors()) tensors[name] = t;
  CHECK_THROWS_WITH(eight.load_state(tensors, fp32.state_meta()),
                    Contains("optimizer.type \"adamw\", this run's optimizer.type is "
                             "\"adamw_8bit\""));
  auto old_meta = fp32.state_meta();
  old_meta.erase("type");  // checkpoints written before the type table: adamw
  fp32.load_state(tensors, old_meta);
  CHECK_THROWS_WITH(eight.load_state(tensors, old_meta), Contains("optimizer.type \"adamw\""));
}
