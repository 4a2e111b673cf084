// The export table (export/export_format.h) and the hf-bf16 writer (export/hf_export.h): the
// written folder loads back through our own loader with the merged model's logits in bf16 bit
// for bit (one file and sharded, tied embeddings, a GGUF source), the peft row writes the
// adapter as trained, sizes and shard plans as transformers / huggingface_hub make them, and
// atomic output for folder and file rows.
#include <ATen/CPUGeneratorImpl.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/errors.h"
#include "export/export_format.h"
#include "export/hf_export.h"
#include "export/peft_adapter.h"
#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "model/adapter_test_util.h"
#include "model/llama.h"
#include "test_common.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::exporter::ExportFormat;
using qlt::exporter::ExportInput;
using qlt::exporter::ExportOutput;
using qlt::exporter::ExportSummary;
using qlt::test::kRoot;
using qlt::test::kTinyLlama;
using qlt::test::read_json;
using qlt::test::require_user_error;
using qlt::test::TempDir;
using qlt::test::tiny_tokenizer;
namespace model = qlt::model;

// tiny-llama on an NF4 base with trained-looking LoRA adapters (random, non-zero B).
model::LlamaModel tiny_with_adapters(const qlt::quant::WeightFormat& format) {
  auto m = model::load_llama(kTinyLlama, at::kFloat, at::kCPU, format);
  qlt::AdapterConfig c;
  c.rank = 4;
  c.alpha = 8;
  c.dropout = 0;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  model::attach_adapters(m, qlt::test::adapter_opts(c, format), gen);
  at::NoGradGuard no_grad;
  for (auto& [name, t] : qlt::test::lora_params(m))
    if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.05, gen);
  return m;
}

// The model with every tensor rounded to bf16 (and kept in fp32): what a bf16 folder holds.
model::LlamaModel bf16_rounded(const model::LlamaModel& m) {
  const auto round = [](const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kFloat); };
  model::LlamaModel r = m;
  r.weights.embed_tokens = round(m.weights.embed_tokens);
  r.weights.norm = round(m.weights.norm);
  r.weights.lm_head =
      m.config.tie_word_embeddings ? r.weights.embed_tokens : round(m.weights.lm_head);
  for (size_t i = 0; i < m.weights.layers.size(); ++i) {
    auto& layer = r.weights.layers[i];
    layer.input_layernorm = round(layer.input_layernorm);
    layer.post_attention_layernorm = round(layer.post_attention_layernorm);
    for (int j = 0; j < model::kNumLlamaLinears; ++j)
      model::linear_weight(layer, j) = qlt::adapters::FrozenWeight(
          round(model::linear_weight(layer, j).materialize(at::kFloat)));
  }
  return r;
}

at::Tensor some_ids(int64_t vocab) {
  return at::arange(0, 24, at::kLong).mul_(37).remainder_(vocab).add_(1).view({2, 12});
}

ExportSummary export_to(const std::string& format, const model::LlamaModel& m,
                        const fs::path& source, const fs::path& out,
                        int64_t shard_bytes = 5'000'000'000, bool overwrite = false,
                        const qlt::tokenizer::Tokenizer& tokenizer = tiny_tokenizer()) {
  const ExportInput input{m, tokenizer, source, {shard_bytes}};
  return qlt::exporter::write_export(qlt::exporter::export_format(format), input, out, overwrite);
}

// No "<name>.tmp-*" / "<name>.old-*" sibling is left in `dir`.
void check_no_leftovers(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    INFO(name);
    CHECK(name.find(".tmp-") == std::string::npos);
    CHECK(name.find(".old-") == std::string::npos);
  }
}

}  // namespace

