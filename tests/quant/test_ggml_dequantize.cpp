// GGML block decoding (src/quant/ggml_dequantize.cpp) against gguf.quants.dequantize (gguf-py
// 0.19.0) on committed raw blocks (tests/fixtures/ggml/dequantize.*, written by
// scripts/fixtures/make_ggml_fixtures.py), bit for bit; the fp16 conversions of
// quant/ggml_blocks.h over all 65536 half values; and bad input.
#include <c10/util/Half.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/errors.h"
#include "io/ggml_types.h"
#include "io/safetensors.h"
#include "quant/ggml_blocks.h"
#include "quant/ggml_dequantize.h"
#include "quant/int4.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::io::GgmlType;

const fs::path kDequantizeFixtureDir = qlt::test::kFixtures / "ggml";

const qlt::io::SafetensorsFile& dequantize_fixture() {
  static auto f = qlt::io::SafetensorsFile::open(kDequantizeFixtureDir / "dequantize.safetensors");
  return f;
}

nlohmann::json dequantize_cases() {
  std::ifstream in(kDequantizeFixtureDir / "dequantize.json");
  return nlohmann::json::parse(in)["cases"];
}

std::span<const uint8_t> tensor_bytes_of(const at::Tensor& t) {
  return {t.const_data_ptr<uint8_t>(), static_cast<size_t>(t.numel())};
}

// Bitwise equality of two fp32 tensors, with the first difference shown.
void check_bits(const at::Tensor& ours, const at::Tensor& theirs, const std::string& what) {
  REQUIRE(ours.scalar_type() == at::kFloat);
  REQUIRE(theirs.scalar_type() == at::kFloat);
  REQUIRE(ours.numel() == theirs.numel());
  const at::Tensor a = ours.contiguous(), b = theirs.contiguous();
  const auto* pa = a.const_data_ptr<float>();
  const auto* pb = b.const_data_ptr<float>();
  int64_t count = 0, first = -1;
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (std::bit_cast<uint32_t>(pa[i]) != std::bit_cast<uint32_t>(pb[i])) {
      if (first < 0) first = i;
      ++count;
    }
  }
  if (count > 0) {
    INFO(what << ": " << count << " of " << a.numel() << " differ; first at " << first << ": ours "
              << pa[first] << " (0x" << std::hex << std::bit_cast<uint32_t>(pa[first]) << "), gguf "
              << pb[first] << " (0x" << std::bit_cast<uint32_t>(pb[first]) << ")");
    CHECK(count == 0);
  }
}

}  // namespace

TEST_CASE("ggml_dequantize = gguf.quants.dequantize, bit for bit, every type", "[ggml]") {
  const auto all = dequantize_cases();
  std::set<std::string> types;
  for (const auto& [name, c] : all.items()) {
    DYNAMIC_SECTION("case " << name << " (" << c["type"].get<std::string>()
                            << "): " << c["description"].get<std::string>()) {
      const auto type = static_cast<GgmlType>(c["type_id"].get<uint32_t>());
      const auto traits = qlt::io::ggml_type_traits(c["type_id"].get<uint32_t>());
      REQUIRE(traits.has_value());
      CHECK(traits->name == c["type"].get<std::string>());
      REQUIRE(qlt::quant::ggml_can_dequantize(type));
      const at::Tensor raw = dequantize_fixture().tensor(name + ".bytes");
      const int64_t numel = c["numel"].get<int64_t>();
      const at::Tensor got = qlt::quant::ggml_dequantize(type, tensor_bytes_of(raw), numel, name);
      CHECK(got.sizes() == at::IntArrayRef({numel}));
      check_bits(got, dequantize_fixture().tensor(name + ".expected"), name);

      // The same bytes one byte off alignment (GGUF data need not be aligned for a struct).
      std::vector<uint8_t> shifted(static_cast<size_t>(raw.numel()) + 1);
      std::memcpy(shifted.data() + 1, raw.const_data_ptr<uint8_t>(), raw.numel());
      check_bits(qlt::quant::ggml_dequantize(type, std::span<const uint8_t>(shifted).subspan(1),
                                             numel, name),
                 got, name + " unaligned");

      // Q4_1 is INT4 with groups of 32: the INT4 path gives the same values.
      if (type == GgmlType::Q4_1) {
        const auto q = qlt::quant::int4_from_q4_1(tensor_bytes_of(raw), 1, numel, at::kFloat, name);
        check_bits(qlt::quant::dequantize_int4(q).reshape({-1}), got, name + " via INT4");
      }
    }
    types.insert(c["type"].get<std::string>());
  }
  CHECK(types == std::set<std::string>{"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K",
                                       "Q6_K"});
}

TEST_CASE("ggml block structs agree with the type table", "[ggml]") {
  namespace g = qlt::ggml;
  const std::pair<GgmlType, std::pair<int64_t, size_t>> expected[] = {
      {GgmlType::Q8_0, {g::QK8_0, sizeof(g::block_q8_0)}},
      {GgmlType::Q4_0, {g::QK4_0, sizeof(g::block_q4_0)}},
      {GgmlType::Q4_1, {g::QK4_1, sizeof(g::block_q4_1)}},
      {GgmlType::Q4_K, {g::QK_K, sizeof(g::block_q4_K)}},
      {GgmlType::Q5_K, {g::QK_K, sizeof(g::block_q5_K)}},
      {GgmlType::Q6_K, {g::QK_K, sizeof(g::block_q6_K)}},
  };
  for (const auto& [type, geometry] : expected) {
    const auto t = qlt::io::ggml_type_traits(static_cast<uint32_t>(type));
    REQUIRE(t.has_value());
    INFO(t->name);
    CHECK(t->block_elements == geometry.first);
    CHECK(t->block_bytes == static_cast<int64_t>(geometry.second));
  }
  CHECK(sizeof(g::block_q8_0) == 34);
  CHECK(sizeof(g::block_q4_0) == 18);
  CHECK(sizeof(g::block_q4_1) == 20);
  CHECK(sizeof(g::block_q4_K) == 144);
  CHECK(sizeof(g::block_q5_K) == 176);
  CHECK(sizeof(g::block_q6_K) == 210);
}

