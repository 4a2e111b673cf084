#include "adapters/l4q.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "core/errors.h"

namespace qlt::adapters {
namespace {

// The fp16 block bytes of l4q_to_int4 are the in-memory bytes of fp16 tensors; the INT4 layout
// is little-endian (as are x86, ARM and CUDA devices).
static_assert(std::endian::native == std::endian::little);

// Scratch buffers, one per (purpose, device, dtype), grown to the largest weight seen and
// reused by every L4Q layer on this thread (as frozen_linear's): a buffer's values live only
// within one forward or one backward call.
enum class Scratch { kWq, kBase };

at::Tensor scratch(Scratch purpose, at::Device device, at::ScalarType dtype, int64_t rows,
                   int64_t cols) {
  thread_local std::map<std::tuple<Scratch, std::string, at::ScalarType>, at::Tensor> buffers;
  auto& buffer = buffers[{purpose, device.str(), dtype}];
  const int64_t numel = rows * cols;
  if (!buffer.defined() || buffer.numel() < numel) {
    buffer = at::empty({numel}, at::TensorOptions().dtype(dtype).device(device));
  }
  return buffer.narrow(0, 0, numel).view({rows, cols});
}

// Rows of W0 = base.materialize(fp32), [n, in] fp32, chunk by chunk. Dense weights are cast per
// chunk; INT4 groups lie within a row, so a chunk dequantizes only its rows' blocks; other
// formats (NF4: blocks run across rows) are dequantized whole into a scratch buffer once.
class BaseRows {
 public:
  explicit BaseRows(const FrozenWeight& base) : base_(base) {
    if (std::holds_alternative<at::Tensor>(base.stored) ||
        std::holds_alternative<quant::Int4Tensor>(base.stored)) {
      return;
    }
    full_ = scratch(Scratch::kBase, quant::stored_device(base.stored), at::kFloat,
                    base.out_features(), base.in_features());
    quant::dequantize_into(base.stored, full_);
  }

  at::Tensor rows(int64_t r0, int64_t n) const {
    if (full_.defined()) return full_.narrow(0, r0, n);
    if (const auto* t = std::get_if<at::Tensor>(&base_.stored)) {
      return t->narrow(0, r0, n).to(at::kFloat);  // exact for bf16/fp16
    }
    const auto& q = std::get<quant::Int4Tensor>(base_.stored);
    quant::Int4Tensor part = q;
    part.blocks = q.blocks.reshape({q.shape.at(0), -1}).narrow(0, r0, n);
    part.shape = {n, q.shape.at(1)};
    return quant::dequantize_int4(part, at::kFloat);
  }

 private:
  const FrozenWeight& base_;
  at::Tensor full_;  // [out, in] fp32, formats read whole
};

// d = fp16(max(scale, 2^-14)) and m = fp16(offset), [out, in/g] fp16.
at::Tensor fp16_d(const at::Tensor& scale) {
  return scale.to(at::kFloat).clamp_min(kL4qMinScale).to(at::kHalf);
}
at::Tensor fp16_m(const at::Tensor& offset) { return offset.to(at::kFloat).to(at::kHalf); }

// u = (w' - m) / d over groups: w' [n, in] fp32, d32 and m32 [n, in/g, 1] fp32 -> [n, in/g, g].
at::Tensor grouped_u(const at::Tensor& w_prime, const at::Tensor& d32, const at::Tensor& m32,
                     int64_t g) {
  return (w_prime.reshape({w_prime.size(0), -1, g}) - m32) / d32;
}

// clamp(round(u), 0, Qp) as fp32 (round half to even), same shape as u.
at::Tensor codes_of(const at::Tensor& u, int64_t qp) {
  return at::round(u).clamp_(0, static_cast<double>(qp));
}

// Wq = d * q + m in fp32: one multiply, one add (the Q4_1 rule); q [n, G, g], d32 m32 [n, G, 1].
at::Tensor wq_of(const at::Tensor& q, const at::Tensor& d32, const at::Tensor& m32) {
  return at::mul(q, d32).add_(m32);
}

// W' rows [r0, r0 + n): W0 + (B_rows A) * scaling, [n, in] fp32.
at::Tensor w_prime_rows(const BaseRows& w0, const at::Tensor& A, const at::Tensor& B,
                        double scaling, int64_t r0, int64_t n) {
  return w0.rows(r0, n) + at::mm(B.narrow(0, r0, n), A) * scaling;
}

void check_linear_inputs(const at::Tensor& x, const FrozenWeight& base, const at::Tensor& A,
                         const at::Tensor& B, const at::Tensor& scale, const at::Tensor& offset,
                         const L4qQuantizer& q) {
  check_l4q_quantizer(q);
  const int64_t out = base.out_features(), in = base.in_features();
  TORCH_CHECK(in % q.group_size == 0, "l4q_linear: in_features ", in,
              " is not a multiple of the group size ", q.group_size);
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == in, "l4q_linear: x must be [..., ", in, "], got ",
              x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 ||
                  x.scalar_type() == at::kHalf,
              "l4q_linear: x must be fp32, bf16 or fp16, got ", x.scalar_type());
  TORCH_CHECK(
      A.dim() == 2 && A.size(1) == in && B.dim() == 2 && B.size(0) == out && B.size(1) == A.size(0),
      "l4q_linear: A must be [r, ", in, "] and B [", out, ", r], got ", A.sizes(), " and ",
      B.sizes());
  const std::vector<int64_t> groups = {out, in / q.group_size};
  TORCH_CHECK(scale.sizes() == at::IntArrayRef(groups) && offset.sizes() == at::IntArrayRef(groups),
              "l4q_linear: scale and offset must be [", out, ", ", in / q.group_size, "], got ",
              scale.sizes(), " and ", offset.sizes());
  for (const auto* t : {&A, &B, &scale, &offset}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, "l4q_linear: A, B, scale, offset must be fp32");
    TORCH_CHECK(t->device() == x.device(), "l4q_linear: A, B, scale, offset must be on ",
                x.device());
  }
  TORCH_CHECK(quant::stored_device(base.stored) == x.device(), "l4q_linear: the base is on ",
              quant::stored_device(base.stored), ", x on ", x.device());
}