TEST_CASE("hf-bf16 of a merged NF4 + LoRA model loads back with the merged logits in bf16",
          "[hf_export]") {
  TempDir tmp;
  auto m = tiny_with_adapters(qlt::quant::Nf4Options{});
  const auto report = model::merge_adapters(m, qlt::quant::DenseFormat{});
  CHECK(report.merged == 28);
  const fs::path out = tmp / "hf";
  const ExportSummary summary = export_to("hf-bf16", m, kTinyLlama, out);

  std::vector<std::string> names;
  for (const auto& [file, bytes] : summary.files) names.push_back(file);
  CHECK(names == std::vector<std::string>{"config.json", "generation_config.json",
                                          "model.safetensors", "special_tokens_map.json",
                                          "tokenizer.model", "tokenizer_config.json"});
  CHECK(summary.total_bytes() > 2'600'000);
  for (const char* file : {"tokenizer.model", "tokenizer_config.json", "generation_config.json"})
    CHECK(qlt::test::read_bytes(out / file) == qlt::test::read_bytes(kTinyLlama / file));

  // Hugging Face's names, in its order, every tensor bf16; config.json the source's, in bf16.
  const auto file = qlt::io::SafetensorsFile::open(out / "model.safetensors");
  CHECK(file.metadata().at("format") == "pt");
  const auto expected = model::expected_llama_tensors(m.config);
  REQUIRE(file.tensors().size() == expected.size());
  for (const auto& e : expected) {
    INFO(e.name);
    CHECK(file.info(e.name).dtype == "BF16");
    CHECK(file.info(e.name).shape == e.shape);
  }
  json config = read_json(out / "config.json");
  CHECK(config["torch_dtype"] == "bfloat16");
  CHECK(config["dtype"] == "bfloat16");
  json source_config = read_json(kTinyLlama / "config.json");
  config.erase("torch_dtype");
  config.erase("dtype");
  source_config.erase("torch_dtype");
  source_config.erase("dtype");
  CHECK(config == source_config);

  // Our loader reads it back: logits equal the merged model's with its tensors in bf16.
  const auto reloaded = model::load_llama(out, at::kFloat, at::kCPU);
  const at::Tensor ids = some_ids(m.config.vocab_size);
  at::NoGradGuard no_grad;
  CHECK(at::equal(reloaded.logits(ids), bf16_rounded(m).logits(ids)));
  // (and the merge did something: the unmerged base is another model)
  const auto base = model::load_llama(kTinyLlama, at::kFloat, at::kCPU, qlt::quant::Nf4Options{});
  CHECK_FALSE(at::allclose(reloaded.logits(ids), base.logits(ids), 1e-3, 1e-3));
}

TEST_CASE("hf-bf16 shards like save_pretrained and the shards load back", "[hf_export]") {
  TempDir tmp;
  auto m = model::load_llama(kTinyLlama, at::kFloat, at::kCPU);
  export_to("hf-bf16", m, kTinyLlama, tmp / "one");
  // 600 kB shards: the 524 kB embedding fits one, the decoder layers fill the others.
  const int64_t limit = 600'000;
  export_to("hf-bf16", m, kTinyLlama, tmp / "sharded", limit);

  const json index = read_json(tmp / "sharded/model.safetensors.index.json");
  const auto& weight_map = index["weight_map"];
  std::set<std::string> shards;
  for (const auto& [name, shard] : weight_map.items()) shards.insert(shard.get<std::string>());
  CHECK(shards.size() == 5);
  CHECK(shards.count("model-00001-of-00005.safetensors") == 1);
  CHECK(shards.count("model-00005-of-00005.safetensors") == 1);
  CHECK_FALSE(fs::exists(tmp / "sharded/model.safetensors"));
  int64_t total = 0;
  for (const auto& shard : shards) {
    INFO(shard);
    const auto f = qlt::io::SafetensorsFile::open(tmp / "sharded" / shard);
    int64_t bytes = 0;
    for (const auto& info : f.tensors()) {
      bytes += static_cast<int64_t>(info.end - info.begin);
      CHECK(weight_map[info.name] == shard);
    }
    CHECK(bytes <= limit);
    total += bytes;
  }
  CHECK(index["metadata"]["total_size"] == total);

  // Same tensors as the single file, read through the index by our loader's reader.
  const auto one = qlt::io::SafetensorsFile::open(tmp / "one/model.safetensors");
  const auto sharded = qlt::io::SafetensorsCheckpoint::open(tmp / "sharded");
  REQUIRE(sharded.names().size() == one.tensors().size());
  for (const auto& info : one.tensors())
    CHECK(qlt::test::same_tensor(sharded.tensor(info.name), one.tensor(info.name)));
  const auto reloaded = model::load_llama(tmp / "sharded", at::kFloat, at::kCPU);
  at::NoGradGuard no_grad;
  CHECK(at::equal(reloaded.logits(some_ids(2048)), bf16_rounded(m).logits(some_ids(2048))));
}

