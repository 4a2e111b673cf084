// NF4 + double quant against bitsandbytes 0.50.2 (CPU backend): packed bytes, absmax codes,
// nested absmax, offset and dequantized values all bit-identical, for every fixture case
// (tests/fixtures/nf4, made by scripts/fixtures/make_nf4_fixtures.py).
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "nf4_layout.h"
#include "quant/nf4.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
const fs::path kNf4FixtureDir = qlt::test::kFixtures / "nf4";

const qlt::io::SafetensorsFile& nf4_fixture() {
  static auto f = qlt::io::SafetensorsFile::open(kNf4FixtureDir / "cases.safetensors");
  return f;
}

nlohmann::json nf4_cases() {
  std::ifstream in(kNf4FixtureDir / "cases.json");
  return nlohmann::json::parse(in)["cases"];
}

// Bitwise equality (so -0.0 != 0.0 and NaN payloads count), with the first difference shown.
void require_bitwise_equal(const at::Tensor& ours, const at::Tensor& theirs,
                           const std::string& what) {
  INFO(what << ": ours " << ours.sizes() << " " << ours.scalar_type() << ", bnb " << theirs.sizes()
            << " " << theirs.scalar_type());
  REQUIRE(ours.scalar_type() == theirs.scalar_type());
  REQUIRE(ours.numel() == theirs.numel());
  auto a = ours.contiguous().cpu(), b = theirs.contiguous().cpu();
  const bool same = std::memcmp(a.const_data_ptr(), b.const_data_ptr(), a.nbytes()) == 0;
  if (!same) {
    auto diff = (a.reshape(-1).to(at::kDouble) != b.reshape(-1).to(at::kDouble)).nonzero();
    if (diff.numel()) {
      const int64_t i = diff[0][0].item<int64_t>();
      INFO("first difference at flat index " << i << ": ours " << a.reshape(-1)[i].item<double>()
                                             << ", bnb " << b.reshape(-1)[i].item<double>());
      CHECK(same);
    }
  }
  CHECK(same);
}

}  // namespace

TEST_CASE("NF4 tables equal bitsandbytes' quant_map, dynamic map and lookup table", "[nf4][bnb]") {
  require_bitwise_equal(qlt::quant::nf4_quant_map(), nf4_fixture().tensor("quant_map"),
                        "quant_map");
  require_bitwise_equal(qlt::quant::nf4_nested_quant_map(), nf4_fixture().tensor("dynamic_map"),
                        "dynamic_map");
  auto lut = at::empty({qlt::nf4::kNestedLutSize}, at::kByte);
  qlt::nf4::build_nested_lut(lut.mutable_data_ptr<uint8_t>());
  require_bitwise_equal(lut, nf4_fixture().tensor("dq_lut"), "dq_lut");
}

TEST_CASE("NF4 quantize/dequantize is byte-identical to bitsandbytes on every case", "[nf4][bnb]") {
  auto all = nf4_cases();
  REQUIRE(all.size() >= 10);
  for (const auto& [name, c] : all.items()) {
    DYNAMIC_SECTION("case " << name << ": " << c["description"].get<std::string>()) {
      const auto& f = nf4_fixture();
      qlt::quant::Nf4Options options{c["blocksize"].get<int64_t>(), c["double_quant"].get<bool>()};
      auto input = f.tensor(name + ".input");
      auto q = qlt::quant::quantize_nf4(input, options);
      require_bitwise_equal(q.packed, f.tensor(name + ".packed"), name + ".packed");
      CHECK(q.packed.sizes() == f.tensor(name + ".packed").sizes());
      require_bitwise_equal(q.absmax, f.tensor(name + ".absmax"), name + ".absmax");
      if (options.double_quant) {
        require_bitwise_equal(q.nested_absmax, f.tensor(name + ".nested_absmax"),
                              name + ".nested_absmax");
        require_bitwise_equal(at::scalar_tensor(q.offset, at::kFloat),
                              f.tensor(name + ".offset").reshape({}), name + ".offset");
      }
      CHECK(q.shape == input.sizes().vec());
      CHECK(q.dtype == input.scalar_type());
      require_bitwise_equal(qlt::quant::dequantize_nf4(q), f.tensor(name + ".dequantized"),
                            name + ".dequantized");
    }
  }
}

TEST_CASE("NF4 storage costs 4.127 bits per parameter at the defaults", "[nf4]") {
  auto q = qlt::quant::quantize_nf4(at::randn({4096, 4096}));
  const double bits = 8.0 * static_cast<double>(q.storage_bytes()) / static_cast<double>(q.numel());
  CHECK(bits == Approx(4.127).margin(5e-4));
  auto plain = qlt::quant::quantize_nf4(at::randn({256, 256}), {64, false});
  CHECK(8.0 * static_cast<double>(plain.storage_bytes()) / static_cast<double>(plain.numel()) ==
        Approx(4.5));
}

TEST_CASE("NF4 rejects unsupported block sizes and dtypes", "[nf4][errors]") {
  using Catch::Matchers::Contains;
  for (int64_t bad : {0, 16, 48, 8192}) {
    REQUIRE_THROWS_WITH(qlt::quant::quantize_nf4(at::randn({64}), {bad, true}),
                        Contains("NF4 block size " + std::to_string(bad) + " is not supported"));
  }
  REQUIRE_THROWS_WITH(qlt::quant::quantize_nf4(at::ones({64}, at::kInt)),
                      Contains("dtype I32 is not supported for NF4 quantization"));
}

TEST_CASE("NF4 all-zero blocks decode to exact zeros", "[nf4]") {
  auto x = at::zeros({3, 64});
  x[0].normal_();
  x[2].normal_();
  auto q = qlt::quant::quantize_nf4(x);
  auto back = qlt::quant::dequantize_nf4(q);
  CHECK(back[1].abs().max().item<float>() == 0.0f);
  // Relative error over the whole tensor stays at NF4's usual ~10 %.
  CHECK(((back - x).norm() / x.norm()).item<double>() < 0.15);
}
