// Which config changes a resumed run accepts, and how a refused change is named.
#include <catch2/catch.hpp>

#include "core/config.h"
#include "train/resume_config.h"

namespace {

using Catch::Matchers::Contains;
using qlt::config_to_json;
using qlt::TrainConfig;
using qlt::train::may_change_on_resume;
using qlt::train::resume_config_hash;
using qlt::train::resume_incompatibilities;

TrainConfig resume_base_config() {
  TrainConfig c;
  c.model.path = "models/a";
  c.data.train = "data/train.jsonl";
  return c;
}

}  // namespace

TEST_CASE("resume accepts run length, logging, eval, checkpointing and device changes",
          "[train][resume]") {
  TrainConfig changed = resume_base_config();
  changed.training.max_steps = 5000;
  changed.training.threads = 3;
  changed.training.device = "cpu";
  changed.training.activation_checkpointing = true;
  changed.checkpoint.every_steps = 7;
  changed.checkpoint.output_dir = "elsewhere";
  changed.logging.every_steps = 1;
  changed.eval.every_steps = 3;
  changed.data.eval = "other.jsonl";
  changed.training.distributed = "gloo";
  changed.training.distributed_timeout_s = 30;
  CHECK(resume_incompatibilities(config_to_json(resume_base_config()), config_to_json(changed))
            .empty());
  CHECK(resume_config_hash(config_to_json(resume_base_config())) ==
        resume_config_hash(config_to_json(changed)));
}

TEST_CASE("resume accepts an optimizer.type that keeps the state: a paged twin, not another",
          "[train][resume][paged]") {
  TrainConfig paged = resume_base_config();
  paged.optimizer.type = "paged_adamw";
  CHECK(resume_incompatibilities(config_to_json(resume_base_config()), config_to_json(paged))
            .empty());
  TrainConfig eight = resume_base_config();
  eight.optimizer.type = "paged_adamw_8bit";
  const auto diffs = resume_incompatibilities(config_to_json(paged), config_to_json(eight));
  REQUIRE(diffs.size() == 1);
  CHECK_THAT(diffs[0], Contains("optimizer.type: the checkpoint has \"paged_adamw\", this "
                                "config has \"paged_adamw_8bit\""));
}

TEST_CASE("resume refuses changes to what the checkpoint was trained with, naming each",
          "[train][resume]") {
  TrainConfig changed = resume_base_config();
  changed.adapter.rank = 8;
  changed.adapter.target_modules = {"q_proj", "v_proj"};
  changed.model.path = "models/b";
  changed.training.micro_batch_size = 2;
  const auto diffs =
      resume_incompatibilities(config_to_json(resume_base_config()), config_to_json(changed));
  REQUIRE(diffs.size() == 4);
  CHECK_THAT(diffs[0], Contains("model.path: the checkpoint has \"models/a\", this config has "
                                "\"models/b\""));
  CHECK_THAT(diffs[1], Contains("adapter.rank: the checkpoint has 64, this config has 8"));
  CHECK_THAT(diffs[2], Contains("adapter.target_modules") && Contains("[\"q_proj\",\"v_proj\"]"));
  CHECK_THAT(diffs[3], Contains("training.micro_batch_size"));
  CHECK(resume_config_hash(config_to_json(resume_base_config())) !=
        resume_config_hash(config_to_json(changed)));
}

TEST_CASE("every key is either resumable or must match", "[train][resume]") {
  for (const char* key : {"quantization.type", "optimizer.lr", "schedule.type", "data.packing",
                          "training.seed", "training.grad_accum", "adapter.dropout"})
    CHECK_FALSE(may_change_on_resume(key));
  for (const char* key : {"training.max_steps", "logging.every_steps", "eval.batch_size",
                          "checkpoint.keep_last", "training.threads"})
    CHECK(may_change_on_resume(key));
}
