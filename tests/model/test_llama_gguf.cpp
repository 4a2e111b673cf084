// LLaMA models from GGUF files written by llama.cpp's own converter (convert_hf_to_gguf.py) and
// the gguf package, against transformers loading the same files
// (scripts/fixtures/make_gguf_model_fixtures.py -> tests/fixtures/gguf_llama/).
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <variant>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/llama_gguf.h"
#include "quant/int4.h"
#include "quant/weight_format.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using qlt::quant::WeightFormat;

const fs::path kGgufLlamaDir = qlt::test::kFixtures / "gguf_llama";

at::Tensor gguf_llama_expected(const std::string& name) {
  return qlt::io::SafetensorsFile::open(kGgufLlamaDir / "expected.safetensors")
      .tensor(name)
      .clone();
}

double max_logit_diff(const qlt::model::LlamaModel& model, const std::string& kind) {
  at::NoGradGuard no_grad;
  const auto logits = model.logits(gguf_llama_expected("input_ids"));
  const auto ref = gguf_llama_expected("logits_" + kind);
  REQUIRE(logits.sizes() == ref.sizes());
  return (logits - ref).abs().max().item<double>();
}

}  // namespace

TEST_CASE("GGUF tensor names map to Hugging Face names and back", "[gguf_model]") {
  using qlt::model::gguf_name_of_hf_tensor;
  using qlt::model::hf_name_of_gguf_tensor;
  const std::pair<const char*, const char*> pairs[] = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output.weight", "lm_head.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"},
      {"blk.12.attn_q.weight", "model.layers.12.self_attn.q_proj.weight"},
      {"blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight"},
      {"blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"},
      {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
      {"blk.29.ffn_norm.weight", "model.layers.29.post_attention_layernorm.weight"},
      {"blk.1.ffn_gate.weight", "model.layers.1.mlp.gate_proj.weight"},
      {"blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"},
      {"blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"},
  };
  for (const auto& [g, h] : pairs) {
    CHECK(hf_name_of_gguf_tensor(g) == h);
    CHECK(gguf_name_of_hf_tensor(h) == g);
  }
  for (const char* bad : {"blk.x.attn_q.weight", "blk.01.attn_q.weight", "blk..attn_q.weight",
                          "blk.1.attn_qkv.weight", "rope_freqs.weight", "blk.-1.attn_q.weight"})
    CHECK(hf_name_of_gguf_tensor(bad).empty());
}

TEST_CASE("gguf_unpermute_rows undoes convert_hf_to_gguf's q/k permutation", "[gguf_model]") {
  // permute(w, n_head) = w.reshape(n_head, 2, d/2, in).swapaxes(1, 2).reshape(w.shape)
  const int64_t heads = 3, d = 8, in = 5;
  const auto hf = at::arange(heads * d * in, at::kFloat).view({heads * d, in});
  const auto gguf = hf.view({heads, 2, d / 2, in}).transpose(1, 2).reshape({heads * d, in});
  const auto rows = qlt::model::gguf_unpermute_rows(heads, d);
  CHECK(at::equal(gguf.index_select(0, rows), hf));
}

TEST_CASE("GGUF from llama.cpp's converter: same logits as transformers on the same file",
          "[gguf_model]") {
  const auto original =
      qlt::model::load_llama(QLT_SOURCE_DIR "/tests/fixtures/llama_gqa", at::kFloat, at::kCPU);
  for (const std::string kind : {"f32", "q8_0", "q4_1"}) {
    DYNAMIC_SECTION(kind) {
      const auto path = kGgufLlamaDir / fmt::format("llama_gqa-{}.gguf", kind);
      const auto model = qlt::model::load_llama(path, at::kFloat, at::kCPU);
      CHECK(model.config.num_key_value_heads == 2);
      CHECK(model.config.head_dim == 16);
      CHECK_FALSE(model.config.tie_word_embeddings);
      const double diff = max_logit_diff(model, kind);
      INFO(fmt::format("{}: max |logits - transformers| = {:.3e}", kind, diff));
      CHECK(diff < 1e-4);  // fp32, the same dequantized weights: summation order only
      if (kind == "f32") {
        // The f32 file holds the original's values: the un-permuted q/k equal it exactly.
        CHECK(at::equal(model.weights.layers[1].q_proj.dense(),
                        original.weights.layers[1].q_proj.dense()));
        CHECK(at::equal(model.weights.layers[1].k_proj.dense(),
                        original.weights.layers[1].k_proj.dense()));
        CHECK(at::equal(model.weights.embed_tokens, original.weights.embed_tokens));
      }
    }
  }
}

TEST_CASE("Q4_1 linears under int4 group 32 are used as stored, byte for byte", "[gguf_model]") {
  const auto path = kGgufLlamaDir / "llama_gqa-q4_1.gguf";
  const auto dense = qlt::model::load_llama(path, at::kFloat, at::kCPU);
  const auto int4 =
      qlt::model::load_llama(path, at::kFloat, at::kCPU, WeightFormat{qlt::quant::Int4Options{32}});
  const auto file = qlt::io::GgufFile::open(path);
  const auto& l = int4.weights.layers[0];
  for (const auto* w :
       {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj})
    REQUIRE(std::holds_alternative<qlt::quant::Int4Tensor>(w->stored));
  // v_proj is not permuted: its blocks are the file's bytes.
  const auto& v = std::get<qlt::quant::Int4Tensor>(l.v_proj.stored);
  const auto bytes = file.tensor_bytes(file.tensor("blk.0.attn_v.weight"));
  REQUIRE(v.storage_bytes() == static_cast<int64_t>(bytes.size()));
  CHECK(std::equal(bytes.begin(), bytes.end(), v.blocks.data_ptr<uint8_t>()));
  // Same weights as dequantizing on load: same logits (within summation order).
  CHECK(max_logit_diff(int4, "q4_1") < 1e-4);
  for (int64_t i = 0; i < 2; ++i)
    CHECK(at::equal(int4.weights.layers[i].q_proj.materialize(at::kFloat),
                    dense.weights.layers[i].q_proj.dense()));
}

TEST_CASE("a GGUF model loads under every format of the table (NF4: rows un-permuted first)",
          "[gguf_model]") {
  // The f32 file holds the safetensors fixture's weights exactly (q/k rows permuted by the
  // converter): stored in any format, they must equal the Hugging Face folder stored the same
  // way, bit for bit. NF4 blocks run across rows, so the rows are put back before quantizing.
  const auto gguf_path = kGgufLlamaDir / "llama_gqa-f32.gguf";
  const auto hf_path = std::filesystem::path(QLT_SOURCE_DIR "/tests/fixtures/llama_gqa");
  for (const WeightFormat format :
       {WeightFormat{qlt::quant::DenseFormat{}}, WeightFormat{qlt::quant::Nf4Options{}},
        WeightFormat{qlt::quant::Int4Options{32}}}) {
    INFO(qlt::quant::describe(format));
    const auto gguf = qlt::model::load_llama(gguf_path, at::kFloat, at::kCPU, format);
    const auto hf = qlt::model::load_llama(hf_path, at::kFloat, at::kCPU, format);
    for (int j = 0; j < qlt::model::kNumLlamaLinears; ++j) {
      const auto& a = qlt::model::linear_weight(gguf.weights.layers[1], j);
      const auto& b = qlt::model::linear_weight(hf.weights.layers[1], j);
      CHECK(at::equal(a.materialize(at::kFloat), b.materialize(at::kFloat)));
    }
  }
}
