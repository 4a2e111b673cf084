// PEFT adapter folders (export/peft_adapter.h): write -> read round trip, reading what PEFT
// 0.21.2 wrote, the config keys PEFT writes, and every documented error path.
#include <ATen/CPUGeneratorImpl.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/errors.h"
#include "export/peft_adapter.h"
#include "io/atomic_dir.h"
#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "model/adapter_test_util.h"
#include "model/llama.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using qlt::test::adapter_opts;
using qlt::test::kFixtures;
using qlt::test::load_llama_gqa;
using qlt::test::lora_params;
using qlt::test::read_json;
using qlt::test::TempDir;
using qlt::test::write_bytes;

const fs::path kPeftAdapter = kFixtures / "lora_llama_gqa/adapter";

// A model with trained-looking adapters (random, non-zero B) attached.
qlt::model::LlamaModel model_with_adapters(const qlt::AdapterConfig& options) {
  auto model = load_llama_gqa();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(17);
  qlt::model::attach_adapters(model, adapter_opts(options), gen);
  at::NoGradGuard no_grad;
  for (auto& [name, t] : lora_params(model)) {
    if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.05, gen);
  }
  return model;
}

// Copies the PEFT fixture adapter into `dir`, then lets `edit` change its config.
fs::path edited_copy(const TempDir& tmp, const std::function<void(json&)>& edit) {
  const fs::path dir = tmp / "adapter";
  fs::create_directories(dir);
  fs::copy_file(kPeftAdapter / "adapter_model.safetensors", dir / "adapter_model.safetensors");
  auto config = read_json(kPeftAdapter / "adapter_config.json");
  edit(config);
  write_bytes(dir / "adapter_config.json", config.dump(2));
  return dir;
}

std::string load_error(const fs::path& dir) {
  auto model = load_llama_gqa();
  try {
    qlt::exporter::load_peft_adapter(model, dir, qlt::quant::DenseFormat{});
  } catch (const qlt::UserError& e) {
    return e.what();
  }
  FAIL("no UserError for " << dir);
  return {};
}

}  // namespace

TEST_CASE("PEFT adapter round trip: write, read back, same options, tensors and logits",
          "[export][peft]") {
  qlt::AdapterConfig options;
  options.rank = 3;
  options.alpha = 12;
  options.dropout = 0.05;
  options.use_rslora = true;
  options.target_modules = {"q_proj", "o_proj", "up_proj"};
  auto model = model_with_adapters(options);
  TempDir tmp;
  {
    qlt::io::AtomicDir dir(tmp / "out");
    qlt::exporter::write_peft_adapter(dir.path(), model, "meta-llama/Llama-2-7b-hf");
    dir.commit();
  }
  const fs::path out = tmp / "out";
  auto adapter = qlt::exporter::read_peft_adapter(out);
  CHECK(adapter.config.rank == 3);
  CHECK(adapter.config.alpha == 12);
  CHECK(adapter.config.dropout == 0.05);
  CHECK(adapter.config.use_rslora);
  CHECK(adapter.config.target_modules == options.target_modules);
  CHECK(adapter.base_model_name_or_path == "meta-llama/Llama-2-7b-hf");
  auto params = lora_params(model);
  REQUIRE(adapter.tensors.size() == params.size());
  for (const auto& [name, t] : params) {
    REQUIRE(adapter.tensors.count(name));
    CHECK(adapter.tensors.at(name).scalar_type() == at::kFloat);
    CHECK(at::equal(adapter.tensors.at(name), t.detach()));
  }
  auto file = qlt::io::SafetensorsFile::open(out / "adapter_model.safetensors");
  CHECK(file.metadata() == std::map<std::string, std::string>{{"format", "pt"}});

  auto reloaded = load_llama_gqa();
  qlt::exporter::load_peft_adapter(reloaded, out, qlt::quant::DenseFormat{});
  auto ids = at::randint(3, 96, {2, 7}, at::kLong);
  at::NoGradGuard no_grad;
  CHECK(at::equal(reloaded.logits(ids), model.logits(ids)));
}

