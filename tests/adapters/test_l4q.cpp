// L4Q (adapters/l4q.h): the custom backward against LibTorch autograd of the plain formula, the
// forward against x Wq^T, the min-max init, the codes' rounding rules, and the Q4_1 identity
// (the weights L4Q trains with are exactly the INT4 / GGUF Q4_1 blocks it exports).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "adapters/l4q.h"
#include "quant/weight_format.h"

namespace {

using qlt::adapters::FrozenWeight;
using qlt::adapters::L4qQuantizer;

// Bitwise equality of two tensors of the same dtype (-0.0 != +0.0).
bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.const_data_ptr(), y.const_data_ptr(), x.nbytes()) == 0;
}

// max|got - ref| <= 1e-5 * max|ref|. No absolute floor: every reference compared here has a
// max of order 1e-3 or more (the data is chosen so that each gradient is non-trivial).
void check_rel(const at::Tensor& got, const at::Tensor& ref, const std::string& what) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(ref.defined());
  REQUIRE(got.sizes() == ref.sizes());
  const double err = (got - ref).abs().max().item<double>();
  const double mag = ref.abs().max().item<double>();
  INFO("max |got - ref| = " << err << ", max |ref| = " << mag);
  CHECK(mag > 0);
  CHECK(err <= 1e-5 * mag);
}

// The plain L4Q formula in LibTorch ops, differentiated by autograd (the reference). Each
// straight-through estimator is written as value.detach() + (path - path.detach()): the forward
// value is exactly `value` (path - path.detach() is +0 exactly, and v + 0 == v), unlike
// path + (value - path).detach(), whose sum may be 1 ulp off `value` and would move u across
// a rounding boundary now and then. The gradient is that of `path`:
//  - LSQ gradient scale: d = fp16(max(s, 2^-14)) + (s gs - (s gs).detach()), dd/ds = gs
//    (the fp16 rounding and the clamp are the identity for the gradient); m likewise.
//  - round: round(c) + (c - c.detach()), c = clamp(u, 0, Qp) (at::clamp passes the gradient
//    where 0 <= u <= Qp, inclusive, as the mask M).
// x [..., in], w0 [out, in] fp32, A [r, in], B [out, r], scale/offset [out, in/g] -> [..., out].
at::Tensor reference_l4q(const at::Tensor& x, const at::Tensor& w0, const at::Tensor& A,
                         const at::Tensor& B, const at::Tensor& scale, const at::Tensor& offset,
                         double scaling, const L4qQuantizer& q) {
  const int64_t out = w0.size(0), in = w0.size(1), g = q.group_size;
  const double qp = static_cast<double>(qlt::adapters::l4q_qmax(q));
  const double gs = qlt::adapters::l4q_gradient_scale(q);
  const auto wp = w0 + at::mm(B, A) * scaling;  // W' [out, in]
  const auto s_gs = scale * gs, o_gs = offset * gs;
  const auto d_val =
      scale.detach().clamp_min(qlt::adapters::kL4qMinScale).to(at::kHalf).to(at::kFloat);
  const auto m_val = offset.detach().to(at::kHalf).to(at::kFloat);
  const auto d = (d_val + (s_gs - s_gs.detach())).unsqueeze(-1);  // [out, G, 1]
  const auto m = (m_val + (o_gs - o_gs.detach())).unsqueeze(-1);  // [out, G, 1]
  const auto u = (wp.view({out, -1, g}) - m) / d;                 // [out, G, g]
  const auto c = at::clamp(u, 0.0, qp);
  const auto qv = at::round(c).detach() + (c - c.detach());
  const auto wq = (qv * d + m).view({out, in});  // Wq [out, in]
  return at::matmul(x, wq.t());
}

enum class BaseKind { kDense, kNf4, kInt4 };

FrozenWeight make_base(const at::Tensor& w, BaseKind kind) {
  switch (kind) {
    case BaseKind::kDense:
      return FrozenWeight{qlt::quant::store_weight(w, qlt::quant::DenseFormat{}, at::kFloat, "w")};
    case BaseKind::kNf4:
      return FrozenWeight{
          qlt::quant::store_weight(w, qlt::quant::Nf4Options{64, true}, at::kFloat, "w")};
    case BaseKind::kInt4:
      return FrozenWeight{
          qlt::quant::store_weight(w, qlt::quant::Int4Options{32}, at::kFloat, "w")};
  }
  return {};
}

