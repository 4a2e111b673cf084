// A Hugging Face directory with a byte-level BPE tokenizer.json and no tokenizer.model (as
// Llama 3, SmolLM2 and Mistral-Nemo ship) loads, tokenizes as transformers does, and trains
// (tests/fixtures/llama_bpe, scripts/fixtures/make_llama_bpe_fixture.py).
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "integration/train_cli_util.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "test_common.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
const fs::path kLlamaBpeDir = qlt::test::kFixtures / "llama_bpe";
const std::string kLlamaBpeText =
    "<|start_header_id|>user<|end_header_id|>\n\nWhat does \"famine\" mean?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nA great shortage of food, 1769.<|eot_id|>";

}  // namespace

TEST_CASE("tokenizer.json directory: ids and logits equal transformers'", "[bpe_model]") {
  const auto batch = qlt::io::SafetensorsFile::open(kLlamaBpeDir / "batch.safetensors");
  const auto tokenizer = qlt::tokenizer::Tokenizer::load(kLlamaBpeDir);
  CHECK(tokenizer.add_bos_by_default());  // tokenizer.json's post-processor adds BOS
  const auto ids = tokenizer.encode(kLlamaBpeText, tokenizer.add_bos_by_default());
  const auto expected = batch.tensor("input_ids").flatten();
  REQUIRE(static_cast<int64_t>(ids.size()) == expected.numel());
  CHECK(at::equal(at::tensor(ids, at::kLong), expected));
  CHECK(tokenizer.decode(ids).find("great shortage of food, 1769.") != std::string::npos);

  const auto model = qlt::model::load_llama(kLlamaBpeDir, at::kFloat, at::kCPU);
  at::NoGradGuard no_grad;
  const auto logits = model.logits(expected.unsqueeze(0));
  const double diff = (logits - batch.tensor("logits")).abs().max().item<double>();
  INFO("max |logits - transformers| = " << diff);
  CHECK(diff < 1e-4);
}

TEST_CASE("tokenizer.json directory: trains with its own chat template (auto = llama3)",
          "[bpe_model][integration]") {
  using qlt::test::TrainScratch;
  nlohmann::json cfg = qlt::test::tiny_train_config(/*with_eval=*/true);
  qlt::test::TempDir data;
  {
    std::ofstream train(data / "train.jsonl");
    for (int i = 0; i < 24; ++i)
      train << nlohmann::json{{"messages",
                               {{{"role", "user"}, {"content", fmt::format("Count to {}.", i)}},
                                {{"role", "assistant"},
                                 {"content", fmt::format("1 ... {} — done.", i)}}}}}
                   .dump()
            << "\n";
    std::ofstream(data / "eval.jsonl")
        << nlohmann::json{{"messages",
                           {{{"role", "user"}, {"content", "Count to 3."}},
                            {{"role", "assistant"}, {"content", "1 ... 3 — done."}}}}}
               .dump()
        << "\n";
  }
  cfg["model"]["path"] = kLlamaBpeDir.string();
  cfg["quantization"] = {{"type", "int4"}, {"group_size", 32}};
  cfg["data"] = {{"train", (data / "train.jsonl").string()},
                 {"eval", (data / "eval.jsonl").string()},
                 {"format", "chat"},
                 {"chat_template", "auto"},
                 {"max_seq_len", 64},
                 {"packing", true}};
  cfg["training"]["max_steps"] = 3;
  cfg["checkpoint"]["every_steps"] = 3;
  TrainScratch scratch(cfg);
  const auto r = scratch.train(scratch.run("bpe"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(fs::exists(scratch.run("bpe") / "final" / "adapter_model.safetensors"));
  CHECK_THAT(r.err, Catch::Matchers::Contains("llama3"));
}
