// INT4 group-asymmetric format (src/quant/int4.cpp). Group 32: byte-identical to the `gguf`
// package's Q4_1 quantizer and bit-identical to its dequantizer on every committed case
// (tests/fixtures/ggml/q4_1_quantize.*, scripts/fixtures/make_ggml_fixtures.py). Groups 64 and
// 128 have no outside reference: they are checked against group 32 on inputs where the
// results must coincide, and by properties (error bound, constant groups, layout).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "int4_layout.h"
#include "io/safetensors.h"
#include "quant/ggml_blocks.h"
#include "quant/int4.h"
#include "quant/int4_cuda.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::quant::Int4Options;
using qlt::quant::Int4Tensor;

const fs::path kInt4FixtureDir = qlt::test::kFixtures / "ggml";

const qlt::io::SafetensorsFile& int4_fixture() {
  static auto f = qlt::io::SafetensorsFile::open(kInt4FixtureDir / "q4_1_quantize.safetensors");
  return f;
}

nlohmann::json int4_cases() {
  std::ifstream in(kInt4FixtureDir / "q4_1_quantize.json");
  return nlohmann::json::parse(in)["cases"];
}

// Bitwise equality (-0.0 != 0.0, NaN payloads count), with the first difference shown.
void check_bitwise_equal(const at::Tensor& ours, const at::Tensor& theirs,
                         const std::string& what) {
  INFO(what << ": ours " << ours.sizes() << " " << ours.scalar_type() << ", reference "
            << theirs.sizes() << " " << theirs.scalar_type());
  REQUIRE(ours.scalar_type() == theirs.scalar_type());
  REQUIRE(ours.numel() == theirs.numel());
  const at::Tensor a = ours.contiguous().reshape(-1), b = theirs.contiguous().reshape(-1);
  const auto* pa = static_cast<const uint8_t*>(a.const_data_ptr());
  const auto* pb = static_cast<const uint8_t*>(b.const_data_ptr());
  const int64_t es = a.element_size();
  int64_t first = -1, count = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (std::memcmp(pa + i * es, pb + i * es, es) != 0) {
      if (first < 0) first = i;
      ++count;
    }
  }
  if (count > 0) {
    INFO(count << " elements differ; first at flat index " << first << ": ours "
               << a[first].item<double>() << ", reference " << b[first].item<double>());
    CHECK(count == 0);
  }
}

// d and m of block b as fp32.
std::pair<float, float> block_dm(const Int4Tensor& q, int64_t b) {
  const at::Tensor blocks = q.blocks.contiguous();
  const uint8_t* p = blocks.const_data_ptr<uint8_t>() + b * qlt::int4::block_bytes(q.group_size);
  uint16_t d, m;
  std::memcpy(&d, p + qlt::int4::kDOffset, 2);
  std::memcpy(&m, p + qlt::int4::kMOffset, 2);
  return {qlt::ggml::fp16_to_fp32(d), qlt::ggml::fp16_to_fp32(m)};
}

// The 16 codes of group element j of block b.
int int4_code(const Int4Tensor& q, int64_t b, int64_t j) {
  const at::Tensor blocks = q.blocks.contiguous();
  const uint8_t* qs = blocks.const_data_ptr<uint8_t>() + b * qlt::int4::block_bytes(q.group_size) +
                      qlt::int4::kQsOffset;
  const int64_t half = q.group_size / 2;
  return j < half ? (qs[j] & 0xF) : (qs[j - half] >> 4);
}

}  // namespace

