// End to end: `qlora-train export` after a short training run (peft equals final/, hf-bf16
// evaluates like the merged model), from a GGUF source, and every bad input: exit code 2 and
// nothing at --out (and no temporary beside it).
#include <ATen/CPUGeneratorImpl.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "export/peft_adapter.h"
#include "integration/run_binary.h"
#include "integration/train_cli_util.h"
#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "model/adapter_test_util.h"
#include "model/llama.h"
#include "test_common.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::test::kRoot;
using qlt::test::read_text;
using qlt::test::run_qlora_train;
using qlt::test::TempDir;

// An export config: tiny-llama on NF4 with LoRA, WordNet eval (for the eval comparisons).
fs::path write_export_config(const TempDir& tmp, json overrides = json::object()) {
  json config = {
      {"model", {{"path", "data/tiny-llama"}, {"compute_dtype", "float32"}}},
      {"quantization", {{"type", "nf4"}}},
      {"adapter", {{"rank", 4}, {"alpha", 8}, {"dropout", 0.0}}},
      {"data", {{"eval", "data/wordnet/eval.jsonl"}, {"format", "alpaca"}, {"max_seq_len", 64}}},
      {"training", {{"threads", 1}, {"device", "cpu"}}},
      {"eval", {{"batch_size", 8}, {"max_batches", 1}}}};
  config.merge_patch(overrides);
  const fs::path file = tmp / "export.json";
  std::ofstream(file) << config.dump(2);
  return file;
}

// A PEFT folder for tiny-llama (NF4 base) with trained-looking adapters, made in-process (the
// error tests need an adapter, not a training run).
fs::path write_adapter(const TempDir& tmp, const std::string& type = "lora") {
  const qlt::quant::WeightFormat nf4 = qlt::quant::Nf4Options{};
  auto m = qlt::model::load_llama(kRoot / "data/tiny-llama", at::kFloat, at::kCPU, nf4);
  qlt::AdapterConfig c;
  c.type = type;
  c.rank = 4;
  c.alpha = 8;
  c.dropout = 0;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  qlt::model::attach_adapters(m, qlt::test::adapter_opts(c, nf4), gen);
  {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : qlt::test::lora_params(m))
      if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.05, gen);
  }
  const fs::path dir = tmp / ("adapter-" + type);
  fs::create_directories(dir);
  qlt::exporter::write_peft_adapter(dir, m, "data/tiny-llama");
  return dir;
}

std::string export_args(const fs::path& config, const fs::path& checkpoint,
                        const std::string& format, const fs::path& out) {
  return "export --config '" + config.string() + "' --checkpoint '" + checkpoint.string() +
         "' --format " + format + " --out '" + out.string() + "' --log-level warn";
}

// A bad-input run: exit 2, a one-line error naming every part, nothing at `out` (unless
// `out_existed`) and nothing beside it.
void check_refused(const qlt::test::RunResult& r, const std::vector<std::string>& parts,
                   const fs::path& out, bool out_existed = false) {
  qlt::test::check_bad_input(r, parts);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  if (!out_existed) CHECK_FALSE(fs::exists(fs::symlink_status(out)));
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out.parent_path(), ec)) {
    INFO(e.path());
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  }
}

double eval_loss(const std::string& args) {
  auto r = run_qlora_train(args + " --json --log-level warn");
  INFO(args << "\nstderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  return json::parse(r.out)["loss"].get<double>();
}

}  // namespace

