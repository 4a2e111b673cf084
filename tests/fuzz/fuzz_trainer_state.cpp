// Fuzz target: a checkpoint's trainer_state.json -> qlt::train::read_trainer_state, then what
// a resume does with the accepted content: resume_incompatibilities of the recorded config
// against the demo config (configs/tiny/qlora.json), and AdamW::load_state of the recorded
// optimizer meta for the parameters the seed checkpoint names (one-element tensors: the
// tensors themselves come from optimizer.safetensors, fuzzed by fuzz_safetensors_header).
//
// Beyond "no crash, no exception other than UserError": the accepted fields are in range
// (counts >= 0, finite seconds, objects where objects belong, a config_hash that matches the
// config), and trainer_state_json of the result reads back to the same JSON.
#include <ATen/ATen.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "fuzz_util.h"
#include "optim/adamw.h"
#include "train/resume_config.h"
#include "train/trainer_state.h"

namespace {

using nlohmann::json;

const qlt::fuzz::ScratchDir& scratch() {
  static const qlt::fuzz::ScratchDir dir("trainer_state");
  return dir;
}

// What the run being resumed has: its effective config and an optimizer over the adapter
// parameters of the seed checkpoint (a 2-step run of configs/tiny/qlora.json).
struct Resume {
  json config;
  qlt::optim::AdamW optimizer;
  std::map<std::string, at::Tensor> tensors;  // "<param>.exp_avg", "<param>.exp_avg_sq"
};

Resume& resume() {
  static Resume r = [] {
    const auto seed = qlt::fuzz::kSourceDir / "tests/fuzz/corpus/trainer_state/checkpoint-000002";
    std::ifstream in(seed);
    const json state = json::parse(in);  // the committed seed: valid, or the harness is broken
    std::vector<std::pair<std::string, at::Tensor>> params;
    std::map<std::string, at::Tensor> tensors;
    for (const auto& [name, steps] : state.at("optimizer").at("param_steps").items()) {
      params.emplace_back(name, at::zeros({1}).requires_grad_());
      tensors[name + ".exp_avg"] = at::zeros({1});
      tensors[name + ".exp_avg_sq"] = at::zeros({1});
    }
    QLT_FUZZ_REQUIRE(!params.empty(), "the seed %s names no optimizer parameter", seed.c_str());
    const auto config = qlt::load_config(qlt::fuzz::kSourceDir / "configs/tiny/qlora.json");
    return Resume{qlt::config_to_json(config),
                  qlt::optim::AdamW(std::move(params), qlt::optim::AdamWOptions{}), tensors};
  }();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlt::fuzz::quiet_once();
  auto& run = resume();
  const auto path = scratch() / "trainer_state.json";
  qlt::fuzz::write_file(path, qlt::fuzz::as_text(data, size));

  qlt::train::TrainerState state;
  if (!qlt::fuzz::accepts([&] { state = qlt::train::read_trainer_state(path); })) return 0;
  QLT_FUZZ_REQUIRE(state.step >= 0 && state.tokens_seen >= 0, "negative count accepted");
  QLT_FUZZ_REQUIRE(std::isfinite(state.train_seconds) && state.train_seconds >= 0,
                   "train_seconds %g accepted", state.train_seconds);
  QLT_FUZZ_REQUIRE(state.optimizer.is_object() && state.config.is_object(),
                   "optimizer or config accepted as a non-object");
  QLT_FUZZ_REQUIRE(state.config_hash == qlt::train::resume_config_hash(state.config),
                   "config_hash accepted that does not match");

  // What the trainer does next with it.
  qlt::fuzz::accepts([&] { (void)qlt::train::resume_incompatibilities(state.config, run.config); });
  qlt::fuzz::accepts([&] { run.optimizer.load_state(run.tensors, state.optimizer); });

  // The writer's JSON of what was read reads back as the same.
  const json written = qlt::train::trainer_state_json(state, json::object());
  const auto again = scratch() / "trainer_state.again.json";
  qlt::fuzz::write_file(again, written.dump(2));
  try {
    const json reread =
        qlt::train::trainer_state_json(qlt::train::read_trainer_state(again), json::object());
    QLT_FUZZ_REQUIRE(reread == written, "trainer_state_json does not read back the same");
  } catch (const qlt::UserError& e) {
    QLT_FUZZ_REQUIRE(false, "trainer_state_json of an accepted state is refused: %s", e.what());
  }
  return 0;
}
