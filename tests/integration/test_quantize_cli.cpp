// End to end: `qlora-train quantize` writes what transformers + bitsandbytes write (byte for
// byte on the llama_gqa fixture), the result loads without re-quantizing, and bad input
// leaves nothing behind.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "integration/run_binary.h"
#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "test_common.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::test::check_bad_input;
using qlt::test::kRoot;
using qlt::test::read_text;
using qlt::test::run_qlora_train;
using qlt::test::TempDir;

}  // namespace

TEST_CASE("quantize writes exactly what transformers + bitsandbytes save", "[integration][bnb]") {
  TempDir tmp;
  const fs::path out = tmp / "bnb";
  auto r = run_qlora_train(
      "quantize --config configs/tiny/eval-nf4.json --set model.path=tests/fixtures/llama_gqa "
      "--out " +
      out.string() + " --log-level warn");
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("14 linear weights in NF4"));

  // Every tensor, quant-state JSON included, is byte-identical to the fixture that
  // transformers 4.57.6 + bitsandbytes 0.50.2 saved from the same fp32 model.
  const auto ours = qlt::io::SafetensorsFile::open(out / "model.safetensors");
  const auto theirs =
      qlt::io::SafetensorsFile::open(kRoot / "tests/fixtures/bnb_llama_gqa/model.safetensors");
  REQUIRE(ours.tensors().size() == theirs.tensors().size());
  for (const auto& info : theirs.tensors()) {
    INFO(info.name);
    CHECK(qlt::test::same_tensor(ours.tensor(info.name), theirs.tensor(info.name)));
  }
  const json config = json::parse(read_text(out / "config.json"));
  const json expected = json::parse(read_text(kRoot / "tests/fixtures/bnb_llama_gqa/config.json"));
  CHECK(config["quantization_config"] == expected["quantization_config"]);
}

TEST_CASE("a quantized tiny model evaluates exactly like quantize-on-load", "[integration][bnb]") {
  TempDir tmp;
  const fs::path out = tmp / "tiny-nf4";
  auto q = run_qlora_train("quantize --config configs/tiny/eval-nf4.json --out " + out.string() +
                           " --log-level warn");
  INFO("stderr: " << q.err);
  REQUIRE(q.exit_code == 0);
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.model",
                           "generation_config.json", "tokenizer_config.json"})
    CHECK(fs::exists(out / file));
  CHECK(fs::file_size(out / "model.safetensors") < 1600000);  // 2.6 MB of bf16 -> ~1.5 MB

  const std::string eval =
      "eval --config configs/tiny/eval-nf4.json --json --set eval.max_batches=3";
  auto on_load = run_qlora_train(eval + " --log-level warn");
  auto stored = run_qlora_train(eval + " --set model.path=" + out.string() + " --log-level info");
  REQUIRE(on_load.exit_code == 0);
  REQUIRE(stored.exit_code == 0);
  CHECK_THAT(stored.err, Contains("used as stored, without re-quantizing"));
  CHECK(json::parse(stored.out)["loss"] == json::parse(on_load.out)["loss"]);

  // inspect counts logical parameters, not packed bytes, and reports the stored format.
  auto inspect =
      run_qlora_train("inspect --config configs/tiny/eval.json --set model.path=" + out.string());
  INFO("inspect stderr: " << inspect.err);
  REQUIRE(inspect.exit_code == 0);
  CHECK_THAT(inspect.out, Contains("1311872"));
  CHECK_THAT(inspect.out, Contains("28 decoder linear weights stored in bitsandbytes' NF4 layout"));
  CHECK_THAT(inspect.out, Contains("4.128 bits/parameter"));
}

TEST_CASE("quantize refuses bad input and leaves no folder behind", "[integration][bnb]") {
  TempDir tmp;
  const std::string out = (tmp / "out").string();
  SECTION("quantization.type none") {
    check_bad_input(run_qlora_train("quantize --config configs/tiny/eval.json --out " + out),
                    {"quantization.type"});
    CHECK_FALSE(fs::exists(out));
  }
  SECTION("an already quantized model") {
    check_bad_input(run_qlora_train("quantize --config configs/tiny/eval-nf4.json "
                                    "--set model.path=tests/fixtures/bnb_llama_gqa --out " +
                                    out),
                    {"already in bitsandbytes' 4-bit layout"});
    CHECK_FALSE(fs::exists(out));
  }
  SECTION("an existing output folder is kept") {
    fs::create_directories(out);
    qlt::test::write_bytes(fs::path(out) / "keep.txt", "precious");
    check_bad_input(run_qlora_train("quantize --config configs/tiny/eval-nf4.json --out " + out),
                    {out});
    CHECK(read_text(fs::path(out) / "keep.txt") == "precious");
  }
  SECTION("a GGUF model") {
    check_bad_input(run_qlora_train("quantize --config configs/tiny/eval-nf4.json "
                                    "--set model.path=tests/fixtures/gguf_llama/llama_gqa-f32.gguf "
                                    "--out " +
                                    out),
                    {"is a GGUF file"});
    CHECK_FALSE(fs::exists(out));
  }
  SECTION("a bad block size") {
    check_bad_input(run_qlora_train("quantize --config configs/tiny/eval-nf4.json "
                                    "--set quantization.block_size=48 --out " +
                                    out),
                    {"block"});
    CHECK_FALSE(fs::exists(out));
  }
  // Nothing half-written next to the target either (AtomicDir's "<out>.tmp-<pid>").
  for (const auto& entry : fs::directory_iterator(tmp.path)) {
    const std::string name = entry.path().filename().string();
    CHECK((name == "out" || name.rfind("out", 0) != 0));
  }
}

TEST_CASE("a bnb checkpoint with a broken quant state fails eval with exit code 2",
          "[integration][bnb]") {
  TempDir tmp;
  fs::copy(kRoot / "tests/fixtures/bnb_llama_gqa", tmp.path, fs::copy_options::recursive);
  auto file = qlt::io::SafetensorsFile::open(tmp / "model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const std::string state = "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4";
  for (const auto& info : file.tensors())
    if (info.name != state) tensors.emplace_back(info.name, file.tensor(info.name).clone());
  qlt::io::save_safetensors(tmp / "model.safetensors", tensors);
  fs::copy_file(kRoot / "data/tiny-llama/tokenizer.model", tmp / "tokenizer.model");
  check_bad_input(
      run_qlora_train("eval --config configs/tiny/eval.json --set model.path=" + tmp.path.string()),
      {"model.layers.0.mlp.up_proj.weight"});
}