const char* base_name(BaseKind kind) {
  return kind == BaseKind::kDense ? "dense" : kind == BaseKind::kNf4 ? "nf4" : "int4";
}

struct L4qCase {
  int64_t out, in, rank;
  std::vector<int64_t> x_shape;  // [..., in]
  int64_t chunk_elements;
};

// One comparison of l4q_linear's output and gradients with reference_l4q's.
void check_gradients(const L4qCase& c, const L4qQuantizer& q, BaseKind kind, bool x_requires_grad) {
  INFO("out " << c.out << " in " << c.in << " r " << c.rank << " bits " << q.bits << " g "
              << q.group_size << " base " << base_name(kind) << " chunk " << c.chunk_elements
              << " rows/chunk " << qlt::adapters::l4q_chunk_rows(c.in, c.chunk_elements));
  at::manual_seed(1000 + c.out + q.bits * 7 + q.group_size + static_cast<int>(kind));
  const FrozenWeight base = make_base(at::randn({c.out, c.in}) * 0.05, kind);
  const at::Tensor w0 = base.materialize(at::kFloat);  // [out, in]
  const double scaling = 2.0;
  const auto a0 = at::randn({c.rank, c.in}) * 0.05;   // A [r, in]
  const auto b0 = at::randn({c.out, c.rank}) * 0.05;  // B [out, r]
  // Min-max init from W0, then the step shrunk (the largest weights of a group clip above)
  // and the offset raised by half a step (the smallest clip below); B A moves more weights
  // across both ends.
  const auto init = qlt::adapters::l4q_init_scale_offset(w0, q);
  const auto s0 = init.scale * 0.85, o0 = init.offset + init.scale * 0.5;

  // The data clips on both ends and keeps most weights in range.
  {
    const auto codes = qlt::adapters::l4q_codes(w0 + at::mm(b0, a0) * scaling, s0, o0, q);
    const auto d = codes.d.to(at::kFloat).unsqueeze(-1), m = codes.m.to(at::kFloat).unsqueeze(-1);
    const auto u = ((w0 + at::mm(b0, a0) * scaling).view({c.out, -1, q.group_size}) - m) / d;
    const int64_t below = (u < 0).sum().item<int64_t>();
    const int64_t above = (u > qlt::adapters::l4q_qmax(q)).sum().item<int64_t>();
    INFO("below " << below << " above " << above << " of " << u.numel());
    REQUIRE(below > 0);
    REQUIRE(above > 0);
    REQUIRE(below + above < u.numel() / 4);
  }

  const auto x0 = at::randn(c.x_shape);
  auto leaf = [](const at::Tensor& t) { return t.detach().clone().requires_grad_(true); };
  auto x1 = x0.clone().requires_grad_(x_requires_grad), x2 = x0.clone().requires_grad_(true);
  auto a1 = leaf(a0), b1 = leaf(b0), s1 = leaf(s0), o1 = leaf(o0);
  auto a2 = leaf(a0), b2 = leaf(b0), s2 = leaf(s0), o2 = leaf(o0);

  const auto y1 = qlt::adapters::l4q_linear(x1, base, a1, b1, s1, o1, scaling, q, c.chunk_elements);
  const auto y2 = reference_l4q(x2, w0, a2, b2, s2, o2, scaling, q);
  REQUIRE(y1.sizes() == y2.sizes());
  // Same Wq bit for bit, same matmul: the outputs agree exactly.
  CHECK(bitwise_equal(y1, y2.detach()));

  const auto grad = at::randn(y1.sizes());  // dL/dy [..., out]
  y1.backward(grad);
  y2.backward(grad);
  if (x_requires_grad) {
    check_rel(x1.grad(), x2.grad(), "dx");
  } else {
    CHECK(!x1.grad().defined());
  }
  check_rel(a1.grad(), a2.grad(), "dA");
  check_rel(b1.grad(), b2.grad(), "dB");
  check_rel(s1.grad(), s2.grad(), "dscale");
  check_rel(o1.grad(), o2.grad(), "doffset");
}

