// End to end: the real binary's `config` subcommand, its output and exit codes.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/config_schema.h"
#include "test_config_util.h"
#include "test_paths.h"

using Catch::Matchers::Contains;
using qlt::test::read_text;
using qlt::test::run_command;
using qlt::test::TempFile;

namespace {

// Runs `qlora-train <arguments>`, capturing stdout and stderr into files named after `tag`.
struct Run {
  int exit_code;
  std::string out, err;
};

Run run_binary(const std::string& tag, const std::string& arguments) {
  const auto out = qlt::test::temp_path("cli_" + tag + ".out");
  const auto err = qlt::test::temp_path("cli_" + tag + ".err");
  const int code = run_command(
      fmt::format("'{}' {} >'{}' 2>'{}'", QLT_BINARY, arguments, out.string(), err.string()));
  Run run{code, read_text(out), read_text(err)};
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return run;
}

}  // namespace

TEST_CASE("qlora-train config: a bad config exits 2 naming the JSON path", "[config]") {
  TempFile file("cli_bad.json", R"({"model": {"path": "m"}, "data": {"max_seq_length": 64}})");
  const Run run = run_binary("bad", "config --config '" + file.path().string() + "'");
  CHECK(run.exit_code == 2);
  CHECK_THAT(run.err, Contains("data.max_seq_length") && Contains("did you mean data.max_seq_len"));
  CHECK(run.out.empty());
}

TEST_CASE("qlora-train config: a valid config prints the effective config", "[config]") {
  TempFile file("cli_good.json", R"({"model": {"path": "m"}})");
  const Run run = run_binary(
      "good", "config --config '" + file.path().string() + "' --set data.max_seq_len=128");
  REQUIRE(run.exit_code == 0);
  const auto printed = nlohmann::json::parse(run.out);
  CHECK(printed["data"]["max_seq_len"] == 128);
  CHECK(printed["training"]["seed"] == 42);  // defaults filled in
  CHECK(qlt::test::count_config_leaves(printed) == qlt::config_keys().size());
}

TEST_CASE("qlora-train config: --keys exits 0 and lists the keys", "[config]") {
  const Run run = run_binary("keys", "config --keys");
  CHECK(run.exit_code == 0);
  CHECK(run.out == qlt::describe_config_keys());
}

TEST_CASE("qlora-train config: neither --config nor --keys exits 2", "[config]") {
  const Run run = run_binary("none", "config");
  CHECK(run.exit_code == 2);
  CHECK_THAT(run.err, Contains("--config FILE") && Contains("--keys"));
  CHECK(run_binary("missing", "config --config /nonexistent/x.json").exit_code == 2);
}
