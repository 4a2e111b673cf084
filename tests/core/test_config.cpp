// config_from_json: defaults, round trip, and every documented error kind (DESIGN.md §4, §8).
#include <catch2/catch.hpp>

#include "adapters/adapter.h"
#include "core/config.h"
#include "core/config_schema.h"
#include "core/errors.h"
#include "test_config_util.h"

using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::config_from_json;
using qlt::TrainConfig;
using qlt::UserError;
using qlt::test::minimal_config;

namespace {

// minimal_config() with `section.name` set to `value`.
json config_with(const std::string& section, const std::string& name, json value) {
  json config = minimal_config();
  config[section][name] = std::move(value);
  return config;
}

TrainConfig parse_config(const json& config) { return config_from_json(config, "c.json"); }

}  // namespace

TEST_CASE("config: a minimal config gets every default from TrainConfig{}", "[config]") {
  const TrainConfig config = parse_config(minimal_config());
  const TrainConfig defaults;
  CHECK(config.model.path == "models/m");
  CHECK(config.model.compute_dtype == defaults.model.compute_dtype);
  CHECK(config.data.max_seq_len == defaults.data.max_seq_len);
  CHECK(config.eval.batch_size == defaults.eval.batch_size);
  CHECK(config.training.device == defaults.training.device);
  CHECK(config.training.seed == defaults.training.seed);
}

TEST_CASE("config: the table's defaults are the struct initializers", "[config]") {
  const json dumped = qlt::config_to_json(TrainConfig{});
  for (const auto& key : qlt::config_keys()) {
    INFO(key.path);
    std::string pointer = "/" + key.path;
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    CHECK(dumped.at(json::json_pointer(pointer)) == key.default_value);
  }
  // Spot checks against config.h, so a table that stopped reading TrainConfig{} would show.
  CHECK(dumped["data"]["max_seq_len"] == 256);
  CHECK(dumped["model"]["compute_dtype"] == "float32");
  CHECK(dumped["training"]["seed"] == 42);
}

TEST_CASE("config: config_to_json -> config_from_json round-trips every key", "[config]") {
  TrainConfig config;
  config.model.path = "models/llama";
  config.model.compute_dtype = "bfloat16";
  config.data.train = "train.jsonl";
  config.data.eval = "eval.jsonl";
  config.data.max_seq_len = 1024;
  config.eval.batch_size = 3;
  config.eval.max_batches = 7;
  config.training.device = "cuda:1";
  config.training.threads = 4;
  config.training.seed = 1234567890123;
  const json dumped = qlt::config_to_json(config);
  const TrainConfig back = parse_config(dumped);
  CHECK(qlt::config_to_json(back) == dumped);
  CHECK(back.data.max_seq_len == 1024);
  CHECK(back.training.device == "cuda:1");
  CHECK(back.training.seed == 1234567890123);
  // Every key of the table appears in the dump, and nothing else does.
  CHECK(qlt::test::count_config_leaves(dumped) == qlt::config_keys().size());
  for (const auto& key : qlt::config_keys()) CHECK(qlt::test::has_config_key(dumped, key.path));
}

TEST_CASE("config: config_to_text lists keys in table order", "[config]") {
  const std::string text = qlt::config_to_text(parse_config(minimal_config()));
  CHECK(json::parse(text) == qlt::config_to_json(parse_config(minimal_config())));
  CHECK(text.find("\"model\"") < text.find("\"data\""));
  CHECK(text.find("\"data\"") < text.find("\"training\""));
}

TEST_CASE("config: unknown key gets a did-you-mean", "[config]") {
  REQUIRE_THROWS_WITH(parse_config(config_with("data", "max_seq_length", 512)),
                      Contains("c.json") && Contains("unknown key data.max_seq_length") &&
                          Contains("did you mean data.max_seq_len?"));
  // Nothing close: the section's keys are listed instead.
  REQUIRE_THROWS_WITH(parse_config(config_with("data", "shuffle", true)),
                      Contains("unknown key data.shuffle") &&
                          Contains("data has: train, eval, format, chat_template, max_seq_len"));
}