// A [out, in] fp32 weight with one constant group (row 1, group 1) for the init tests.
at::Tensor weight_with_constant_group(int64_t out, int64_t in, int64_t g) {
  auto w = at::randn({out, in}) * 0.1;
  w.narrow(0, 1, 1).narrow(1, g, g).fill_(0.3);
  return w;
}

}  // namespace

TEST_CASE("L4Q gradients equal autograd of the plain formula (several chunks)", "[adapters][l4q]") {
  // Chunks of 7 rows (40 = 5 * 7 + 5) and 16 rows (72 = 4 * 16 + 8): several chunks, the last
  // one short.
  const std::vector<L4qCase> cases = {
      {40, 128, 4, {2, 3, 128}, 128 * 7 + 5},
      {72, 192, 8, {9, 192}, 192 * 16},
  };
  for (const auto& c : cases) {
    for (int64_t bits : {4, 3}) {
      for (int64_t g : {32, 64}) {
        for (auto kind : {BaseKind::kDense, BaseKind::kNf4, BaseKind::kInt4}) {
          check_gradients(c, L4qQuantizer{bits, g}, kind, true);
        }
      }
    }
  }
}

TEST_CASE("L4Q gradients with the default chunk size, one row per chunk, x without grad",
          "[adapters][l4q]") {
  // 4104 rows of 256 inputs: the default 2^20-element chunk holds 4096 rows, so two chunks.
  check_gradients({4104, 256, 4, {6, 256}, qlt::adapters::kL4qChunkElements}, {4, 32},
                  BaseKind::kInt4, true);
  // A chunk smaller than a row still takes one row at a time.
  check_gradients({12, 64, 2, {3, 64}, 1}, {3, 32}, BaseKind::kDense, true);
  // x a plain input (no requires_grad): only the trainer's parameters get gradients.
  check_gradients({40, 128, 4, {5, 128}, 128 * 7}, {4, 64}, BaseKind::kNf4, false);
}

TEST_CASE("L4Q forward equals x Wq^T with Wq from l4q_codes / l4q_dequantize", "[adapters][l4q]") {
  at::manual_seed(21);
  const L4qQuantizer q{4, 32};
  const int64_t out = 56, in = 96, r = 4;
  const double scaling = 0.5;
  const FrozenWeight base = make_base(at::randn({out, in}) * 0.05, BaseKind::kInt4);
  const auto a = (at::randn({r, in}) * 0.1).requires_grad_(true);   // [r, in]
  const auto b = (at::randn({out, r}) * 0.1).requires_grad_(true);  // [out, r]
  const auto w_prime = base.materialize(at::kFloat) + at::mm(b.detach(), a.detach()) * scaling;
  const auto init = qlt::adapters::l4q_init_scale_offset(w_prime, q);
  const auto scale = init.scale.clone().requires_grad_(true);
  const auto offset = init.offset.clone().requires_grad_(true);
  // Wq [out, in] fp32, computed plainly from the public pieces.
  const auto wq =
      qlt::adapters::l4q_dequantize(qlt::adapters::l4q_codes(w_prime, scale, offset, q), q);

  SECTION("fp32") {
    const auto x = at::randn({3, 4, in});
    const auto y = qlt::adapters::l4q_linear(x, base, a, b, scale, offset, scaling, q);
    CHECK(y.scalar_type() == at::kFloat);
    CHECK(bitwise_equal(y, at::matmul(x, wq.t())));
    // The chunking does not change a value: chunks of 5 rows give the same bits.
    const auto y5 = qlt::adapters::l4q_linear(x, base, a, b, scale, offset, scaling, q, 5 * in);
    CHECK(bitwise_equal(y5, y));
  }
  SECTION("bf16: Wq is cast to x's dtype for the matmul; dx in bf16") {
    const auto x = at::randn({5, in}).to(at::kBFloat16).requires_grad_(true);
    const auto y = qlt::adapters::l4q_linear(x, base, a, b, scale, offset, scaling, q);
    CHECK(y.scalar_type() == at::kBFloat16);
    CHECK(bitwise_equal(y, at::matmul(x.detach(), wq.to(at::kBFloat16).t())));
    const auto grad = at::randn(y.sizes()).to(at::kBFloat16);
    y.backward(grad);
    REQUIRE(x.grad().defined());
    CHECK(x.grad().scalar_type() == at::kBFloat16);
    CHECK(bitwise_equal(x.grad(), at::matmul(grad, wq.to(at::kBFloat16))));
    for (const auto& t : {a, b, scale, offset}) {
      REQUIRE(t.grad().defined());
      CHECK(t.grad().scalar_type() == at::kFloat);
      CHECK(t.grad().sizes() == t.sizes());
    }
  }
}