TEST_CASE("adapter_config.json has every key PEFT 0.21.2 writes, with PEFT's values",
          "[export][peft]") {
  qlt::AdapterConfig options;  // the fixture's LoraConfig: r 8, no dropout
  options.rank = 8;
  options.dropout = 0.0;
  auto model = model_with_adapters(options);
  TempDir tmp;
  qlt::exporter::write_peft_adapter(tmp.path, model, "tests/fixtures/llama_gqa");
  auto ours = read_json(tmp / "adapter_config.json");
  auto peft = read_json(kPeftAdapter / "adapter_config.json");
  std::set<std::string> our_keys, peft_keys;
  for (const auto& [k, v] : ours.items()) our_keys.insert(k);
  for (const auto& [k, v] : peft.items()) peft_keys.insert(k);
  peft_keys.erase("peft_version");  // PEFT fills in its own version when absent
  CHECK(our_keys == peft_keys);
  // Same values except those that describe this adapter (r, alpha, targets' order).
  for (const auto& key : peft_keys) {
    if (key == "r" || key == "lora_alpha" || key == "target_modules") continue;
    INFO(key);
    CHECK(ours[key] == peft[key]);
  }
  CHECK(ours["r"] == 8);
  CHECK(ours["lora_alpha"].dump() == "16");  // an integer, as PEFT users write it
  CHECK(ours["peft_type"] == "LORA");
  CHECK(ours["task_type"] == "CAUSAL_LM");
  CHECK(ours["target_modules"].size() == 7);
}

TEST_CASE("reads the adapters PEFT wrote", "[export][peft]") {
  auto plain = qlt::exporter::read_peft_adapter(kPeftAdapter);
  CHECK(plain.config.rank == 4);
  CHECK(plain.config.alpha == 8);
  CHECK(plain.config.dropout == 0.0);
  CHECK(!plain.config.use_rslora);
  CHECK(std::set<std::string>(plain.config.target_modules.begin(),
                              plain.config.target_modules.end()) ==
        std::set<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                              "down_proj"});
  CHECK(plain.tensors.size() == 28);
  CHECK(plain.base_model_name_or_path == "tests/fixtures/llama_gqa");

  auto rs = qlt::exporter::read_peft_adapter(kFixtures / "lora_llama_gqa/adapter_rslora");
  CHECK(rs.config.rank == 2);
  CHECK(rs.config.alpha == 6);
  CHECK(rs.config.use_rslora);
  CHECK(rs.config.target_modules == std::vector<std::string>{"down_proj", "q_proj", "v_proj"});
  CHECK(rs.tensors.size() == 12);
}

TEST_CASE("\"all-linear\" targets the seven decoder linears", "[export][peft]") {
  TempDir tmp;
  auto dir = edited_copy(tmp, [](json& j) { j["target_modules"] = "all-linear"; });
  auto adapter = qlt::exporter::read_peft_adapter(dir);
  CHECK(adapter.config.target_modules.size() == 7);
}