TEST_CASE("fp16 conversions: exact widening, round-to-nearest-even narrowing", "[ggml]") {
  using qlt::ggml::fp16_to_fp32;
  using qlt::ggml::fp32_to_fp16;
  for (uint32_t h = 0; h < 65536; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    const float f = fp16_to_fp32(bits);
    const bool nan = (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0;
    if (nan) {
      // NaN keeps sign and payload (not quieted): numpy's float16 -> float32.
      REQUIRE(std::isnan(f));
      REQUIRE(std::bit_cast<uint32_t>(f) ==
              (((h & 0x8000u) << 16) | 0x7F800000u | ((h & 0x3FFu) << 13)));
      REQUIRE(fp32_to_fp16(f) == bits);
      continue;
    }
    INFO("half 0x" << std::hex << h);
    REQUIRE(std::bit_cast<uint32_t>(f) ==
            std::bit_cast<uint32_t>(static_cast<float>(c10::Half(bits, c10::Half::from_bits()))));
    REQUIRE(fp32_to_fp16(f) == bits);  // round trip
  }
  // Narrowing of arbitrary finite floats and infinities agrees with c10::Half (RNE): every
  // midpoint between neighbouring halves, one ulp either side, and random bit patterns.
  std::vector<float> probes = {0.0f,     -0.0f,
                               65504.0f, 65519.996f,
                               65520.0f, 1e9f,
                               -1e9f,    std::numeric_limits<float>::infinity(),
                               0x1p-25f, std::nextafter(0x1p-25f, 1.0f),
                               0x1p-26f, 1e-45f,
                               0x1p-14f, std::numeric_limits<float>::max()};
  for (uint32_t h = 0; h < 0x7C00u; ++h) {
    const float lo = fp16_to_fp32(static_cast<uint16_t>(h));
    const float hi = fp16_to_fp32(static_cast<uint16_t>(h + 1));
    const float mid = lo + (hi - lo) / 2;  // exact in fp32
    for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e10f)}) {
      probes.push_back(v);
      probes.push_back(-v);
    }
  }
  std::mt19937 rng(5);
  for (int i = 0; i < 200000; ++i) {
    const float v = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    if (!std::isnan(v)) probes.push_back(v);
  }
  for (float v : probes) {
    INFO("float " << v << " (0x" << std::hex << std::bit_cast<uint32_t>(v) << ")");
    REQUIRE(fp32_to_fp16(v) == c10::Half(v).x);
  }
}

TEST_CASE("ggml_dequantize rejects unsupported types and sizes, naming the tensor",
          "[ggml][errors]") {
  const std::vector<uint8_t> bytes(34 * 4);
  for (GgmlType type : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q5_0, GgmlType::Q5_1,
                        GgmlType::IQ4_XS, GgmlType::Q8_K, GgmlType::I32, GgmlType::F64,
                        static_cast<GgmlType>(4), static_cast<GgmlType>(1000)}) {
    CHECK_FALSE(qlt::quant::ggml_can_dequantize(type));
    const auto traits = qlt::io::ggml_type_traits(static_cast<uint32_t>(type));
    const std::string name =
        traits ? std::string(traits->name) : fmt::format("type id {}", static_cast<uint32_t>(type));
    REQUIRE_THROWS_AS(qlt::quant::ggml_dequantize(type, bytes, 128, "t"), qlt::UserError);
    REQUIRE_THROWS_WITH(qlt::quant::ggml_dequantize(type, bytes, 128, "blk.3.ffn_down.weight"),
                        Contains("tensor blk.3.ffn_down.weight: GGML type " + name +
                                 " cannot be loaded (qlora-train decodes F32, F16, BF16, Q8_0, "
                                 "Q4_0, Q4_1, Q4_K, Q5_K and Q6_K)"));
  }
  using qlt::quant::ggml_dequantize;
  REQUIRE_THROWS_WITH(ggml_dequantize(GgmlType::Q8_0, bytes, 100, "t"),
                      Contains("tensor t: 100 elements of type Q8_0 are not a whole number of "
                               "its blocks of 32 elements"));
  REQUIRE_THROWS_WITH(ggml_dequantize(GgmlType::Q6_K, bytes, 128, "t"),
                      Contains("blocks of 256 elements"));
  REQUIRE_THROWS_WITH(ggml_dequantize(GgmlType::F32, bytes, -4, "t"),
                      Contains("tensor t: -4 elements of type F32"));
  REQUIRE_THROWS_WITH(ggml_dequantize(GgmlType::Q8_0, bytes, 96, "tok_embd"),
                      Contains("tensor tok_embd: 96 elements of type Q8_0 take 102 bytes, but "
                               "136 bytes were given"));
  REQUIRE_THROWS_WITH(ggml_dequantize(GgmlType::F16, bytes, 67, "t"),
                      Contains("take 134 bytes, but 136"));
  REQUIRE_THROWS_WITH(
      ggml_dequantize(GgmlType::Q8_0, bytes, std::numeric_limits<int64_t>::max() / 32 * 32, "t"),
      Contains("take more than 2^63 bytes"));
  REQUIRE_THROWS_WITH(ggml_dequantize(GgmlType::BF16, {}, 1, "t"),
                      Contains("take 2 bytes, but 0 bytes were given"));
  CHECK(ggml_dequantize(GgmlType::Q4_K, {}, 0, "t").numel() == 0);
}