// y = x Wq^T with Wq rebuilt from the frozen base, A, B, scale, offset. Saves x, A, B, scale,
// offset and a pointer to the base (owned by the model, which outlives the graph); backward
// recomputes W', u and the masks chunk by chunk.
struct L4qLinearFunction : public torch::autograd::Function<L4qLinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& A, const at::Tensor& B, const at::Tensor& scale,
                            const at::Tensor& offset, const FrozenWeight* base, double scaling,
                            int64_t bits, int64_t group_size, int64_t chunk_elements) {
    const L4qQuantizer q{bits, group_size};
    const int64_t out = base->out_features(), in = base->in_features(), g = group_size;
    const int64_t qp = l4q_qmax(q), rows = l4q_chunk_rows(in, chunk_elements);
    const at::Tensor d32 = fp16_d(scale).to(at::kFloat).unsqueeze(-1);   // [out, G, 1]
    const at::Tensor m32 = fp16_m(offset).to(at::kFloat).unsqueeze(-1);  // [out, G, 1]
    const BaseRows w0(*base);
    at::Tensor wq = scratch(Scratch::kWq, x.device(), x.scalar_type(), out, in);  // [out, in]
    for (int64_t r0 = 0; r0 < out; r0 += rows) {
      const int64_t n = std::min(rows, out - r0);
      const auto dn = d32.narrow(0, r0, n), mn = m32.narrow(0, r0, n);
      const auto u = grouped_u(w_prime_rows(w0, A, B, scaling, r0, n), dn, mn, g);  // [n, G, g]
      wq.narrow(0, r0, n).view({n, -1, g}).copy_(wq_of(codes_of(u, qp), dn, mn));
    }
    ctx->save_for_backward({x, A, B, scale, offset});
    ctx->saved_data["base"] = reinterpret_cast<int64_t>(base);
    ctx->saved_data["scaling"] = scaling;
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["group_size"] = group_size;
    ctx->saved_data["chunk_elements"] = chunk_elements;
    return at::linear(x, wq);  // [..., in] x [out, in]^T -> [..., out]
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    at::NoGradGuard no_grad;  // no double backward
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &A = saved[1], &B = saved[2], &scale = saved[3],
                     &offset = saved[4];
    const auto* base = reinterpret_cast<const FrozenWeight*>(ctx->saved_data["base"].toInt());
    const double scaling = ctx->saved_data["scaling"].toDouble();
    const L4qQuantizer q{ctx->saved_data["bits"].toInt(), ctx->saved_data["group_size"].toInt()};
    const int64_t chunk_elements = ctx->saved_data["chunk_elements"].toInt();
    const bool need_x = ctx->needs_input_grad(0), need_a = ctx->needs_input_grad(1),
               need_b = ctx->needs_input_grad(2), need_s = ctx->needs_input_grad(3),
               need_o = ctx->needs_input_grad(4);

    const int64_t out = base->out_features(), in = base->in_features(), g = q.group_size;
    const int64_t qp = l4q_qmax(q), rows = l4q_chunk_rows(in, chunk_elements);
    const double gs = l4q_gradient_scale(q);
    const auto f32 = A.options();
    const at::Tensor grad_y = grad_outputs[0].to(x.scalar_type());       // [..., out]
    const at::Tensor d32 = fp16_d(scale).to(at::kFloat).unsqueeze(-1);   // [out, G, 1]
    const at::Tensor m32 = fp16_m(offset).to(at::kFloat).unsqueeze(-1);  // [out, G, 1]

    const bool need_w = need_a || need_b || need_s || need_o;
    at::Tensor go, xf;  // [T, out], [T, in] fp32: G = go^T xf
    if (need_w) {
      go = grad_y.reshape({-1, out}).to(at::kFloat);
      xf = x.reshape({-1, in}).to(at::kFloat);
    }
    at::Tensor wq, grad_a, grad_b, grad_s, grad_o;
    if (need_x) wq = scratch(Scratch::kWq, x.device(), x.scalar_type(), out, in);
    if (need_a) grad_a = at::zeros({A.size(0), in}, f32);   // [r, in], summed over chunks
    if (need_b) grad_b = at::empty({out, B.size(1)}, f32);  // [out, r]
    if (need_s) grad_s = at::empty(scale.sizes(), f32);     // [out, G]
    if (need_o) grad_o = at::empty(offset.sizes(), f32);    // [out, G]

    const BaseRows w0(*base);
    for (int64_t r0 = 0; r0 < out; r0 += rows) {
      const int64_t n = std::min(rows, out - r0);
      const auto dn = d32.narrow(0, r0, n), mn = m32.narrow(0, r0, n);
      const auto u = grouped_u(w_prime_rows(w0, A, B, scaling, r0, n), dn, mn, g);  // [n, G, g]
      const auto codes = codes_of(u, qp);                                           // [n, G, g]
      if (need_x) wq.narrow(0, r0, n).view({n, -1, g}).copy_(wq_of(codes, dn, mn));
      if (!need_w) continue;
      // G rows [r0, r0 + n) = (grad_y^T x)[rows]: [n, T] x [T, in] -> [n, in] -> [n, G, g]
      const auto grad_wq = at::mm(go.narrow(1, r0, n).t(), xf).view({n, -1, g});
      const auto in_range = at::logical_and(u >= 0, u <= static_cast<double>(qp));
      if (need_a || need_b) {
        // dL/d(B A) = scaling * (M G), [n, in]
        const auto p = at::where(in_range, grad_wq, 0.0).mul_(scaling).view({n, in});
        if (need_a) grad_a.addmm_(B.narrow(0, r0, n).t(), p);  // += [r, n] x [n, in]
        if (need_b) {
          auto rows_b = grad_b.narrow(0, r0, n);
          at::mm_out(rows_b, p, A.t());  // [n, in] x [in, r] -> [n, r]
        }
      }
      if (need_s) {
        // in range: round(u) - u; below: Qn = 0 = codes; above: Qp = codes.
        const auto ds = (codes - at::where(in_range, u, 0.0)).mul_(grad_wq);
        grad_s.narrow(0, r0, n).copy_(ds.sum(-1).mul_(gs));
      }
      if (need_o) grad_o.narrow(0, r0, n).copy_(at::where(in_range, 0.0, grad_wq).sum(-1).mul_(gs));
    }
    at::Tensor grad_x;
    if (need_x) grad_x = at::matmul(grad_y, wq);  // [..., out] x [out, in] -> [..., in]
    return {grad_x,       grad_a,       grad_b,       grad_s,       grad_o,
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

void check_l4q_quantizer(const L4qQuantizer& q) {
  if (q.bits != 3 && q.bits != 4) {
    user_error("L4Q bits must be 3 or 4, got {}", q.bits);
  }
  if (q.group_size < 1) {
    user_error("L4Q group size must be a positive number of inputs (e.g. 32), got {}",
               q.group_size);
  }
}

int64_t l4q_qmax(const L4qQuantizer& q) { return (int64_t{1} << q.bits) - 1; }

double l4q_gradient_scale(const L4qQuantizer& q) {
  return 1.0 / std::sqrt(static_cast<double>(q.group_size * l4q_qmax(q)));
}

int64_t l4q_chunk_rows(int64_t in_features, int64_t chunk_elements) {
  return std::max<int64_t>(1, chunk_elements / std::max<int64_t>(1, in_features));
}

L4qScaleOffset l4q_init_scale_offset(const at::Tensor& w, const L4qQuantizer& q) {
  check_l4q_quantizer(q);
  TORCH_CHECK(w.dim() == 2 && w.size(1) % q.group_size == 0,
              "l4q_init_scale_offset: w must be [out, in] with in a multiple of ", q.group_size,
              ", got ", w.sizes());
  at::NoGradGuard no_grad;
  const auto groups = w.detach().to(at::kFloat).reshape({w.size(0), -1, q.group_size});
  const auto mn = groups.amin(-1), mx = groups.amax(-1);  // [out, G]
  auto scale = (mx - mn) / static_cast<double>(l4q_qmax(q));
  scale = at::where(mx == mn, kL4qMinScale, scale);
  return {scale, mn};
}

L4qCodes l4q_codes(const at::Tensor& w_prime, const at::Tensor& scale, const at::Tensor& offset,
                   const L4qQuantizer& q) {
  check_l4q_quantizer(q);
  TORCH_CHECK(w_prime.dim() == 2 && w_prime.size(1) % q.group_size == 0,
              "l4q_codes: w' must be [out, in] with in a multiple of ", q.group_size, ", got ",
              w_prime.sizes());
  const std::vector<int64_t> groups = {w_prime.size(0), w_prime.size(1) / q.group_size};
  TORCH_CHECK(scale.sizes() == at::IntArrayRef(groups) && offset.sizes() == at::IntArrayRef(groups),
              "l4q_codes: scale and offset must be [", groups[0], ", ", groups[1], "]");
  at::NoGradGuard no_grad;
  L4qCodes c;
  c.d = fp16_d(scale.detach());
  c.m = fp16_m(offset.detach());
  const auto u = grouped_u(w_prime.detach().to(at::kFloat), c.d.to(at::kFloat).unsqueeze(-1),
                           c.m.to(at::kFloat).unsqueeze(-1), q.group_size);
  c.codes = codes_of(u, l4q_qmax(q)).to(at::kByte).reshape(w_prime.sizes());
  return c;
}

at::Tensor l4q_dequantize(const L4qCodes& c, const L4qQuantizer& q) {
  check_l4q_quantizer(q);
  const auto codes = c.codes.to(at::kFloat).reshape({c.codes.size(0), -1, q.group_size});
  return wq_of(codes, c.d.to(at::kFloat).unsqueeze(-1), c.m.to(at::kFloat).unsqueeze(-1))
      .reshape(c.codes.sizes());
}

quant::Int4Tensor l4q_to_int4(const L4qCodes& c, const L4qQuantizer& q, at::ScalarType dtype) {
  check_l4q_quantizer(q);
  quant::check_int4_group_size(q.group_size, "L4Q export to INT4 blocks");
  const int64_t out = c.codes.size(0), in = c.codes.size(1), g = q.group_size;
  TORCH_CHECK(c.codes.scalar_type() == at::kByte && in % g == 0 &&
                  c.d.sizes() == at::IntArrayRef({out, in / g}) &&
                  c.m.sizes() == at::IntArrayRef({out, in / g}) && c.d.scalar_type() == at::kHalf &&
                  c.m.scalar_type() == at::kHalf,
              "l4q_to_int4: codes [out, in] uint8 and d, m [out, in/g] fp16 expected");
  const auto codes = c.codes.reshape({out, -1, g});  // [out, G, g]
  // qs[j] = q[j] | q[j + g/2] << 4, [out, G, g/2]
  const auto qs = at::bitwise_or(codes.narrow(-1, 0, g / 2),
                                 at::bitwise_left_shift(codes.narrow(-1, g / 2, g / 2), 4));
  // fp16 bits as two little-endian bytes each: [out, G] fp16 -> [out, G, 2] uint8
  const auto d_bytes = c.d.contiguous().view(at::kByte).view({out, -1, 2});
  const auto m_bytes = c.m.contiguous().view(at::kByte).view({out, -1, 2});
  quant::Int4Tensor t;
  t.blocks = at::cat({d_bytes, m_bytes, qs}, -1).contiguous();  // [out, G, 4 + g/2]
  t.shape = {out, in};
  t.dtype = dtype;
  t.group_size = g;
  return t;
}

at::Tensor l4q_linear(const at::Tensor& x, const FrozenWeight& base, const at::Tensor& A,
                      const at::Tensor& B, const at::Tensor& scale, const at::Tensor& offset,
                      double scaling, const L4qQuantizer& q, int64_t chunk_elements) {
  check_linear_inputs(x, base, A, B, scale, offset, q);
  TORCH_CHECK(chunk_elements >= 1, "l4q_linear: chunk_elements must be positive");
  return L4qLinearFunction::apply(x, A, B, scale, offset, &base, scaling, q.bits, q.group_size,
                                  chunk_elements);
}

}  // namespace qlt::adapters
