// End to end: `qlora-train generate`. Greedy output equals transformers' greedy generate on the
// bundled tiny model (tests/fixtures/generate/tiny.json) and on SmolLM2-135M-Instruct's GGUF
// (smollm2.json; skipped without models/smollm2/, a failure under CI); streamed text, seeded
// sampling, and bad input.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "integration/run_binary.h"
#include "test_common.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::test::kFixtures;
using qlt::test::kSmolLm2Gguf;
using qlt::test::run_qlora_train;

const std::string kGenerate = "generate --config configs/tiny/eval.json ";

// tests/fixtures/generate/<name>: transformers' generate on the prompts.
nlohmann::json generate_fixture(const std::string& name) {
  return qlt::test::read_json(kFixtures / "generate" / name);
}

// `generate --json` with the extra arguments; the parsed result (exit 0 required).
nlohmann::json generate_json(const std::string& args) {
  auto r = run_qlora_train(args + " --json --log-level warn");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.out);
}

// The command line of a fixture case (prompts hold no single quote).
std::string case_args(const nlohmann::json& c) {
  std::string args =
      " --prompt '" + c["prompt"].get<std::string>() + "'" +
      " --set generate.max_new_tokens=" + std::to_string(c["max_new_tokens"].get<int>());
  if (c["chat"].get<bool>()) args += " --chat";
  return args;
}

void check_case(const nlohmann::json& got, const nlohmann::json& want) {
  INFO("prompt \"" << want["prompt"].get<std::string>() << "\" (chat " << want["chat"]
                   << "); transformers: " << want["text"].get<std::string>()
                   << "; ours: " << got["text"].get<std::string>());
  CHECK(got["prompt_ids"] == want["prompt_ids"]);
  CHECK(got["ids"] == want["ids"]);
  CHECK(got["stop"] == (want["stopped_at_eos"].get<bool>() ? "eos" : "max_new_tokens"));
}

}  // namespace

TEST_CASE("greedy generate equals transformers' greedy generate on the tiny model",
          "[integration][generate]") {
  const auto cases = generate_fixture("tiny.json");  // a named json: iterating a temporary's
  // member would read freed memory
  for (const auto& c : cases["cases"]) {
    // --chat: the tiny model has no template of its own; Llama-2 chat as in the fixture.
    check_case(generate_json(kGenerate + case_args(c) + " --set data.chat_template=llama2"), c);
  }
}

TEST_CASE("generate streams the text to stdout and prints its figures to stderr",
          "[integration][generate]") {
  const auto c = generate_fixture("tiny.json")["cases"][0];
  auto r = run_qlora_train(kGenerate + case_args(c));
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  const auto json = generate_json(kGenerate + case_args(c));
  CHECK(r.out == json["text"].get<std::string>() + "\n");
  CHECK(r.out.find(" the LORD") == 0);  // the first token's leading space is kept
  CHECK_THAT(r.err, Contains("9 prompt tokens") && Contains("48 new tokens") &&
                        Contains("tokens/s") && Contains("stopped at max_new_tokens") &&
                        Contains("greedy"));
}

TEST_CASE("sampled output is reproduced by its seed and changes with it",
          "[integration][generate]") {
  const std::string args = kGenerate +
                           "--prompt 'And God said' --set generate.max_new_tokens=24 "
                           "--set generate.temperature=0.9 --set generate.top_p=0.95 ";
  const auto a = generate_json(args + "--set generate.seed=7");
  const auto b = generate_json(args + "--set generate.seed=7");
  const auto c = generate_json(args + "--set generate.seed=8");
  const auto greedy = generate_json(kGenerate +
                                    "--prompt 'And God said' "
                                    "--set generate.max_new_tokens=24");
  CHECK(a["ids"] == b["ids"]);
  CHECK(a["text"] == b["text"]);
  CHECK(a["ids"] != c["ids"]);
  CHECK(a["ids"] != greedy["ids"]);
}

TEST_CASE("generate on SmolLM2's GGUF equals transformers' greedy output",
          "[integration][generate][smollm2]") {
  if (!fs::exists(kSmolLm2Gguf)) {
    if (std::getenv("CI") != nullptr) FAIL("CI is set but " << kSmolLm2Gguf << " is missing");
    WARN("SKIPPED: " << kSmolLm2Gguf << " is absent (scripts/models/smollm2.sh fetches it)");
    return;
  }
  const auto cases = generate_fixture("smollm2.json");  // a named json: iterating a temporary's
  // member would read freed memory
  for (const auto& c : cases["cases"]) {
    // data.chat_template auto: SmolLM2's own ChatML template, its default system message
    // included; <|im_end|> (its EOS too) ends the reply.
    const auto got =
        generate_json(kGenerate + case_args(c) + " --set model.path=" + kSmolLm2Gguf.string() +
                      " --set data.chat_template=auto");
    check_case(got, c);
    if (c["chat"].get<bool>()) CHECK(got["text"] == c["text"]);
  }
}

TEST_CASE("generate bad input: no prompt, --prompt without text, --chat without a template",
          "[integration][generate][errors]") {
  qlt::test::check_bad_input(run_qlora_train(kGenerate), {"generate needs --prompt TEXT"});
  auto r = run_qlora_train(kGenerate + "--prompt");
  INFO("stderr: " << r.err);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("--prompt"));
  qlt::test::check_bad_input(
      run_qlora_train(kGenerate + "--prompt Hi --chat --set data.chat_template=auto"),
      {"data/tiny-llama has no chat template", "llama2, llama3, chatml"});
  qlt::test::check_bad_input(run_qlora_train(kGenerate + "--prompt Hi --checkpoint /no/such/dir"),
                             {"--checkpoint /no/such/dir: does not exist"});
  qlt::test::check_bad_input(run_qlora_train(kGenerate + "--prompt Hi --set generate.top_p=0"),
                             {"generate.top_p"});
}