TEST_CASE("export after a short training run: peft equals final/, hf-bf16 evaluates as merged",
          "[integration][export_cli]") {
  // Two NF4 + LoRA steps (a checkpoint at step 2 and final/ hold the same adapter).
  auto cfg = qlt::test::tiny_train_config(false);
  cfg["training"]["max_steps"] = 2;
  cfg["training"]["micro_batch_size"] = 2;
  cfg["checkpoint"]["every_steps"] = 2;
  const qlt::test::TrainScratch scratch(cfg);
  const fs::path run = scratch.run("run");
  auto trained = scratch.train(run, "--log-level warn");
  INFO("train stderr: " << trained.err);
  REQUIRE(trained.exit_code == 0);
  const fs::path final_dir = run / "final";
  const fs::path tmp = scratch.dir.path;
  const fs::path config = scratch.config;

  // (One flow, no SECTIONs: each would train again.)
  {  // peft from a training checkpoint equals final/
    auto r = run_qlora_train(export_args(config, run / "checkpoint-000002", "peft", tmp / "peft"));
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Contains("exported peft to"));
    CHECK_THAT(r.out, Contains("adapter_model.safetensors"));
    const auto ours = qlt::io::SafetensorsFile::open(tmp / "peft/adapter_model.safetensors");
    const auto theirs = qlt::io::SafetensorsFile::open(final_dir / "adapter_model.safetensors");
    REQUIRE(ours.tensors().size() == theirs.tensors().size());
    REQUIRE(ours.tensors().size() == 56);
    for (const auto& info : theirs.tensors()) {
      INFO(info.name);
      CHECK(qlt::test::same_tensor(ours.tensor(info.name), theirs.tensor(info.name)));
    }
    CHECK(json::parse(read_text(tmp / "peft/adapter_config.json")) ==
          json::parse(read_text(final_dir / "adapter_config.json")));
  }

  {  // hf-bf16 evaluates like the merged model, dequantized and original
    auto r = run_qlora_train(export_args(config, final_dir, "hf-bf16", tmp / "hf"));
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Contains("exported hf-bf16 to"));
    CHECK_THAT(r.out, Contains("the dequantized NF4 (block 64, double quant) weights it was "
                               "trained against (--merge-into dequantized): 28 of 28 linears"));
    CHECK_THAT(r.out, Contains("model.safetensors 2.6"));
    for (const char* file : {"config.json", "tokenizer.model", "tokenizer_config.json"})
      CHECK(fs::exists(tmp / "hf" / file));

    const std::string eval = "eval --config '" + config.string() +
                             "' --set data.eval=data/wordnet/eval.jsonl --set eval.max_batches=1";
    const double merged =
        eval_loss(eval + " --checkpoint '" + final_dir.string() + "' --merge none");
    const double exported = eval_loss(eval + " --set quantization.type=none --set model.path='" +
                                      (tmp / "hf").string() + "'");
    CHECK(exported == Approx(merged).margin(0.01));  // bf16 rounding of every weight

    r = run_qlora_train(export_args(config, final_dir, "hf-bf16", tmp / "hf-original") +
                        " --merge-into original");
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.out, Contains("the original full-precision weights (trained on NF4"));
    // The originals (tiny-llama's bf16 weights) + the update, rounded to bf16 once; the
    // dequantized export holds other weights (the NF4 error the adapter was trained on).
    auto m = qlt::model::load_llama(kRoot / "data/tiny-llama", at::kFloat, at::kCPU);
    qlt::exporter::load_peft_adapter(m, final_dir, qlt::quant::DenseFormat{});
    qlt::model::merge_adapters(m, qlt::quant::DenseFormat{});
    const auto from_original = qlt::model::load_llama(tmp / "hf-original", at::kFloat, at::kCPU);
    const auto from_dequantized = qlt::model::load_llama(tmp / "hf", at::kFloat, at::kCPU);
    for (int j = 0; j < qlt::model::kNumLlamaLinears; ++j) {
      INFO("layer 3 linear " << j);
      const auto weight = [j](const qlt::model::LlamaModel& model) {
        return qlt::model::linear_weight(model.weights.layers[3], j).materialize(at::kFloat);
      };
      CHECK(at::equal(weight(from_original), weight(m).to(at::kBFloat16).to(at::kFloat)));
      CHECK_FALSE(at::equal(weight(from_original), weight(from_dequantized)));
    }
    WARN("held-out loss: merged " << merged << ", its hf-bf16 export " << exported);
  }
}

