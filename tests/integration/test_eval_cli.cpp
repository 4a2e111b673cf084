// End to end: `qlora-train eval` and `inspect` on the bundled model, and their bad inputs.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "integration/run_binary.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::test::read_text;
using qlt::test::run_qlora_train;

const std::string kConfig = "--config configs/tiny/eval.json";

// A scratch copy of data/tiny-llama that a test may spoil; removed at scope exit.
struct ScratchModelDir {
  fs::path dir = fs::temp_directory_path() / ("qlt-tiny-" + std::to_string(::getpid()));
  ScratchModelDir() {
    fs::remove_all(dir);
    fs::copy(fs::path(QLT_SOURCE_DIR) / "data/tiny-llama", dir, fs::copy_options::recursive);
  }
  ~ScratchModelDir() { fs::remove_all(dir); }
  std::string set() const { return " --set model.path=" + dir.string(); }
};

// A bad-input run: exit code 2 and a one-line error on stderr that mentions `part`.
void check_one_line_bad_input(const qlt::test::RunResult& r, const std::string& part) {
  qlt::test::check_bad_input(r, {part});
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);  // one line
}

}  // namespace

TEST_CASE("eval on the bundled model matches the transformers reference", "[integration][eval]") {
  auto r = run_qlora_train("eval " + kConfig + " --json --log-level warn");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  auto result = nlohmann::json::parse(r.out);
  auto reference = nlohmann::json::parse(
      read_text(fs::path(QLT_SOURCE_DIR) / "data/tiny-llama/reference_eval.json"));
  CHECK(result["predicted_tokens"] == reference["num_predicted_tokens"]);
  CHECK(result["windows"] == reference["num_windows"]);
  CHECK(result["loss"].get<double>() == Approx(reference["loss"].get<double>()).epsilon(1e-5));
  WARN("eval loss " << result["loss"].get<double>() << " vs transformers "
                    << reference["loss"].get<double>() << ", perplexity "
                    << result["perplexity"].get<double>());
}

TEST_CASE("eval prints a human summary and honours --set", "[integration][eval]") {
  auto r = run_qlora_train("eval " + kConfig +
                           " --set eval.max_batches=1 --set eval.batch_size=2 --log-level warn");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("perplexity"));
  CHECK_THAT(r.out, Contains("in 2 windows"));
}

TEST_CASE("inspect summarizes config, parameters, tensors and memory", "[integration][inspect]") {
  auto r = run_qlora_train("inspect " + kConfig);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  for (const char* part : {"layers 4", "kv heads 2", "parameters", "total", "tensors (",
                           "model.layers.{0..3}.self_attn.q_proj.weight", "memory", "on disk"}) {
    CHECK_THAT(r.out, Contains(part));
  }
}

TEST_CASE("eval bad input: missing model directory", "[integration][errors]") {
  check_one_line_bad_input(run_qlora_train("eval " + kConfig + " --set model.path=/no/such/model"),
                           "/no/such/model does not exist");
}

TEST_CASE("eval bad input: config.json with a missing field", "[integration][errors]") {
  ScratchModelDir m;
  auto config = nlohmann::json::parse(read_text(m.dir / "config.json"));
  config.erase("num_attention_heads");
  std::ofstream(m.dir / "config.json") << config.dump();
  check_one_line_bad_input(run_qlora_train("eval " + kConfig + m.set()),
                           "missing field \"num_attention_heads\"");
}

TEST_CASE("eval bad input: tokenizer.model that is not one", "[integration][errors]") {
  ScratchModelDir m;
  std::ofstream(m.dir / "tokenizer.model") << "this is not a sentencepiece model";
  check_one_line_bad_input(run_qlora_train("eval " + kConfig + m.set()),
                           "not a SentencePiece model");
}

TEST_CASE("eval bad input: dataset that does not exist", "[integration][errors]") {
  check_one_line_bad_input(run_qlora_train("eval " + kConfig + " --set data.eval=data/nope.jsonl"),
                           "dataset data/nope.jsonl does not exist");
}

TEST_CASE("eval bad input: malformed dataset line names file and line", "[integration][errors]") {
  const fs::path bad =
      fs::temp_directory_path() / ("qlt-bad-" + std::to_string(::getpid()) + ".jsonl");
  std::ofstream(bad) << "{\"text\": \"fine\"}\n{\"text\": \"broken\"\n";
  check_one_line_bad_input(run_qlora_train("eval " + kConfig + " --set data.eval=" + bad.string()),
                           bad.string() + ":2: not valid JSON");
  fs::remove(bad);
}

TEST_CASE("eval bad input: CUDA requested from a CPU build", "[integration][errors]") {
#ifndef QLT_WITH_CUDA
  check_one_line_bad_input(run_qlora_train("eval " + kConfig + " --set training.device=cuda"),
                           "has no CUDA");
#endif
}

TEST_CASE("eval with NF4 frozen weights stays close to fp32", "[integration][eval][nf4]") {
  auto r = run_qlora_train("eval --config configs/tiny/eval-nf4.json --json --log-level warn");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  auto result = nlohmann::json::parse(r.out);
  auto reference = nlohmann::json::parse(
      read_text(fs::path(QLT_SOURCE_DIR) / "data/tiny-llama/reference_eval.json"));
  CHECK(result["quantization"] == "nf4");
  const double fp32 = reference["loss"].get<double>(), nf4 = result["loss"].get<double>();
  CHECK(nf4 != fp32);                         // the weights really are quantized
  CHECK(std::abs(nf4 - fp32) / fp32 < 0.01);  // and NF4 costs under 1 % of the loss
  WARN("NF4 eval loss " << nf4 << " vs fp32 " << fp32);
}

TEST_CASE("inspect reports NF4 bits per parameter and per-layer error",
          "[integration][inspect][nf4]") {
  auto r = run_qlora_train("inspect --config configs/tiny/eval-nf4.json");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("quantization NF4 (block 64, double quant)"));
  CHECK_THAT(r.out, Contains("bits/parameter"));
  CHECK_THAT(r.out, Contains("layer 3: 0.09"));
}

TEST_CASE("inspect plans INT4 groups and reads a GGUF model's metadata",
          "[integration][inspect][int4][gguf_model]") {
  auto r = run_qlora_train("inspect --config configs/tiny/eval.json --set quantization.type=int4");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("quantization INT4 (group 32 = GGUF Q4_1)"));
  CHECK_THAT(r.out, Contains("decoder linears INT4 (group 32 = GGUF Q4_1)"));
  r = run_qlora_train(
      "inspect --config configs/tiny/eval.json --set quantization.type=int4 "
      "--set model.path=tests/fixtures/gguf_llama/llama_gqa-q4_1.gguf");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("stored as GGUF v3"));
  CHECK_THAT(r.out, Contains("heads 4 (kv heads 2, head_dim 16)"));
  CHECK_THAT(r.out, Contains("blk.{0..1}.attn_q.weight"));
  CHECK_THAT(r.out, Contains("Q4_1"));
  CHECK_THAT(r.out, Contains("tokenizer: 96 tokens"));
}

TEST_CASE("bad input: unsupported NF4 block size names the key", "[integration][errors][nf4]") {
  check_one_line_bad_input(run_qlora_train("eval --config configs/tiny/eval-nf4.json "
                                           "--set quantization.block_size=100"),
                           "quantization.block_size: NF4 block size 100 is not supported");
}