TEST_CASE("config: unknown top-level section or key gets a did-you-mean", "[config]") {
  json config = minimal_config();
  config["trainng"] = {{"seed", 1}};
  REQUIRE_THROWS_WITH(parse_config(config),
                      Contains("unknown section trainng") && Contains("did you mean training?"));
  config = minimal_config();
  config["seed"] = 1;  // a key at the wrong level
  REQUIRE_THROWS_WITH(parse_config(config), Contains("did you mean training.seed?"));
  config = minimal_config();
  config["model"]["eval"] = "x.jsonl";  // a key in the wrong section
  REQUIRE_THROWS_WITH(parse_config(config), Contains("did you mean data.eval?"));
}

TEST_CASE("config: wrong type names the path and what was expected", "[config]") {
  REQUIRE_THROWS_WITH(parse_config(config_with("data", "max_seq_len", "256")),
                      Contains("c.json: data.max_seq_len: expected an integer, got a string "
                               "(\"256\")") &&
                          Contains("without quotes"));
  REQUIRE_THROWS_WITH(parse_config(config_with("model", "compute_dtype", 16)),
                      Contains("model.compute_dtype: expected a string, got a number (16)"));
  REQUIRE_THROWS_WITH(parse_config(config_with("training", "seed", nullptr)),
                      Contains("training.seed: expected an integer, got null"));
  REQUIRE_THROWS_WITH(parse_config(config_with("eval", "batch_size", json::array({8}))),
                      Contains("eval.batch_size: expected an integer, got an array"));
}

TEST_CASE("config: integral floats are integers, fractional ones are type errors", "[config]") {
  // Decision (config_schema.cpp, to_int64): JSON has one number type and generators may
  // write 256 as 256.0 or 2.56e2, so an integral value is accepted for an int key.
  CHECK(parse_config(config_with("data", "max_seq_len", 256.0)).data.max_seq_len == 256);
  CHECK(parse_config(json::parse(R"({"model": {"path": "m"}, "eval": {"batch_size": 1e1}})"))
            .eval.batch_size == 10);
  REQUIRE_THROWS_WITH(parse_config(config_with("data", "max_seq_len", 2.5)),
                      Contains("data.max_seq_len: expected an integer, got a number (2.5)"));
}

TEST_CASE("config: out-of-range values name the allowed range", "[config]") {
  REQUIRE_THROWS_WITH(parse_config(config_with("data", "max_seq_len", 1)),
                      Contains("data.max_seq_len: 1 is out of range; allowed: 2..1048576"));
  REQUIRE_THROWS_WITH(parse_config(config_with("eval", "batch_size", 0)),
                      Contains("eval.batch_size: 0 is out of range; allowed: 1..65536"));
  REQUIRE_THROWS_WITH(parse_config(config_with("training", "seed", -1)),
                      Contains("training.seed: -1 is out of range; allowed: >= 0"));
  REQUIRE_THROWS_WITH(parse_config(config_with("training", "threads", -1)),
                      Contains("training.threads: -1 is out of range"));
  REQUIRE_THROWS_WITH(parse_config(config_with("eval", "max_batches", -3)),
                      Contains("eval.max_batches: -3 is out of range"));
  // Beyond int64_t, as an unsigned and as a float.
  REQUIRE_THROWS_WITH(parse_config(config_with("training", "seed", 18446744073709551615ULL)),
                      Contains("training.seed: 18446744073709551615 is out of range"));
  REQUIRE_THROWS_WITH(parse_config(config_with("training", "seed", 1e30)),
                      Contains("is out of range"));
  CHECK(parse_config(config_with("data", "max_seq_len", 2)).data.max_seq_len ==
        2);  // bounds are inclusive
  CHECK(parse_config(config_with("data", "max_seq_len", 1 << 20)).data.max_seq_len == 1 << 20);
}

