// Loading errors: config.json fields and checkpoint tensors, each named in the message.
#include <catch2/catch.hpp>
#include <fstream>

#include "core/errors.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;

const fs::path kLlamaGqaFixture = fs::path(QLT_SOURCE_DIR) / "tests/fixtures/llama_gqa";

json fixture_config() {
  std::ifstream in(kLlamaGqaFixture / "config.json");
  return json::parse(in);
}

// A scratch copy of the llama_gqa fixture whose config.json or tensors a test can spoil.
struct ScratchModel {
  fs::path dir;
  ScratchModel() {
    dir = fs::temp_directory_path() /
          ("qlt-model-" + std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy_file(kLlamaGqaFixture / "config.json", dir / "config.json");
    fs::copy_file(kLlamaGqaFixture / "model.safetensors", dir / "model.safetensors");
  }
  ~ScratchModel() { fs::remove_all(dir); }
  void write_config(const json& j) const { std::ofstream(dir / "config.json") << j.dump(2); }
  // Rewrites model.safetensors after `edit` changed the name -> tensor list.
  template <typename Edit>
  void edit_tensors(Edit edit) const {
    auto file = qlt::io::SafetensorsFile::open(dir / "model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& info : file.tensors())
      tensors.emplace_back(info.name, file.tensor(info.name).clone());
    edit(tensors);
    qlt::io::save_safetensors(dir / "model.safetensors", tensors);
  }
};

void require_config_error(const ScratchModel& m, const std::string& part) {
  REQUIRE_THROWS_WITH(qlt::model::load_llama(m.dir, at::kFloat, at::kCPU), Contains(part));
}

}  // namespace

TEST_CASE("config.json errors name the file and the field", "[model][errors]") {
  ScratchModel m;
  SECTION("missing field") {
    auto j = fixture_config();
    j.erase("hidden_size");
    m.write_config(j);
    require_config_error(m, "missing field \"hidden_size\"");
    require_config_error(m, "config.json");
  }
  SECTION("wrong type") {
    auto j = fixture_config();
    j["num_hidden_layers"] = "two";
    m.write_config(j);
    require_config_error(m, "\"num_hidden_layers\" has the wrong type");
  }
  SECTION("heads not a multiple of kv heads") {
    auto j = fixture_config();
    j["num_key_value_heads"] = 3;
    m.write_config(j);
    require_config_error(m, "must be a multiple of num_key_value_heads");
  }
  SECTION("unsupported rope scaling") {
    auto j = fixture_config();
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
    m.write_config(j);
    require_config_error(m, "rope_scaling type \"yarn\" is not supported");
  }
  SECTION("not a llama") {
    auto j = fixture_config();
    j["model_type"] = "gpt2";
    m.write_config(j);
    require_config_error(m, "not a LLaMA-family model");
  }
  SECTION("not JSON") {
    std::ofstream(m.dir / "config.json") << "{ not json";
    require_config_error(m, "not valid JSON");
  }
  SECTION("no config.json") {
    fs::remove(m.dir / "config.json");
    require_config_error(m, "config.json does not exist");
  }
}

TEST_CASE("a missing model directory is a one-line error naming it", "[model][errors]") {
  REQUIRE_THROWS_AS(qlt::model::load_llama("/nonexistent/model", at::kFloat, at::kCPU),
                    qlt::UserError);
  REQUIRE_THROWS_WITH(qlt::model::load_llama("/nonexistent/model", at::kFloat, at::kCPU),
                      Contains("/nonexistent/model does not exist"));
}

TEST_CASE("missing, unexpected and wrongly shaped tensors are reported by name",
          "[model][errors]") {
  ScratchModel m;
  m.edit_tensors([](auto& tensors) {
    for (auto it = tensors.begin(); it != tensors.end();) {
      if (it->first == "model.layers.1.mlp.up_proj.weight") {
        it = tensors.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [name, t] : tensors) {
      if (name == "model.layers.0.self_attn.k_proj.weight")
        t = t.narrow(0, 0, t.size(0) - 1).clone();
    }
    tensors.emplace_back("model.layers.0.self_attn.extra.weight", at::zeros({2}));
  });
  require_config_error(m, "missing tensors (1):\n  model.layers.1.mlp.up_proj.weight");
  require_config_error(m, "model.layers.0.self_attn.k_proj.weight: file has [31, 64]");
  require_config_error(m, "unexpected tensors (1):\n  model.layers.0.self_attn.extra.weight");
}
