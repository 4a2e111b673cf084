// Bad GGUF models: each mistake is a UserError (exit 2) naming the key or tensor. The files are
// tests/fixtures/gguf_llama/llama_gqa-f32.gguf rewritten with one change (io/gguf_writer.h).
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <limits>
#include <set>

#include "core/errors.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/safetensors_test_util.h"
#include "model/llama.h"
#include "quant/weight_format.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::io::GgufValue;
using qlt::test::kLlamaGqaF32Gguf;

struct GgufModelEdit {
  std::function<bool(const std::string& key, GgufValue& value)> metadata;  // false: drop it
  std::function<bool(qlt::io::GgufTensorInfo& info, std::vector<uint8_t>& bytes)> tensor;
  std::function<void(qlt::io::GgufWriter& w)> extra;
};

// The fixture rewritten with `edit`, as bytes in a file under `dir`.
fs::path rewrite_gguf_model(const fs::path& dir, const GgufModelEdit& edit) {
  const auto in = qlt::io::GgufFile::open(kLlamaGqaF32Gguf);
  qlt::io::GgufWriter w;
  for (auto [key, value] : in.metadata()) {
    if (key == "general.alignment") continue;
    if (edit.metadata && !edit.metadata(key, value)) continue;
    w.add(key, value);
  }
  for (auto info : in.tensors()) {
    const auto span = in.tensor_bytes(info);
    std::vector<uint8_t> bytes(span.begin(), span.end());
    if (edit.tensor && !edit.tensor(info, bytes)) continue;
    w.add_tensor(info.name, info.type, info.dims, std::move(bytes));
  }
  if (edit.extra) edit.extra(w);
  fs::create_directories(dir);
  const fs::path out = dir / "model.gguf";
  w.write(out);
  return out;
}

void require_gguf_load_error(const fs::path& path, const std::vector<std::string>& parts) {
  try {
    qlt::model::load_llama(path, at::kFloat, at::kCPU);
    FAIL("loaded a bad GGUF model");
  } catch (const qlt::UserError& e) {
    for (const auto& part : parts) CHECK_THAT(std::string(e.what()), Contains(part));
  }
}

}  // namespace

TEST_CASE("a GGUF rewritten unchanged loads to the same model", "[gguf_model]") {
  qlt::test::TempDir tmp;
  const auto copy = rewrite_gguf_model(tmp.path, {});
  const auto a = qlt::model::load_llama(kLlamaGqaF32Gguf, at::kFloat, at::kCPU);
  const auto b = qlt::model::load_llama(copy, at::kFloat, at::kCPU);
  CHECK(at::equal(a.weights.layers[0].q_proj.dense(), b.weights.layers[0].q_proj.dense()));
}

TEST_CASE("bad GGUF models are UserErrors naming the key or tensor", "[gguf_model]") {
  struct Case {
    const char* name;
    GgufModelEdit edit;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"another architecture",
       {.metadata =
            [](const std::string& k, GgufValue& v) {
              if (k == "general.architecture") v = GgufValue::str("gemma2");
              return true;
            }},
       {"general.architecture is \"gemma2\"", "LLaMA"}},
      {"no architecture",
       {.metadata = [](const std::string& k, GgufValue&) { return k != "general.architecture"; }},
       {"general.architecture"}},
      {"missing llama.block_count",
       {.metadata = [](const std::string& k, GgufValue&) { return k != "llama.block_count"; }},
       {"llama.block_count"}},
      {"mistyped head count",
       {.metadata =
            [](const std::string& k, GgufValue& v) {
              if (k == "llama.attention.head_count") v = GgufValue::str("four");
              return true;
            }},
       {"llama.attention.head_count"}},
      {"heads not dividing",
       {.metadata =
            [](const std::string& k, GgufValue& v) {
              if (k == "llama.attention.head_count_kv") v = GgufValue::u32(3);
              return true;
            }},
       {"num_key_value_heads", "llama.* metadata"}},
      {"vocabulary disagreeing with the embedding",
       {.metadata =
            [](const std::string& k, GgufValue& v) {
              if (k != "tokenizer.ggml.tokens") return true;
              auto& a = std::get<qlt::io::GgufArray>(v.value);
              a.items.pop_back();
              return true;
            }},
       {"tokenizer.ggml.tokens", "95 tokens", "token_embd.weight has 96 rows"}},
      {"missing tensor",
       {.tensor = [](qlt::io::GgufTensorInfo& i,
                     std::vector<uint8_t>&) { return i.name != "blk.1.ffn_up.weight"; }},
       {"missing tensors", "blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"}},
      {"misshapen tensor",
       {.tensor =
            [](qlt::io::GgufTensorInfo& i, std::vector<uint8_t>& bytes) {
              if (i.name == "blk.0.attn_k.weight") {  // [32, 64] -> [16, 64]
                i.dims = {64, 16};
                bytes.resize(bytes.size() / 2);
              }
              return true;
            }},
       {"blk.0.attn_k.weight", "[16, 64]", "[32, 64]"}},
      {"unexpected tensor",
       {.extra =
            [](qlt::io::GgufWriter& w) {
              w.add_tensor("blk.0.attn_qkv.weight", qlt::io::GgmlType::F32, {8},
                           std::vector<uint8_t>(32));
            }},
       {"unexpected tensors", "blk.0.attn_qkv.weight"}},
      {"unsupported tensor type",
       {.tensor =
            [](qlt::io::GgufTensorInfo& i, std::vector<uint8_t>& bytes) {
              if (i.name == "blk.0.ffn_gate.weight") {  // 64 x 160 F32 -> Q5_0 (22 B / 32)
                i.type = qlt::io::GgmlType::Q5_0;
                bytes.assign(64 / 32 * 160 * 22, 0);
              }
              return true;
            }},
       {"blk.0.ffn_gate.weight", "type Q5_0 cannot be read", "llama-quantize"}},
      {"Llama 3.1 rope factors",
       {.extra =
            [](qlt::io::GgufWriter& w) {
              w.add_tensor("rope_freqs.weight", qlt::io::GgmlType::F32, {8},
                           std::vector<uint8_t>(32));
            }},
       {"rope_freqs.weight"}},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.name) {
      qlt::test::TempDir tmp;
      require_gguf_load_error(rewrite_gguf_model(tmp.path, c.edit), c.parts);
    }
  }
}

TEST_CASE("NaN in a GGUF weight is refused unless allowed", "[gguf_model]") {
  qlt::test::TempDir tmp;
  const auto path = rewrite_gguf_model(
      tmp.path, {.tensor = [](qlt::io::GgufTensorInfo& i, std::vector<uint8_t>& bytes) {
        if (i.name == "blk.1.attn_v.weight") {
          const float nan = std::numeric_limits<float>::quiet_NaN();
          std::memcpy(bytes.data() + 4 * 7, &nan, 4);
        }
        return true;
      }});
  require_gguf_load_error(path, {"blk.1.attn_v.weight", "1 NaN/Inf value", "flat index 7"});
  CHECK_NOTHROW(
      qlt::model::load_llama(path, at::kFloat, at::kCPU, qlt::quant::DenseFormat{}, true));
}