TEST_CASE("config: invalid choice lists the allowed values", "[config]") {
  REQUIRE_THROWS_WITH(
      parse_config(config_with("model", "compute_dtype", "float8")),
      Contains("model.compute_dtype: \"float8\" is not allowed") && Contains("float32, bfloat16"));
  REQUIRE_THROWS_WITH(
      parse_config(config_with("data", "format", "csv")),
      Contains("data.format: \"csv\" is not allowed; use one of: text, alpaca, chat"));
  CHECK(parse_config(config_with("model", "compute_dtype", "bfloat16")).model.compute_dtype ==
        "bfloat16");
}

TEST_CASE("config: device is auto, cpu, cuda or cuda:N", "[config]") {
  for (const char* device : {"auto", "cpu", "cuda", "cuda:0", "cuda:12"}) {
    CHECK(parse_config(config_with("training", "device", device)).training.device == device);
  }
  for (const char* device : {"gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:1.5", "CPU", "cuda:0 "}) {
    INFO(device);
    REQUIRE_THROWS_WITH(parse_config(config_with("training", "device", device)),
                        Contains("training.device") && Contains("auto|cpu|cuda|cuda:N"));
  }
}

TEST_CASE("config: missing required model.path says how to supply it", "[config]") {
  REQUIRE_THROWS_WITH(parse_config(json::object()),
                      Contains("c.json: missing required key model.path") &&
                          Contains("{\"model\": {\"path\": ...}}") &&
                          Contains("--set model.path="));
  REQUIRE_THROWS_WITH(parse_config({{"model", {{"compute_dtype", "float32"}}}}),
                      Contains("missing required key model.path"));
  REQUIRE_THROWS_WITH(parse_config({{"model", {{"path", ""}}}}),
                      Contains("model.path must not be empty"));
}

TEST_CASE("config: a section that is not an object", "[config]") {
  json config = minimal_config();
  config["data"] = json::array({1, 2});
  REQUIRE_THROWS_WITH(parse_config(config),
                      Contains("c.json: data must be an object with keys (train, eval, format, "
                               "chat_template, max_seq_len, packing, train_on_inputs), got an "
                               "array"));
  config["data"] = nullptr;
  REQUIRE_THROWS_WITH(parse_config(config),
                      Contains("data must be an object") && Contains("got null"));
  REQUIRE_THROWS_WITH(parse_config({{"model", "models/m"}}),
                      Contains("model must be an object") && Contains("got a string"));
}

TEST_CASE("config: the top level must be an object", "[config]") {
  REQUIRE_THROWS_WITH(
      parse_config(json::array({1})),
      Contains("c.json: the top level must be a JSON object") && Contains("got an array"));
  REQUIRE_THROWS_WITH(parse_config(json(42)), Contains("got a number (42)"));
  REQUIRE_THROWS_WITH(config_from_json(json(42), ""), Contains("config: the top level"));
}

TEST_CASE("config: every error is a UserError", "[config]") {
  CHECK_THROWS_AS(parse_config(config_with("data", "max_seq_length", 1)), UserError);
  CHECK_THROWS_AS(parse_config(config_with("data", "max_seq_len", "1")), UserError);
  CHECK_THROWS_AS(parse_config(config_with("data", "max_seq_len", 1)), UserError);
  CHECK_THROWS_AS(parse_config(config_with("model", "compute_dtype", "x")), UserError);
  CHECK_THROWS_AS(parse_config(json::object()), UserError);
  CHECK_THROWS_AS(parse_config(json::array()), UserError);
}

TEST_CASE("config: the adapter.type choices are the adapter kinds' names", "[config][adapters]") {
  const qlt::ConfigKey* key = nullptr;
  for (const auto& k : qlt::config_keys())
    if (k.path == "adapter.type") key = &k;
  REQUIRE(key != nullptr);
  CHECK(key->choices == qlt::adapters::adapter_type_names());
  CHECK(key->choices == std::vector<std::string>{"none", "lora", "blora", "qa-blora", "l4q"});
}
