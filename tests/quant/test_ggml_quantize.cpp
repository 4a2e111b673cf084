// GGML encoders (src/quant/ggml_quantize.cpp) against gguf.quants.quantize (gguf-py 0.19.0)
// on committed cases (tests/fixtures/ggml_quantize/, written by
// scripts/fixtures/make_ggml_quantize.py), byte for byte; ggml_holds_exactly; Q4_1 through
// ggml_quantize = the INT4 fixtures; bad input.
#include <ATen/Parallel.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/errors.h"
#include "io/ggml_types.h"
#include "io/safetensors.h"
#include "quant/ggml_blocks.h"
#include "quant/ggml_dequantize.h"
#include "quant/ggml_quantize.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::io::GgmlType;

const fs::path kQuantizeFixtureDir = qlt::test::kFixtures / "ggml_quantize";

const qlt::io::SafetensorsFile& quantize_fixture() {
  static auto f = qlt::io::SafetensorsFile::open(kQuantizeFixtureDir / "quantize.safetensors");
  return f;
}

nlohmann::json quantize_cases() {
  std::ifstream in(kQuantizeFixtureDir / "quantize.json");
  return nlohmann::json::parse(in)["cases"];
}

// The first differing byte, or -1.
int64_t first_difference(const std::vector<uint8_t>& ours, const at::Tensor& theirs) {
  const at::Tensor t = theirs.contiguous();
  if (static_cast<int64_t>(ours.size()) != t.numel()) return 0;
  const auto* p = t.const_data_ptr<uint8_t>();
  for (size_t i = 0; i < ours.size(); ++i)
    if (ours[i] != p[i]) return static_cast<int64_t>(i);
  return -1;
}

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return x.scalar_type() == at::kFloat && y.scalar_type() == at::kFloat && x.numel() == y.numel() &&
         std::memcmp(x.const_data_ptr<float>(), y.const_data_ptr<float>(),
                     static_cast<size_t>(x.numel()) * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("ggml_quantize = gguf.quants.quantize, byte for byte (Q8_0, Q4_0, F16, BF16)",
          "[ggml_quantize]") {
  const auto all = quantize_cases();
  std::set<std::string> types;
  for (const auto& [name, c] : all.items()) {
    DYNAMIC_SECTION("case " << name << " (" << c["type"].get<std::string>() << ", "
                            << c["dtype"].get<std::string>()
                            << "): " << c["description"].get<std::string>()) {
      const auto type = static_cast<GgmlType>(c["type_id"].get<uint32_t>());
      REQUIRE(qlt::quant::ggml_can_quantize(type));
      const at::Tensor input = quantize_fixture().tensor(name + ".input");
      const at::Tensor expected = quantize_fixture().tensor(name + ".bytes");
      const auto ours = qlt::quant::ggml_quantize(type, input, name);
      const int64_t diff = first_difference(ours, expected);
      INFO("first differing byte " << diff << " of " << ours.size()
                                   << " (gguf: " << expected.numel() << ")");
      CHECK(diff == -1);
      // Dequantizing our bytes gives gguf's values, bit for bit.
      const at::Tensor deq =
          qlt::quant::ggml_dequantize(type, ours, input.numel(), name).view(input.sizes());
      CHECK(same_bits(deq, quantize_fixture().tensor(name + ".dequantized")));
      // A 1-thread run, and a strided view of the same values, give the same bytes.
      const int threads = at::get_num_threads();
      at::set_num_threads(1);
      const auto serial = qlt::quant::ggml_quantize(type, input, name);
      at::set_num_threads(threads);
      CHECK(serial == ours);
      const at::Tensor strided = input.t().contiguous().t();
      CHECK(qlt::quant::ggml_quantize(type, strided, name) == ours);
      // holds_exactly agrees with the round trip (the dequantized bytes vs the input).
      const at::Tensor x = input.to(at::kFloat);
      CHECK(qlt::quant::ggml_holds_exactly(type, input, name) == same_bits(deq, x));
    }
    types.insert(c["type"].get<std::string>());
  }
  CHECK(types == std::set<std::string>{"Q8_0", "Q4_0", "F16", "BF16"});
}

TEST_CASE("ggml_quantize Q4_1 = the INT4 group-32 fixtures (gguf's Q4_1), byte for byte",
          "[ggml_quantize]") {
  const fs::path dir = fs::path(QLT_SOURCE_DIR) / "tests/fixtures/ggml";
  const auto f = qlt::io::SafetensorsFile::open(dir / "q4_1_quantize.safetensors");
  std::ifstream in(dir / "q4_1_quantize.json");
  const auto all = nlohmann::json::parse(in)["cases"];
  for (const auto& [name, c] : all.items()) {
    INFO(name);
    const at::Tensor input = f.tensor(name + ".input");
    const auto ours = qlt::quant::ggml_quantize(GgmlType::Q4_1, input, name);
    CHECK(first_difference(ours, f.tensor(name + ".blocks").reshape({-1})) == -1);
  }
}

TEST_CASE("quantize_row_q8_0 / q4_0 by hand: scales, rounding, nibble order", "[ggml_quantize]") {
  namespace g = qlt::ggml;
  // Q8_0: amax 127 -> d = 1; 2.5 rounds away from zero to 3, -2.5 to -3.
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = -127.0f;
  g::block_q8_0 b8{};
  qlt::quant::quantize_row_q8_0(x.data(), &b8, 32);
  CHECK(b8.d == g::fp32_to_fp16(1.0f));
  CHECK(b8.qs[0] == 127);
  CHECK(b8.qs[1] == 3);
  CHECK(b8.qs[2] == -3);
  CHECK(b8.qs[3] == -127);
  // Q4_0: the extreme -8 (first of the largest magnitude) -> d = 1; element j + 16 high nibble.
  std::vector<float> y(32, 0.0f);
  y[0] = -8.0f;
  y[16] = 7.0f;
  y[1] = 8.0f;  // same magnitude as y[0], later: not the extreme
  g::block_q4_0 b4{};
  qlt::quant::quantize_row_q4_0(y.data(), &b4, 32);
  CHECK(b4.d == g::fp32_to_fp16(1.0f));  // -8 / -8
  CHECK((b4.qs[0] & 0xF) == 0);          // -8 -> 0
  CHECK((b4.qs[0] >> 4) == 15);          // 7 -> 15
  CHECK((b4.qs[1] & 0xF) == 15);         // 8 * 1 + 8.5 = 16.5 -> 16, clipped to 15
  CHECK((b4.qs[2] & 0xF) == 8);          // 0 -> 8
  // bf16 rounding: ties to even, NaN quieted.
  using qlt::quant::fp32_to_bf16_bits;
  CHECK(fp32_to_bf16_bits(1.0f) == 0x3F80);
  CHECK(fp32_to_bf16_bits(std::bit_cast<float>(0x3F808000u)) == 0x3F80);  // tie -> even
  CHECK(fp32_to_bf16_bits(std::bit_cast<float>(0x3F818000u)) == 0x3F82);  // tie -> even (up)
  CHECK(fp32_to_bf16_bits(std::bit_cast<float>(0x7F800001u)) == 0x7FC0);  // sNaN -> quiet
}

TEST_CASE("ggml_holds_exactly: exact values pass, one changed value fails", "[ggml_quantize]") {
  at::manual_seed(11);
  const at::Tensor w = at::randn({64, 96});
  for (GgmlType t :
       {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::F16, GgmlType::BF16}) {
    INFO(qlt::io::ggml_type_name(static_cast<uint32_t>(t)));
    CHECK_FALSE(qlt::quant::ggml_holds_exactly(t, w));
    // What a type decodes to, it holds exactly (the quantizers are idempotent on their own
    // values: a Q8_0 / Q4_1 embedding read from a GGUF file can be written back as it was).
    const auto bytes = qlt::quant::ggml_quantize(t, w);
    at::Tensor back = qlt::quant::ggml_dequantize(t, bytes, w.numel(), "w").view(w.sizes());
    CHECK(qlt::quant::ggml_holds_exactly(t, back));
    CHECK(qlt::quant::ggml_quantize(t, back) == bytes);
    back[63][95] = back[63][95].item<float>() * 1.0001f + 1e-3f;  // the last value only
    CHECK_FALSE(qlt::quant::ggml_holds_exactly(t, back));
  }
  CHECK(qlt::quant::ggml_holds_exactly(GgmlType::F32, w));
  CHECK(qlt::quant::ggml_holds_exactly(GgmlType::BF16, w.to(at::kBFloat16)));
  CHECK(qlt::quant::ggml_holds_exactly(GgmlType::F16, w.to(at::kHalf)));
}

TEST_CASE("ggml_quantize rejects types, dtypes and shapes it cannot write, naming the tensor",
          "[ggml_quantize][errors]") {
  using qlt::quant::ggml_quantize;
  const at::Tensor w = at::zeros({4, 64});
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q5_0, GgmlType::I32}) {
    CHECK_FALSE(qlt::quant::ggml_can_quantize(t));
    REQUIRE_THROWS_WITH(ggml_quantize(t, w, "blk.0.attn_q.weight"),
                        Contains("tensor blk.0.attn_q.weight: cannot write GGML type"));
  }
  REQUIRE_THROWS_WITH(ggml_quantize(GgmlType::Q8_0, at::zeros({4, 48}), "x"),
                      Contains("tensor x: shape [4, 48]: the row length 48 is not a multiple of "
                               "Q8_0's block of 32 values"));
  REQUIRE_THROWS_WITH(ggml_quantize(GgmlType::Q4_0, at::zeros({4, 64}, at::kDouble), "x"),
                      Contains("dtype Double cannot be written as Q4_0"));
  REQUIRE_THROWS_WITH(ggml_quantize(GgmlType::F16, at::zeros({2, 2, 32}), "x"),
                      Contains("1-D or 2-D"));
  // 1-D is one row; F16 takes any length.
  CHECK(ggml_quantize(GgmlType::F16, at::ones({3})).size() == 6);
  CHECK(ggml_quantize(GgmlType::Q8_0, at::ones({64})).size() == 68);
}