TEST_CASE("hf-bf16 of a tied, sharded source omits lm_head as save_pretrained does",
          "[hf_export]") {
  TempDir tmp;
  const fs::path source = kRoot / "tests/fixtures/llama3_tied";
  auto m = model::load_llama(source, at::kFloat, at::kCPU);
  REQUIRE(m.config.tie_word_embeddings);
  const auto summary = export_to("hf-bf16", m, source, tmp / "out");
  const auto file = qlt::io::SafetensorsFile::open(tmp / "out/model.safetensors");
  CHECK_FALSE(file.contains("lm_head.weight"));
  CHECK(read_json(tmp / "out/config.json")["rope_scaling"] ==
        read_json(source / "config.json")["rope_scaling"]);
  bool says_no_tokenizer = false;
  for (const auto& note : summary.notes)
    says_no_tokenizer |= note.find("no tokenizer") != std::string::npos;
  CHECK(says_no_tokenizer);
  const auto reloaded = model::load_llama(tmp / "out", at::kFloat, at::kCPU);
  at::NoGradGuard no_grad;
  const at::Tensor ids = some_ids(m.config.vocab_size);
  CHECK(at::equal(reloaded.logits(ids), bf16_rounded(m).logits(ids)));
}

TEST_CASE("hf-bf16 of a GGUF source synthesizes config.json and tokenizer files",
          "[hf_export][gguf_model]") {
  TempDir tmp;
  const fs::path gguf = kRoot / "tests/fixtures/gguf_llama/llama_gqa-f32.gguf";
  const auto tokenizer = qlt::tokenizer::Tokenizer::load(gguf);
  auto m = model::load_llama(gguf, at::kFloat, at::kCPU);
  const auto summary = export_to("hf-bf16", m, gguf, tmp / "out", 5'000'000'000, false, tokenizer);
  // The GGUF's vocabulary as tokenizer files (export/hf_tokenizer_files.h), which load back
  // into the same tokenizer.
  for (const char* file : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"})
    CHECK(fs::exists(tmp / "out" / file));
  const auto folder_tokenizer = qlt::tokenizer::Tokenizer::load(tmp / "out");
  CHECK(folder_tokenizer.encode("hello world, hello", true) ==
        tokenizer.encode("hello world, hello", true));
  const json config = read_json(tmp / "out/config.json");
  CHECK(config["architectures"] == json::array({"LlamaForCausalLM"}));
  CHECK(config["torch_dtype"] == "bfloat16");
  const auto back = model::llama_config_from_json(config, "config.json");
  const auto& c = m.config;
  CHECK(back.vocab_size == c.vocab_size);
  CHECK(back.hidden_size == c.hidden_size);
  CHECK(back.intermediate_size == c.intermediate_size);
  CHECK(back.num_hidden_layers == c.num_hidden_layers);
  CHECK(back.num_attention_heads == c.num_attention_heads);
  CHECK(back.num_key_value_heads == c.num_key_value_heads);
  CHECK(back.head_dim == c.head_dim);
  CHECK(back.max_position_embeddings == c.max_position_embeddings);
  CHECK(back.rms_norm_eps == c.rms_norm_eps);
  CHECK(back.rope_theta == c.rope_theta);
  CHECK(back.tie_word_embeddings == c.tie_word_embeddings);
  CHECK(back.bos_token_id == tokenizer.bos_id());
  CHECK(back.eos_token_id == tokenizer.eos_id());
  // GGUF's q/k row order is undone: the folder is the Hugging Face model (the f32 GGUF equals
  // the llama_gqa safetensors fixture bit for bit).
  const auto reloaded = model::load_llama(tmp / "out", at::kFloat, at::kCPU);
  const auto hf = model::load_llama(kRoot / "tests/fixtures/llama_gqa", at::kFloat, at::kCPU);
  at::NoGradGuard no_grad;
  const at::Tensor ids = some_ids(c.vocab_size);
  CHECK(at::equal(reloaded.logits(ids), bf16_rounded(hf).logits(ids)));
}

TEST_CASE("export peft writes the adapter as trained", "[hf_export][peft]") {
  TempDir tmp;
  const auto m = tiny_with_adapters(qlt::quant::Nf4Options{});
  export_to("peft", m, kTinyLlama, tmp / "peft");
  const auto adapter = qlt::exporter::read_peft_adapter(tmp / "peft");
  CHECK(adapter.base_model_name_or_path == kTinyLlama.string());
  const auto expected = model::peft_lora_tensors(m);
  REQUIRE(adapter.tensors.size() == expected.size());
  for (const auto& [name, t] : expected) {
    INFO(name);
    CHECK(at::equal(adapter.tensors.at(name), t.to(at::kFloat)));
  }
}

TEST_CASE("the export table: names, merges, unknown formats", "[hf_export]") {
  const auto names = qlt::exporter::export_format_names();
  REQUIRE(names.size() >= 2);
  CHECK(names[0] == "peft");
  CHECK(names[1] == "hf-bf16");
  CHECK_FALSE(qlt::exporter::export_format("peft").merges());
  CHECK(qlt::exporter::export_format("hf-bf16").merges());
  const auto lora = qlt::adapters::adapter_options({}, qlt::quant::DenseFormat{});
  CHECK(std::holds_alternative<qlt::quant::DenseFormat>(
      qlt::exporter::export_format("hf-bf16").merge_into(qlt::QuantizationConfig{}, lora)));
  CHECK(std::holds_alternative<qlt::quant::Nf4Options>(
      qlt::exporter::export_format("hf-nf4").merge_into(qlt::QuantizationConfig{}, lora)));
  // gguf-q4_1 merges into INT4 g32 where the training lives there (L4Q g32, an INT4 g32 base),
  // so those models are written as stored; other bases are quantized by the GGUF writer.
  const auto& q4_1 = qlt::exporter::export_format("gguf-q4_1");
  qlt::QuantizationConfig int4;
  int4.type = "int4";
  qlt::AdapterConfig l4q_config;
  l4q_config.type = "l4q";
  const auto l4q = qlt::adapters::adapter_options(l4q_config, qlt::quant::DenseFormat{});
  CHECK(std::holds_alternative<qlt::quant::DenseFormat>(
      q4_1.merge_into(qlt::QuantizationConfig{}, lora)));
  CHECK(std::holds_alternative<qlt::quant::Int4Options>(q4_1.merge_into(int4, lora)));
  CHECK(std::holds_alternative<qlt::quant::Int4Options>(
      q4_1.merge_into(qlt::QuantizationConfig{}, l4q)));
  for (const auto& f : qlt::exporter::export_formats()) {
    INFO(f.name);
    CHECK_FALSE(f.writes.empty());
    CHECK(f.write != nullptr);
  }
  require_user_error(
      [] { qlt::exporter::export_format("hf-bf17"); },
      {"--format hf-bf17", "unknown export format", "did you mean 'hf-bf16'",
       "peft, hf-bf16, hf-nf4, gguf-f16, gguf-bf16, gguf-q8_0, gguf-q4_0, gguf-q4_1"});
}

TEST_CASE("byte sizes and shard plans follow transformers and huggingface_hub", "[hf_export]") {
  using qlt::exporter::parse_byte_size;
  CHECK(parse_byte_size("5GB", "--shard-size") == 5'000'000'000);
  CHECK(parse_byte_size("500mb", "--shard-size") == 500'000'000);
  CHECK(parse_byte_size("2GiB", "--shard-size") == int64_t{2} << 30);
  CHECK(parse_byte_size("100KB", "--shard-size") == 100'000);
  CHECK(parse_byte_size("123", "--shard-size") == 123);
  for (const char* bad : {"", "GB", "5 GB", "1.5GB", "5XB", "-1", "0", "99999999999999999TB"})
    require_user_error([&] { parse_byte_size(bad, "--shard-size"); }, {"--shard-size"});

  using qlt::exporter::plan_shards;
  using Plan = std::vector<std::vector<size_t>>;
  CHECK(plan_shards({5, 5, 3}, 10) == Plan{{0, 1}, {2}});
  // A tensor larger than a shard gets its own, placed before the shard being filled.
  CHECK(plan_shards({5, 5, 20, 3}, 10) == Plan{{2}, {0, 1}, {3}});
  CHECK(plan_shards({4, 4}, 100) == Plan{{0, 1}});
}

TEST_CASE("export output is atomic: no --out on failure, --overwrite swaps", "[hf_export]") {
  TempDir tmp;
  const auto& hf = qlt::exporter::export_format("hf-bf16");
  const fs::path out = tmp / "out";

  SECTION("check_export_target refuses what cannot be written") {
    fs::create_directories(out);
    require_user_error([&] { qlt::exporter::check_export_target(hf, out, false, {}); },
                       {"already exists", "--overwrite"});
    qlt::exporter::check_export_target(hf, out, true, {});  // a folder may replace a folder
    qlt::test::write_bytes(tmp / "file", "x");
    require_user_error([&] { qlt::exporter::check_export_target(hf, tmp / "file", true, {}); },
                       {"not a folder"});
    require_user_error(
        [&] { qlt::exporter::check_export_target(hf, tmp / "no/such/out", false, {}); },
        {"does not exist"});
    require_user_error([&] { qlt::exporter::check_export_target(hf, tmp / "file/out", false, {}); },
                       {"is a file, not a folder"});
    require_user_error(
        [&] {
          qlt::exporter::check_export_target(hf, out, true, {out / "final", kTinyLlama});
        },
        {"an input of this export"});
  }

  // A writer that writes something, then fails.
  static auto failing = [](const ExportInput&, const fs::path& target) -> ExportSummary {
    if (fs::is_directory(target))
      qlt::test::write_bytes(target / "half.bin", "half");
    else
      qlt::test::write_bytes(target, "half");
    qlt::user_error("the writer failed");
  };
  static auto writes_file = [](const ExportInput&, const fs::path& target) -> ExportSummary {
    qlt::test::write_bytes(target, "new contents");
    return {};
  };
  const auto m = model::load_llama(kRoot / "tests/fixtures/llama_gqa", at::kFloat, at::kCPU);
  const ExportInput input{m, tiny_tokenizer(), kRoot / "tests/fixtures/llama_gqa", {}};

  SECTION("folder rows") {
    const ExportFormat broken{"broken", "test", nullptr, ExportOutput::kFolder, failing};
    require_user_error([&] { qlt::exporter::write_export(broken, input, out, false); },
                       {"the writer failed"});
    CHECK_FALSE(fs::exists(out));
    // An existing folder is kept when the export fails, replaced when it completes.
    fs::create_directories(out);
    qlt::test::write_bytes(out / "keep.txt", "precious");
    require_user_error([&] { qlt::exporter::write_export(broken, input, out, true); },
                       {"the writer failed"});
    CHECK(qlt::test::read_bytes(out / "keep.txt") == "precious");
    require_user_error([&] { qlt::exporter::write_export(hf, input, out, false); },
                       {"already exists"});
    CHECK(qlt::test::read_bytes(out / "keep.txt") == "precious");
    const auto summary = qlt::exporter::write_export(hf, input, out, true);
    CHECK_FALSE(fs::exists(out / "keep.txt"));
    CHECK(fs::exists(out / "model.safetensors"));
    CHECK(summary.files.size() == 2);  // model.safetensors, config.json (no tokenizer files)
  }

  SECTION("file rows (GGUF)") {
    const ExportFormat broken{"broken", "test", nullptr, ExportOutput::kFile, failing};
    const ExportFormat file_row{"file", "test", nullptr, ExportOutput::kFile, writes_file};
    const fs::path gguf = tmp / "model.gguf";
    require_user_error([&] { qlt::exporter::write_export(broken, input, gguf, false); },
                       {"the writer failed"});
    CHECK_FALSE(fs::exists(gguf));
    const auto summary = qlt::exporter::write_export(file_row, input, gguf, false);
    CHECK(qlt::test::read_bytes(gguf) == "new contents");
    REQUIRE(summary.files.size() == 1);
    CHECK(summary.files[0] == std::pair<std::string, int64_t>{"model.gguf", 12});
    qlt::test::write_bytes(gguf, "old");
    require_user_error([&] { qlt::exporter::write_export(file_row, input, gguf, false); },
                       {"already exists"});
    CHECK(qlt::test::read_bytes(gguf) == "old");
    require_user_error([&] { qlt::exporter::write_export(broken, input, gguf, true); },
                       {"the writer failed"});
    CHECK(qlt::test::read_bytes(gguf) == "old");
    qlt::exporter::write_export(file_row, input, gguf, true);
    CHECK(qlt::test::read_bytes(gguf) == "new contents");
    fs::create_directories(out);
    require_user_error([&] { qlt::exporter::check_export_target(file_row, out, true, {}); },
                       {"not a file"});
  }
  check_no_leftovers(tmp.path);
}
