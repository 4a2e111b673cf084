// A model directory already in bitsandbytes' 4-bit layout (as transformers saves it) loads
// as stored, without re-quantizing, and computes the logits transformers + bitsandbytes
// compute; a checkpoint that claims the layout but breaks it is refused naming the tensor.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "model/causal_lm_loss.h"
#include "model/llama.h"
#include "quant/bnb_fixture_copy.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using qlt::test::kBnbFixtureDir;
using qlt::test::require_user_error;

const std::string kBnbLoadWeight = "model.layers.1.self_attn.k_proj.weight";  // [32, 64]
const std::string kBnbLoadState = kBnbLoadWeight + qlt::test::kBnbStateSuffix;

// The fixture with some tensors replaced or removed, loaded through load_llama.
void require_bnb_load_error(qlt::test::BnbFixtureCopy& copy,
                            const std::vector<std::string>& parts) {
  copy.save();
  require_user_error([&] { qlt::model::load_llama(copy.dir.path, at::kFloat, at::kCPU); }, parts);
}

}  // namespace

TEST_CASE("a transformers-saved bnb 4-bit model loads as stored and matches its logits",
          "[bnb][model][reference]") {
  const auto model = qlt::model::load_llama(kBnbFixtureDir, at::kFloat, at::kCPU);
  const auto file = qlt::io::SafetensorsFile::open(kBnbFixtureDir / "model.safetensors");
  int quantized = 0;
  for (size_t i = 0; i < model.weights.layers.size(); ++i) {
    const auto& l = model.weights.layers[i];
    for (const auto& [name, w] : {std::pair{"self_attn.q_proj", &l.q_proj},
                                  {"self_attn.k_proj", &l.k_proj},
                                  {"self_attn.v_proj", &l.v_proj},
                                  {"self_attn.o_proj", &l.o_proj},
                                  {"mlp.gate_proj", &l.gate_proj},
                                  {"mlp.up_proj", &l.up_proj},
                                  {"mlp.down_proj", &l.down_proj}}) {
      REQUIRE(w->quantized());
      // Not re-quantized: the codes are the file's bytes.
      const std::string prefix = "model.layers." + std::to_string(i) + "." + name + ".weight";
      const auto& q = std::get<qlt::quant::Nf4Tensor>(w->stored);
      CHECK(at::equal(q.packed, file.tensor(prefix)));
      CHECK(at::equal(q.absmax, file.tensor(prefix + ".absmax")));
      ++quantized;
    }
  }
  CHECK(quantized == 14);

  const auto batch = qlt::io::SafetensorsFile::open(kBnbFixtureDir / "batch.safetensors");
  at::NoGradGuard no_grad;
  const at::Tensor logits = model.logits(batch.tensor("input_ids"));
  const double max_diff = (logits - batch.tensor("logits")).abs().max().item<double>();
  WARN("bnb_llama_gqa: max |logits - transformers+bitsandbytes| = " << max_diff);
  CHECK(max_diff <= 1e-5);
  const double loss = qlt::model::causal_lm_loss(model.hidden_states(batch.tensor("input_ids")),
                                                 model.weights.lm_head, batch.tensor("labels"))
                          .mean();
  CHECK(loss == Approx(batch.tensor("loss").item<double>()).epsilon(1e-6));
}

TEST_CASE("a bnb checkpoint without a quant state is refused naming the tensor", "[bnb][model]") {
  qlt::test::BnbFixtureCopy copy(kBnbLoadWeight);
  copy.erase(kBnbLoadState);
  require_bnb_load_error(copy, {kBnbLoadWeight, "quant_state.bitsandbytes__nf4", "missing"});
}

TEST_CASE("a bnb checkpoint with a malformed quant state is refused naming the tensor",
          "[bnb][model]") {
  qlt::test::BnbFixtureCopy copy(kBnbLoadWeight);
  copy.set_state_text("{\"quant_type\": \"nf4\", \"blocksize\": 64,");
  require_bnb_load_error(copy, {kBnbLoadState, "not valid JSON"});
}

TEST_CASE("a bnb quant state whose shape disagrees with config.json is refused", "[bnb][model]") {
  qlt::test::BnbFixtureCopy copy(kBnbLoadWeight);
  json state = copy.state();
  state["shape"] = {64, 32};  // same element count, so the packed bytes still fit
  copy.set_state_text(state.dump());
  require_bnb_load_error(copy, {kBnbLoadWeight, "[64, 32]", "[32, 64]", "config.json"});
}

TEST_CASE("a bnb quant state with an unsupported block size is refused", "[bnb][model]") {
  qlt::test::BnbFixtureCopy copy(kBnbLoadWeight);
  json state = copy.state();
  state["blocksize"] = 48;
  copy.set_state_text(state.dump());
  require_bnb_load_error(copy, {kBnbLoadState, "blocksize 48"});
}

TEST_CASE("bnb companions without their packed weight are refused naming it", "[bnb][model]") {
  qlt::test::BnbFixtureCopy copy(kBnbLoadWeight);
  copy.erase(kBnbLoadWeight);
  require_bnb_load_error(copy, {kBnbLoadWeight});
}