TEST_CASE("export from a full-precision GGUF merges into its originals; says what is missing",
          "[integration][export_cli][gguf_model]") {
  // The llama_gqa LoRA of PEFT's fixture on the f32 GGUF of the same model, INT4 base.
  TempDir tmp;
  const fs::path config = write_export_config(
      tmp, {{"model", {{"path", "tests/fixtures/gguf_llama/llama_gqa-f32.gguf"}}},
            {"quantization", {{"type", "int4"}}}});
  const fs::path adapter = kRoot / "tests/fixtures/lora_llama_gqa/adapter";
  auto r = run_qlora_train(export_args(config, adapter, "hf-bf16", tmp / "hf") +
                           " --merge-into original");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("tokenizer.json"));  // the GGUF's vocabulary, as HF files
  CHECK(fs::exists(tmp / "hf/tokenizer_config.json"));

  // The merge into the f32 originals, as our loader computes it, in bf16.
  auto m = qlt::model::load_llama(kRoot / "tests/fixtures/llama_gqa", at::kFloat, at::kCPU);
  qlt::exporter::load_peft_adapter(m, adapter, qlt::quant::DenseFormat{});
  qlt::model::merge_adapters(m, qlt::quant::DenseFormat{});
  const auto reloaded = qlt::model::load_llama(tmp / "hf", at::kFloat, at::kCPU);
  for (int64_t i = 0; i < 2; ++i) {
    for (int j = 0; j < qlt::model::kNumLlamaLinears; ++j) {
      INFO("layer " << i << " linear " << j);
      const at::Tensor want =
          qlt::model::linear_weight(m.weights.layers[i], j).materialize(at::kFloat);
      const at::Tensor got =
          qlt::model::linear_weight(reloaded.weights.layers[i], j).materialize(at::kFloat);
      CHECK(at::equal(got, want.to(at::kBFloat16).to(at::kFloat)));
    }
  }
}

TEST_CASE("export refuses bad input with exit code 2 and leaves nothing at --out",
          "[integration][export_cli][errors]") {
  TempDir tmp;
  const fs::path config = write_export_config(tmp);
  const fs::path adapter = write_adapter(tmp);
  const fs::path out = tmp / "out";

  SECTION("an unknown format") {
    check_refused(run_qlora_train(export_args(config, adapter, "gguf-q9", out)),
                  {"--format gguf-q9: unknown export format", "peft, hf-bf16"}, out);
  }
  SECTION("a checkpoint for another model") {
    check_refused(run_qlora_train(export_args(
                      config, kRoot / "tests/fixtures/lora_llama_gqa/adapter", "hf-bf16", out)),
                  {"adapter tensors do not match the model"}, out);
  }
  SECTION("an existing --out is kept; --overwrite replaces it") {
    fs::create_directories(out);
    qlt::test::write_bytes(out / "keep.txt", "precious");
    check_refused(run_qlora_train(export_args(config, adapter, "peft", out)),
                  {"already exists", "--overwrite"}, out, true);
    CHECK(read_text(out / "keep.txt") == "precious");
    auto r = run_qlora_train(export_args(config, adapter, "peft", out) + " --overwrite");
    INFO("stderr: " << r.err);
    CHECK(r.exit_code == 0);
    CHECK_FALSE(fs::exists(out / "keep.txt"));
    CHECK(fs::exists(out / "adapter_model.safetensors"));
  }
  SECTION("an --out that is the checkpoint") {
    check_refused(run_qlora_train(export_args(config, adapter, "peft", adapter) + " --overwrite"),
                  {"an input of this export"}, adapter, true);
    CHECK(fs::exists(adapter / "adapter_model.safetensors"));
  }
  SECTION("an unwritable --out (a missing folder; the unit tests have the others)") {
    check_refused(run_qlora_train(export_args(config, adapter, "hf-bf16", tmp / "no/such/out")),
                  {"does not exist"}, tmp / "no/such/out");
  }
  SECTION("--merge-into original without originals: bitsandbytes folder, Q4_1 GGUF") {
    const fs::path gqa = kRoot / "tests/fixtures/lora_llama_gqa/adapter";
    check_refused(
        run_qlora_train(export_args(config, gqa, "hf-bf16", out) +
                        " --merge-into original --set model.path=tests/fixtures/bnb_llama_gqa"),
        {"--merge-into original", "no full-precision weights", "bitsandbytes 4-bit folder",
         "--merge-into dequantized"},
        out);
    check_refused(run_qlora_train(export_args(config, gqa, "hf-bf16", out) +
                                  " --merge-into original --set quantization.type=int4 "
                                  "--set model.path=tests/fixtures/gguf_llama/llama_gqa-q4_1.gguf"),
                  {"no full-precision weights",
                   "GGUF file whose linear weights are stored as "
                   "Q4_1"},
                  out);
  }
  SECTION("--merge-into original with an L4Q adapter") {
    check_refused(run_qlora_train(export_args(config, write_adapter(tmp, "l4q"), "hf-bf16", out) +
                                  " --merge-into original"),
                  {"is an L4Q adapter", "--merge-into dequantized"}, out);
  }
  SECTION("--merge-into with a format that does not merge") {
    check_refused(
        run_qlora_train(export_args(config, adapter, "peft", out) + " --merge-into original"),
        {"peft writes the adapter without merging it"}, out);
  }
}