TEST_CASE("INT4 group 32 = gguf Q4_1: quantize bytes and dequantize bits", "[int4][ggml]") {
  const auto all = int4_cases();
  REQUIRE(all.size() >= 12);
  for (const auto& [name, c] : all.items()) {
    DYNAMIC_SECTION("case " << name << ": " << c["description"].get<std::string>()) {
      const at::Tensor input = int4_fixture().tensor(name + ".input");
      const at::Tensor want_blocks = int4_fixture().tensor(name + ".blocks");
      const at::Tensor want = int4_fixture().tensor(name + ".dequantized");
      const Int4Tensor q = qlt::quant::quantize_int4(input, Int4Options{32}, name);
      CHECK(q.shape == input.sizes().vec());
      CHECK(q.dtype == input.scalar_type());
      CHECK(q.group_size == 32);
      CHECK(q.blocks.sizes() == at::IntArrayRef({input.size(0), input.size(1) / 32, 20}));
      CHECK(q.storage_bytes() == want_blocks.numel());
      check_bitwise_equal(q.blocks, want_blocks, name + ".blocks");
      check_bitwise_equal(qlt::quant::dequantize_int4(q, at::kFloat), want, name + ".dequantized");

      // The gguf bytes wrapped as stored give the same tensor and the same values.
      const at::Tensor wb = want_blocks.contiguous();
      const Int4Tensor wrapped = qlt::quant::int4_from_q4_1(
          {wb.const_data_ptr<uint8_t>(), static_cast<size_t>(wb.numel())}, input.size(0),
          input.size(1), input.scalar_type(), name);
      check_bitwise_equal(wrapped.blocks, q.blocks, name + " wrapped blocks");
      check_bitwise_equal(qlt::quant::dequantize_int4(wrapped, at::kFloat), want,
                          name + " wrapped dequantized");

      // bf16 / fp16 outputs: the fp32 value, then one round-to-nearest-even cast.
      for (at::ScalarType dt : {at::kBFloat16, at::kHalf}) {
        check_bitwise_equal(qlt::quant::dequantize_int4(q, dt), want.to(dt),
                            name + " dequantized to " + c10::toString(dt));
      }
      CHECK(qlt::quant::dequantize_int4(q).scalar_type() == input.scalar_type());
    }
  }
}

TEST_CASE("INT4 groups of 64 and 128 equal group 32 where every 32 share min and max", "[int4]") {
  // With the min at element 0 and the max at element 1 of every 32 values, a group of 64 or
  // 128 has the same min, max, d and id as each of its groups of 32, so every code and the
  // fp16 d and m must equal those of the gguf-verified group-32 path.
  auto gen = at::detail::createCPUGenerator(7);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    at::Tensor x = at::randn({6, 256}, gen).clamp(-2.5, 2.5);
    x.view({6, 8, 32}).select(2, 0).fill_(-3.0);
    x.view({6, 8, 32}).select(2, 1).fill_(2.75);
    x = x.to(dtype);
    const Int4Tensor q32 = qlt::quant::quantize_int4(x, Int4Options{32});
    for (int64_t g : {64, 128}) {
      INFO("dtype " << dtype << ", group " << g);
      const Int4Tensor q = qlt::quant::quantize_int4(x, Int4Options{g});
      REQUIRE(q.blocks.sizes() == at::IntArrayRef({6, 256 / g, 4 + g / 2}));
      for (int64_t b = 0; b < q.num_groups(); ++b) {
        for (int64_t j = 0; j < g; ++j) {
          const int64_t b32 = (b * g + j) / 32, j32 = (b * g + j) % 32;
          REQUIRE(int4_code(q, b, j) == int4_code(q32, b32, j32));
          if (j32 == 0) REQUIRE(block_dm(q, b) == block_dm(q32, b32));
        }
      }
      check_bitwise_equal(qlt::quant::dequantize_int4(q, at::kFloat),
                          qlt::quant::dequantize_int4(q32, at::kFloat), "dequantized");
    }
  }
}

TEST_CASE("INT4 groups of 64 and 128: error bound, constant groups, layout", "[int4]") {
  auto gen = at::detail::createCPUGenerator(11);
  for (int64_t g : {32, 64, 128}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      INFO("group " << g << ", dtype " << dtype);
      at::Tensor x = (at::randn({5, 4 * g}, gen) * 0.5 + 0.1).to(dtype);
      x[1].narrow(0, g, g).fill_(0.5);  // constant groups (d == 0): decode exactly
      x[3].narrow(0, 0, g).fill_(-3.25);
      x[4].narrow(0, 3 * g, g).zero_();
      const Int4Tensor q = qlt::quant::quantize_int4(x, Int4Options{g});
      CHECK(q.storage_bytes() == 5 * 4 * (4 + g / 2));
      CHECK(8.0 * static_cast<double>(q.storage_bytes()) / static_cast<double>(q.numel()) ==
            Approx(4.0 + 32.0 / static_cast<double>(g)));
      const at::Tensor back = qlt::quant::dequantize_int4(q, at::kFloat);
      const at::Tensor xf = x.to(at::kFloat);
      CHECK(at::equal(back[1].narrow(0, g, g), xf[1].narrow(0, g, g)));
      CHECK(at::equal(back[3].narrow(0, 0, g), xf[3].narrow(0, 0, g)));
      CHECK(at::equal(back[4].narrow(0, 3 * g, g), xf[4].narrow(0, 3 * g, g)));
      // Round to nearest: |x - (d q + m)| <= d/2, plus what rounding d and m to fp16 adds
      // (2^-11 relative each, d times up to 15) and fp32 rounding.
      const float* xs = xf.const_data_ptr<float>();
      const float* ys = back.const_data_ptr<float>();
      for (int64_t b = 0; b < q.num_groups(); ++b) {
        const auto [d, m] = block_dm(q, b);
        const float bound = 0.5f * d + (std::fabs(m) + 16.0f * d) * 0x1p-11f + 1e-6f;
        for (int64_t j = 0; j < g; ++j) {
          const int64_t i = b * g + j;
          if (!(std::fabs(xs[i] - ys[i]) <= bound)) {
            FAIL("group " << b << " element " << j << ": x " << xs[i] << ", dequantized " << ys[i]
                          << ", d " << d << ", m " << m << ", bound " << bound);
          }
        }
      }
    }
  }
}

