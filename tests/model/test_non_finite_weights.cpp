// NaN / Inf in a loaded weight is an error naming the tensor (it used to evaluate to "loss
// nan" with exit 0), unless model.allow_non_finite opts out.
#include <catch2/catch.hpp>
#include <limits>

#include "core/errors.h"
#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "model/llama.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

// A copy of data/tiny-llama where `name` has `value` at flat index 5.
void spoil_copy(const fs::path& dir, const std::string& name, float value) {
  const fs::path source = fs::path(QLT_SOURCE_DIR) / "data/tiny-llama";
  fs::copy(source, dir, fs::copy_options::recursive);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  {
    auto file = qlt::io::SafetensorsFile::open(source / "model.safetensors");
    for (const auto& info : file.tensors()) {
      at::Tensor t = file.tensor(info.name).clone();
      if (info.name == name) t.view({-1})[5] = value;
      tensors.emplace_back(info.name, t);
    }
  }
  fs::remove(dir / "model.safetensors");
  qlt::io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace

TEST_CASE("a weight holding NaN or Inf is refused, naming the tensor", "[model][load]") {
  struct Case {
    std::string tensor;
    float value;
  };
  const std::vector<Case> cases = {
      {"model.layers.1.mlp.up_proj.weight", std::numeric_limits<float>::quiet_NaN()},
      {"model.layers.0.input_layernorm.weight", std::numeric_limits<float>::infinity()},
      {"model.embed_tokens.weight", -std::numeric_limits<float>::infinity()},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.tensor) {
      qlt::test::TempDir tmp;
      const fs::path dir = tmp / "model";
      spoil_copy(dir, c.tensor, c.value);
      for (const qlt::quant::WeightFormat& options :
           {qlt::quant::WeightFormat{qlt::quant::DenseFormat{}},
            qlt::quant::WeightFormat{qlt::quant::Nf4Options{64, true}},
            qlt::quant::WeightFormat{qlt::quant::Int4Options{32}}}) {
        INFO(qlt::quant::describe(options));
        REQUIRE_THROWS_WITH(qlt::model::load_llama(dir, at::kFloat, at::kCPU, options),
                            Contains(c.tensor) && Contains("1 NaN/Inf value") &&
                                Contains("flat index 5") &&
                                Contains("model.allow_non_finite=true"));
        // The opt-out loads it as it is.
        CHECK_NOTHROW(qlt::model::load_llama(dir, at::kFloat, at::kCPU, options, true));
      }
    }
  }
}