TEST_CASE("L4Q init: min-max per group, constant groups get 2^-14", "[adapters][l4q]") {
  at::manual_seed(5);
  for (int64_t bits : {4, 3}) {
    for (int64_t g : {32, 64}) {
      for (auto dtype : {at::kFloat, at::kBFloat16}) {
        const L4qQuantizer q{bits, g};
        const int64_t out = 6, in = 256;
        const auto w = weight_with_constant_group(out, in, g).to(dtype);
        const auto so = qlt::adapters::l4q_init_scale_offset(w, q);
        REQUIRE(so.scale.sizes() == at::IntArrayRef({out, in / g}));
        REQUIRE(so.offset.sizes() == at::IntArrayRef({out, in / g}));
        CHECK(so.scale.scalar_type() == at::kFloat);
        CHECK(so.offset.scalar_type() == at::kFloat);
        CHECK(!so.scale.requires_grad());
        const auto wf = w.to(at::kFloat).contiguous();
        const auto wa = wf.accessor<float, 2>();
        const auto sa = so.scale.accessor<float, 2>(), oa = so.offset.accessor<float, 2>();
        const float qp = static_cast<float>((1 << bits) - 1);
        for (int64_t i = 0; i < out; ++i) {
          for (int64_t k = 0; k < in / g; ++k) {
            float mn = wa[i][k * g], mx = mn;
            for (int64_t j = 1; j < g; ++j) {
              mn = std::min(mn, wa[i][k * g + j]);
              mx = std::max(mx, wa[i][k * g + j]);
            }
            const float expected = mx == mn ? 1.0f / 16384.0f : (mx - mn) / qp;
            INFO("bits " << bits << " g " << g << " row " << i << " group " << k);
            CHECK(oa[i][k] == mn);
            CHECK(sa[i][k] == expected);
          }
        }
        CHECK(sa[1][1] == 1.0f / 16384.0f);  // the constant group
      }
    }
  }
}

TEST_CASE("L4Q codes: fp16 d clamped at 2^-14, fp16 m, round half to even, clipping",
          "[adapters][l4q]") {
  const L4qQuantizer q{4, 32};
  // One row, two groups: group 0 with d = 0.5 and m = 0 (both exact in fp16), group 1 with a
  // step below the fp16 normal range and a negative one.
  auto w = at::zeros({2, 64});
  auto wa = w.accessor<float, 2>();
  wa[0][0] = 1.25f;   // u = 2.5 -> 2 (half to even)
  wa[0][1] = 1.75f;   // u = 3.5 -> 4
  wa[0][2] = -1.0f;   // u = -2 -> clipped to 0
  wa[0][3] = 100.0f;  // u = 200 -> clipped to 15
  wa[0][4] = 7.5f;    // u = 15 -> 15
  auto scale = at::tensor({0.5f, 1e-9f, -1.0f, 0.1f}).view({2, 2});
  auto offset = at::tensor({0.0f, 0.1f, 0.0f, -0.3f}).view({2, 2});
  const auto c = qlt::adapters::l4q_codes(w, scale, offset, q);
  REQUIRE(c.codes.scalar_type() == at::kByte);
  REQUIRE(c.d.scalar_type() == at::kHalf);
  REQUIRE(c.m.scalar_type() == at::kHalf);
  const auto codes = c.codes.accessor<uint8_t, 2>();
  CHECK(codes[0][0] == 2);
  CHECK(codes[0][1] == 4);
  CHECK(codes[0][2] == 0);
  CHECK(codes[0][3] == 15);
  CHECK(codes[0][4] == 15);
  CHECK(codes[0][5] == 0);
  const auto d = c.d.to(at::kFloat);
  CHECK(d[0][0].item<float>() == 0.5f);
  CHECK(d[0][1].item<float>() == 1.0f / 16384.0f);                      // 1e-9 -> 2^-14
  CHECK(d[1][0].item<float>() == 1.0f / 16384.0f);                      // negative -> 2^-14
  CHECK(d[1][1].item<float>() == static_cast<float>(c10::Half(0.1f)));  // fp16(0.1)
  CHECK(bitwise_equal(c.m, offset.to(at::kHalf)));
  CHECK(c.codes.max().item<int>() <= 15);
}