TEST_CASE("INT4 signed zeros and NaN follow the documented rules", "[int4]") {
  // min over {+0, -0} is -0 whatever the order (kernels/int4_layout.h), so CPU and CUDA agree.
  at::Tensor x = at::zeros({2, 32});
  x[0][5] = -0.0;
  x[1][0] = -0.0;
  x[1][7] = 1.0;
  const Int4Tensor q = qlt::quant::quantize_int4(x);
  CHECK(std::signbit(block_dm(q, 0).second));
  CHECK(std::signbit(block_dm(q, 1).second));
  // A NaN makes its group's d and m NaN (and every code 0); other groups are untouched.
  at::Tensor y = at::randn({2, 64});
  y[0][40] = std::nanf("");
  const Int4Tensor qn = qlt::quant::quantize_int4(y);
  CHECK(std::isnan(block_dm(qn, 1).first));
  CHECK(std::isnan(block_dm(qn, 1).second));
  const at::Tensor back = qlt::quant::dequantize_int4(qn);
  CHECK(back[0].narrow(0, 32, 32).isnan().all().item<bool>());
  CHECK(back[0].narrow(0, 0, 32).isfinite().all().item<bool>());
  CHECK(back[1].isfinite().all().item<bool>());
}

TEST_CASE("INT4 Int4Tensor: empty weights, to(), dequantize_int4_into", "[int4]") {
  const Int4Tensor empty = qlt::quant::quantize_int4(at::zeros({0, 64}), Int4Options{64});
  CHECK(empty.numel() == 0);
  CHECK(empty.storage_bytes() == 0);
  CHECK(qlt::quant::dequantize_int4(empty).sizes() == at::IntArrayRef({0, 64}));

  const at::Tensor x = at::randn({3, 128});
  const Int4Tensor q = qlt::quant::quantize_int4(x, Int4Options{128});
  const Int4Tensor moved = q.to(at::kCPU);
  CHECK(moved.device() == at::Device(at::kCPU));
  CHECK(at::equal(moved.blocks, q.blocks));
  at::Tensor out = at::empty({3, 128}, at::kBFloat16);
  qlt::quant::dequantize_int4_into(q, out);
  CHECK(at::equal(out, qlt::quant::dequantize_int4(q, at::kBFloat16)));
  CHECK(qlt::quant::int4_block_bytes(32) == 20);
  CHECK(qlt::quant::int4_block_bytes(64) == 36);
  CHECK(qlt::quant::int4_block_bytes(128) == 68);
}