TEST_CASE("bad PEFT adapter config: UserError naming the file and key", "[export][peft][errors]") {
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"peft_type", [](json& j) { j["peft_type"] = "LOHA"; }, "key \"peft_type\" is \"LOHA\""},
      {"task_type", [](json& j) { j["task_type"] = "SEQ_CLS"; }, "key \"task_type\""},
      {"bias", [](json& j) { j["bias"] = "all"; }, "key \"bias\" is \"all\""},
      {"dora", [](json& j) { j["use_dora"] = true; }, "key \"use_dora\" is true"},
      {"lora_bias", [](json& j) { j["lora_bias"] = true; }, "key \"lora_bias\""},
      {"layers_to_transform", [](json& j) { j["layers_to_transform"] = {0}; },
       "key \"layers_to_transform\""},
      {"rank_pattern",
       [](json& j) {
         j["rank_pattern"] = {{"q_proj", 8}};
       },
       "key \"rank_pattern\""},
      {"alpha_pattern",
       [](json& j) {
         j["alpha_pattern"] = {{"q_proj", 8}};
       },
       "key \"alpha_pattern\""},
      {"modules_to_save", [](json& j) { j["modules_to_save"] = {"lm_head"}; },
       "key \"modules_to_save\""},
      {"fan_in_fan_out", [](json& j) { j["fan_in_fan_out"] = true; }, "key \"fan_in_fan_out\""},
      {"use_qalora", [](json& j) { j["use_qalora"] = true; }, "key \"use_qalora\""},
      {"layer_replication",
       [](json& j) {
         j["layer_replication"] = {{0, 2}};
       },
       "key \"layer_replication\""},
      {"exclude_modules", [](json& j) { j["exclude_modules"] = {"q_proj"}; },
       "key \"exclude_modules\""},
      {"target_parameters", [](json& j) { j["target_parameters"] = {"mlp.experts"}; },
       "key \"target_parameters\""},
      {"trainable_token_indices",
       [](json& j) {
         j["trainable_token_indices"] = {1, 2};
       },
       "key \"trainable_token_indices\""},
      {"alora_invocation_tokens", [](json& j) { j["alora_invocation_tokens"] = {5}; },
       "key \"alora_invocation_tokens\""},
      {"arrow_config",
       [](json& j) {
         j["arrow_config"] = {{"top_k", 3}};
       },
       "key \"arrow_config\""},
      {"unknown target",
       [](json& j) {
         j["target_modules"] = {"q_proj", "lm_head"};
       },
       "key \"target_modules\" holds \"lm_head\""},
      {"regex target", [](json& j) { j["target_modules"] = ".*proj"; },
       "regular expressions are not supported"},
      {"r zero", [](json& j) { j["r"] = 0; }, "key \"r\" must be a positive integer, got 0"},
      {"r string", [](json& j) { j["r"] = "4"; }, "key \"r\" must be a positive integer"},
      {"alpha missing", [](json& j) { j.erase("lora_alpha"); },
       "key \"lora_alpha\" must be a number, got nothing"},
      {"dropout", [](json& j) { j["lora_dropout"] = 1.5; }, "key \"lora_dropout\""},
      {"rslora", [](json& j) { j["use_rslora"] = "yes"; }, "key \"use_rslora\""},
  };
  for (const auto& c : cases) {
    SECTION(c.what) {
      TempDir tmp;
      auto dir = edited_copy(tmp, c.edit);
      auto message = load_error(dir);
      CHECK_THAT(message, Catch::Matchers::Contains((dir / "adapter_config.json").string()));
      CHECK_THAT(message, Catch::Matchers::Contains(c.message));
    }
  }
}

TEST_CASE("bad PEFT adapter folder or JSON: UserError naming the file", "[export][peft][errors]") {
  TempDir tmp;
  CHECK_THAT(load_error(tmp / "nowhere"), Catch::Matchers::Contains("no such PEFT adapter folder"));
  fs::create_directories(tmp / "empty");
  CHECK_THAT(load_error(tmp / "empty"),
             Catch::Matchers::Contains((tmp / "empty/adapter_config.json").string()));
  auto dir = edited_copy(tmp, [](json&) {});
  write_bytes(dir / "adapter_config.json", "{\"r\": 4,");
  CHECK_THAT(load_error(dir), Catch::Matchers::Contains("adapter_config.json:1:9: not valid JSON"));
  fs::copy_file(kPeftAdapter / "adapter_config.json", dir / "adapter_config.json",
                fs::copy_options::overwrite_existing);
  fs::remove(dir / "adapter_model.safetensors");
  CHECK_THAT(load_error(dir),
             Catch::Matchers::Contains((dir / "adapter_model.safetensors").string() + ": missing"));
}

