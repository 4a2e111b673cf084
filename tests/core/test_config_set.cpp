// --set dotted.key=value overrides (load_config's `overrides`).
#include <catch2/catch.hpp>

#include "core/config.h"
#include "core/errors.h"
#include "test_config_util.h"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using qlt::load_config;
using qlt::TrainConfig;
using qlt::test::TempFile;

namespace {

// Loads `content` (a JSON file) with the given overrides.
TrainConfig load_with(const std::string& name, const std::string& content,
                      const std::vector<std::string>& overrides) {
  TempFile file(name, content);
  return load_config(file.path(), overrides);
}

const char* kMinimal = R"({"model": {"path": "models/m"}})";

}  // namespace

TEST_CASE("config --set: a plain string value, supplying a missing required key", "[config]") {
  const TrainConfig config = load_with("set_string.json", "{}", {"model.path=data/x"});
  CHECK(config.model.path == "data/x");
  // Everything after the first '=' is the value.
  CHECK(load_with("set_eq.json", "{}", {"model.path=a=b"}).model.path == "a=b");
}

TEST_CASE("config --set: string keys take number-like text literally, JSON strings unquoted",
          "[config]") {
  CHECK(load_with("set_num.json", "{}", {"model.path=123"}).model.path == "123");
  CHECK(load_with("set_true.json", "{}", {"model.path=true"}).model.path == "true");
  CHECK(load_with("set_quoted.json", kMinimal, {R"(model.compute_dtype="bfloat16")"})
            .model.compute_dtype == "bfloat16");
  CHECK(load_with("set_choice.json", kMinimal, {"model.compute_dtype=bfloat16"})
            .model.compute_dtype == "bfloat16");
  CHECK(load_with("set_empty.json", kMinimal, {"data.train="}).data.train.empty());
}

TEST_CASE("config --set: an integer value", "[config]") {
  CHECK(load_with("set_int.json", kMinimal, {"data.max_seq_len=128"}).data.max_seq_len == 128);
  CHECK(load_with("set_intf.json", kMinimal, {"data.max_seq_len=128.0"}).data.max_seq_len == 128);
  CHECK(load_with("set_seed.json", kMinimal, {"training.seed=0"}).training.seed == 0);
}

TEST_CASE("config --set: nested keys create missing sections and override the file", "[config]") {
  const char* file = R"({"model": {"path": "m"}, "data": {"max_seq_len": 1}})";
  // The file's out-of-range value is replaced before validation, so this loads.
  const TrainConfig config =
      load_with("set_nested.json", file,
                {"data.max_seq_len=64", "training.device=cuda:0", "eval.batch_size=2"});
  CHECK(config.data.max_seq_len == 64);
  CHECK(config.training.device == "cuda:0");
  CHECK(config.eval.batch_size == 2);
  // Later overrides win.
  CHECK(
      load_with("set_twice.json", kMinimal, {"training.seed=1", "training.seed=2"}).training.seed ==
      2);
}

TEST_CASE("config --set: unknown key gets a did-you-mean and names the argument", "[config]") {
  REQUIRE_THROWS_WITH(load_with("set_unknown.json", kMinimal, {"data.max_seq_length=64"}),
                      StartsWith("--set data.max_seq_length=64: unknown key "
                                 "data.max_seq_length; did you mean data.max_seq_len?"));
  REQUIRE_THROWS_WITH(load_with("set_section.json", kMinimal, {"trainng.seed=1"}),
                      Contains("did you mean training.seed?"));
  REQUIRE_THROWS_WITH(
      load_with("set_whole.json", kMinimal, {"model=x"}),
      StartsWith("--set model=x: model is a section") && Contains("path, compute_dtype"));
}

TEST_CASE("config --set: a missing '=' names the argument", "[config]") {
  REQUIRE_THROWS_WITH(load_with("set_noeq.json", kMinimal, {"data.max_seq_len"}),
                      StartsWith("--set data.max_seq_len: expected dotted.key=value"));
  REQUIRE_THROWS_WITH(load_with("set_nokey.json", kMinimal, {"=5"}),
                      StartsWith("--set =5: expected dotted.key=value"));
}

TEST_CASE("config --set: a bad value names the argument", "[config]") {
  REQUIRE_THROWS_WITH(load_with("set_type.json", kMinimal, {"data.max_seq_len=abc"}),
                      StartsWith("--set data.max_seq_len=abc: data.max_seq_len: expected an "
                                 "integer, got a string (\"abc\")"));
  REQUIRE_THROWS_WITH(load_with("set_range.json", kMinimal, {"eval.batch_size=0"}),
                      StartsWith("--set eval.batch_size=0: eval.batch_size: 0 is out of range"));
  REQUIRE_THROWS_WITH(load_with("set_choice_bad.json", kMinimal, {"model.compute_dtype=fp8"}),
                      StartsWith("--set model.compute_dtype=fp8: model.compute_dtype: \"fp8\" "
                                 "is not allowed"));
  REQUIRE_THROWS_WITH(load_with("set_device.json", kMinimal, {"training.device=cuda:x"}),
                      StartsWith("--set training.device=cuda:x: training.device"));
}

TEST_CASE("config --set: into a file section that is not an object names the file", "[config]") {
  TempFile file("set_notobj.json", R"({"model": "m"})");
  REQUIRE_THROWS_WITH(load_config(file.path(), {"model.path=x"}),
                      StartsWith(file.path().string() + ": model must be an object"));
}

// Found by tests/fuzz/fuzz_config (regressions/config/): a value that is not UTF-8 cannot be
// written back as JSON; it was a raw nlohmann error (exit 1) or a crash at config.json.
TEST_CASE("config --set: a value that is not valid UTF-8 is refused naming the key", "[config]") {
  for (const std::string set : {"model.path=data/\xba", "quantization.type=nf\xba"}) {
    REQUIRE_THROWS_WITH(
        load_with("set_utf8.json", R"({"model": {"path": "m"}})", {set}),
        Contains("--set " + set.substr(0, set.find('='))) && Contains("not valid UTF-8"));
  }
}

TEST_CASE("config --set: a number beyond a double is refused as such", "[config]") {
  REQUIRE_THROWS_WITH(
      load_with("set_overflow.json", R"({"model": {"path": "m"}})", {"optimizer.lr=1e999"}),
      Contains("--set optimizer.lr") && Contains("number overflow"));
}