TEST_CASE("INT4 rejects bad group sizes, shapes, dtypes and byte counts", "[int4][errors]") {
  using qlt::UserError;
  for (int64_t bad : {0, 16, 48, 96, 256, -32}) {
    INFO("group size " << bad);
    REQUIRE_THROWS_MATCHES(
        qlt::quant::check_int4_group_size(bad, "quantization.group_size"), UserError,
        Catch::Matchers::Message("quantization.group_size: INT4 group size " + std::to_string(bad) +
                                 " is not supported; use 32 (the default: GGUF's Q4_1 blocks), 64 "
                                 "or 128"));
    REQUIRE_THROWS_WITH(qlt::quant::quantize_int4(at::randn({2, 256}), Int4Options{bad}, "w.q"),
                        Contains("tensor w.q: INT4 group size"));
    REQUIRE_THROWS_AS(qlt::quant::int4_block_bytes(bad), UserError);
  }
  // in not a multiple of the group: names the tensor, the shape and the group sizes that fit.
  REQUIRE_THROWS_WITH(
      qlt::quant::quantize_int4(at::randn({4, 96}), Int4Options{64}, "layers.0.mlp.up_proj"),
      Contains("tensor layers.0.mlp.up_proj: shape [4, 96]: the input dimension 96 is not a "
               "multiple of the INT4 group size 64; set quantization.group_size to 32"));
  REQUIRE_THROWS_WITH(qlt::quant::quantize_int4(at::randn({4, 100}), Int4Options{32}, "w"),
                      Contains("quantization.type \"nf4\""));
  REQUIRE_THROWS_WITH(qlt::quant::quantize_int4(at::randn({64}), Int4Options{32}, "w"),
                      Contains("tensor w: INT4 quantizes 2-D [out, in] weights; this one has "
                               "shape [64]"));
  REQUIRE_THROWS_WITH(qlt::quant::quantize_int4(at::randn({2, 2, 32}), Int4Options{32}, "w"),
                      Contains("shape [2, 2, 32]"));
  REQUIRE_THROWS_WITH(qlt::quant::quantize_int4(at::ones({2, 32}, at::kInt), {}, "w"),
                      Contains("tensor w: dtype I32 is not supported for INT4 quantization"));
  REQUIRE_THROWS_WITH(qlt::quant::quantize_int4(at::ones({2, 32}, at::kDouble), {}, "w"),
                      Contains("tensor w: dtype F64 is not supported for INT4 quantization"));

  // Q4_1 bytes that do not match the shape.
  std::vector<uint8_t> bytes(2 * 20);
  REQUIRE_NOTHROW(qlt::quant::int4_from_q4_1(bytes, 1, 64, at::kFloat, "blk.0.attn_q.weight"));
  REQUIRE_THROWS_WITH(
      qlt::quant::int4_from_q4_1(bytes, 2, 64, at::kFloat, "blk.0.attn_q.weight"),
      Contains("tensor blk.0.attn_q.weight: shape [2, 64] in Q4_1 takes 4 blocks of 20 bytes, "
               "but 40 bytes were given"));
  REQUIRE_THROWS_WITH(qlt::quant::int4_from_q4_1(bytes, 1, 48, at::kFloat, "t"),
                      Contains("tensor t: shape [1, 48]: a Q4_1 tensor needs an input "
                               "dimension that is a multiple of 32"));
  REQUIRE_THROWS_WITH(qlt::quant::int4_from_q4_1(bytes, -1, 64, at::kFloat, "t"),
                      Contains("tensor t: shape [-1, 64]"));
  REQUIRE_THROWS_WITH(qlt::quant::int4_from_q4_1(bytes, int64_t{1} << 62, 64, at::kFloat, "t"),
                      Contains("tensor t: shape [4611686018427387904, 64] in Q4_1 takes"));
  REQUIRE_THROWS_WITH(qlt::quant::int4_from_q4_1(bytes, 1, 64, at::kInt, "t"),
                      Contains("tensor t: a Q4_1 weight dequantizes to float32, bfloat16 or "
                               "float16, not I32"));

  // Dequantizing into an integer tensor.
  const Int4Tensor q = qlt::quant::quantize_int4(at::randn({2, 32}));
  at::Tensor ints = at::empty({2, 32}, at::kInt);
  REQUIRE_THROWS_WITH(qlt::quant::dequantize_int4_into(q, ints),
                      Contains("int4 dequantize: dtype Int is not supported"));
}

#if !defined(QLT_WITH_CUDA)
TEST_CASE("INT4 CUDA entry points in a CPU build are errors naming the op", "[int4][errors]") {
  REQUIRE_THROWS_WITH(qlt::quant::quantize_int4_cuda(at::randn({2, 32}), Int4Options{}),
                      Contains("int4 quantize: the tensor is on CUDA but this build has no CUDA "
                               "kernels; rebuild with -DQLT_CUDA=ON"));
  Int4Tensor q = qlt::quant::quantize_int4(at::randn({2, 32}));
  at::Tensor out = at::empty({2, 32});
  REQUIRE_THROWS_WITH(qlt::quant::dequantize_int4_cuda_into(q, out),
                      Contains("int4 dequantize: the tensor is on CUDA but this build has no "
                               "CUDA kernels"));
}
#endif