TEST_CASE("adapter tensors that do not fit the model or config: one UserError with every key",
          "[export][peft][errors]") {
  const std::string q_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  const std::string v_b = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";
  auto peft = qlt::io::SafetensorsFile::open(kPeftAdapter / "adapter_model.safetensors");
  auto rewrite =
      [&](const fs::path& dir,
          const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>& edit) {
        std::vector<std::pair<std::string, at::Tensor>> tensors;
        for (const auto& info : peft.tensors())
          tensors.emplace_back(info.name, peft.tensor(info.name));
        edit(tensors);
        fs::remove(dir / "adapter_model.safetensors");
        qlt::io::save_safetensors(dir / "adapter_model.safetensors", tensors, {{"format", "pt"}});
      };
  TempDir tmp;
  auto dir = edited_copy(tmp, [](json&) {});
  const std::string file = (dir / "adapter_model.safetensors").string();

  SECTION("rank mismatch: config r = 8, tensors r = 4") {
    fs::remove(dir / "adapter_config.json");
    auto config = read_json(kPeftAdapter / "adapter_config.json");
    config["r"] = 8;
    write_bytes(dir / "adapter_config.json", config.dump());
    auto message = load_error(dir);
    CHECK_THAT(message, Catch::Matchers::Contains(file));
    CHECK_THAT(message, Catch::Matchers::Contains(q_a + " has shape [4, 64], expected [8, 64]"));
  }
  SECTION("missing tensor") {
    rewrite(dir, [&](auto& t) {
      t.erase(std::remove_if(t.begin(), t.end(), [&](auto& p) { return p.first == v_b; }), t.end());
    });
    auto message = load_error(dir);
    CHECK_THAT(message, Catch::Matchers::Contains(file));
    CHECK_THAT(message, Catch::Matchers::Contains("missing " + v_b + " (expected shape [32, 4])"));
  }
  SECTION("unexpected tensor") {
    rewrite(dir, [](auto& t) {
      t.emplace_back("base_model.model.lm_head.lora_A.weight", at::zeros({4, 64}));
    });
    CHECK_THAT(load_error(dir),
               Catch::Matchers::Contains("unexpected base_model.model.lm_head.lora_A.weight"));
  }
  SECTION("wrongly shaped tensor") {
    rewrite(dir, [&](auto& t) {
      for (auto& p : t) {
        if (p.first == v_b) p.second = at::zeros({64, 4});
      }
    });
    CHECK_THAT(load_error(dir),
               Catch::Matchers::Contains(v_b + " has shape [64, 4], expected [32, 4]"));
  }
  SECTION("non-float tensor") {
    rewrite(dir, [&](auto& t) {
      for (auto& p : t) {
        if (p.first == q_a) p.second = at::zeros({4, 64}, at::kInt);
      }
    });
    CHECK_THAT(load_error(dir), Catch::Matchers::Contains("tensor \"" + q_a + "\" has dtype I32"));
  }
}

// Writes an adapter + our logits for scripts/fixtures/check_peft_load.py (run by hand; this
// test needs no Python). With QLT_PEFT_CHECK_OUT=<dir> the files are kept there:
//   QLT_PEFT_CHECK_OUT=/tmp/x ./build/tests/qlt_tests '[peft_check]'
//   .venv-fixtures/bin/python scripts/fixtures/check_peft_load.py tests/fixtures/llama_gqa \
//       /tmp/x/adapter /tmp/x/logits.safetensors
TEST_CASE("writes an adapter and its logits for the PEFT load check",
          "[export][peft][peft_check]") {
  qlt::AdapterConfig options;
  options.rank = 6;
  options.alpha = 10;
  options.use_rslora = true;
  options.target_modules = {"k_proj", "o_proj", "gate_proj", "down_proj"};
  auto model = model_with_adapters(options);
  TempDir tmp;
  const char* keep = std::getenv("QLT_PEFT_CHECK_OUT");
  const fs::path out = keep ? fs::path(keep) : tmp.path;
  fs::create_directories(out);
  {
    qlt::io::AtomicDir dir(out / "adapter", /*overwrite=*/true);
    qlt::exporter::write_peft_adapter(dir.path(), model, "tests/fixtures/llama_gqa");
    dir.commit();
  }
  auto ids = at::randint(3, 96, {2, 10}, at::kLong);
  at::Tensor logits;
  {
    at::NoGradGuard no_grad;
    logits = model.logits(ids);
  }
  qlt::io::save_safetensors(out / "logits.safetensors", {{"input_ids", ids}, {"logits", logits}});
  // Our own reader reproduces the logits from the files.
  auto reloaded = load_llama_gqa();
  qlt::exporter::load_peft_adapter(reloaded, out / "adapter", qlt::quant::DenseFormat{});
  auto file = qlt::io::SafetensorsFile::open(out / "logits.safetensors");
  at::NoGradGuard no_grad;
  CHECK(at::equal(reloaded.logits(file.tensor("input_ids")), file.tensor("logits")));
}