TEST_CASE("L4Q weights are Q4_1 blocks: dequantize_int4 of the exported codes is Wq bit for bit",
          "[adapters][l4q]") {
  at::manual_seed(8);
  for (int64_t bits : {4, 3}) {
    for (int64_t g : {32, 64}) {
      INFO("bits " << bits << " g " << g);
      const L4qQuantizer q{bits, g};
      const int64_t out = 12, in = 192, half = g / 2;
      const auto w_prime = at::randn({out, in}) * 0.05;  // W' [out, in]
      const auto init = qlt::adapters::l4q_init_scale_offset(w_prime, q);
      // Trained-looking steps and offsets (clipping both ends), as the trainer would export.
      const auto c =
          qlt::adapters::l4q_codes(w_prime, init.scale * 0.9, init.offset + init.scale * 0.3, q);
      const auto blocks = qlt::adapters::l4q_to_int4(c, q);
      REQUIRE(blocks.shape == std::vector<int64_t>{out, in});
      REQUIRE(blocks.group_size == g);
      REQUIRE(blocks.blocks.sizes() == at::IntArrayRef({out, in / g, 4 + half}));

      // The block bytes built by hand from quant/int4.h's layout: fp16 d, fp16 m, then byte j
      // holding code j (low nibble) and code j + g/2 (high nibble).
      auto expected = at::empty({out, in / g, 4 + half}, at::kByte);
      const auto codes = c.codes.contiguous();
      const auto d16 = c.d.contiguous(), m16 = c.m.contiguous();
      for (int64_t i = 0; i < out; ++i) {
        for (int64_t k = 0; k < in / g; ++k) {
          uint8_t* blk = expected.mutable_data_ptr<uint8_t>() + (i * (in / g) + k) * (4 + half);
          const uint16_t db = d16.const_data_ptr<at::Half>()[i * (in / g) + k].x;
          const uint16_t mb = m16.const_data_ptr<at::Half>()[i * (in / g) + k].x;
          std::memcpy(blk, &db, 2);
          std::memcpy(blk + 2, &mb, 2);
          const uint8_t* qrow = codes.const_data_ptr<uint8_t>() + i * in + k * g;
          for (int64_t j = 0; j < half; ++j) {
            blk[4 + j] = static_cast<uint8_t>(qrow[j] | (qrow[j + half] << 4));
          }
        }
      }
      CHECK(at::equal(blocks.blocks, expected));

      const auto wq = qlt::adapters::l4q_dequantize(c, q);  // [out, in] fp32
      CHECK(bitwise_equal(qlt::quant::dequantize_int4(blocks, at::kFloat), wq));
      if (g == 32 && bits == 4) {
        // GGUF Q4_1 as read from a file: the same bytes wrapped by int4_from_q4_1.
        const auto bytes = expected.contiguous();
        const auto q41 = qlt::quant::int4_from_q4_1(
            {bytes.const_data_ptr<uint8_t>(), static_cast<size_t>(bytes.numel())}, out, in,
            at::kFloat);
        CHECK(bitwise_equal(qlt::quant::dequantize_int4(q41), wq));
      }
    }
  }
}

TEST_CASE("L4Q quantizer options are checked", "[adapters][l4q][errors]") {
  CHECK(qlt::adapters::l4q_qmax({4, 32}) == 15);
  CHECK(qlt::adapters::l4q_qmax({3, 32}) == 7);
  CHECK(qlt::adapters::l4q_gradient_scale({4, 32}) == Approx(1.0 / std::sqrt(32.0 * 15)));
  CHECK(qlt::adapters::l4q_chunk_rows(4096) == 256);
  CHECK(qlt::adapters::l4q_chunk_rows(4096, 100) == 1);
  CHECK_THROWS_WITH(qlt::adapters::check_l4q_quantizer({2, 32}),
                    Catch::Matchers::Contains("L4Q bits must be 3 or 4, got 2"));
  CHECK_THROWS_WITH(qlt::adapters::check_l4q_quantizer({4, 0}),
                    Catch::Matchers::Contains("L4Q group size"));
}
