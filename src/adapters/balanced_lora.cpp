#include "adapters/balanced_lora.h"

#include <bit>
#include <vector>

#include "int4_layout.h"

namespace qlt::adapters {

// The INT4 block stores m as little-endian fp16 bits; merge_into_int4_offsets reads and writes
// them through an fp16 view of the block bytes.
static_assert(std::endian::native == std::endian::little,
              "merge_into_int4_offsets assumes a little-endian host (fp16 bits in INT4 blocks)");

at::Tensor pool_features(const at::Tensor& x, int64_t p) {
  TORCH_CHECK(p >= 1, "pool_features: window must be >= 1, got ", p);
  TORCH_CHECK(x.dim() >= 1, "pool_features: x must have a feature dimension, got shape ",
              x.sizes());
  if (p == 1) return x;
  const int64_t in = x.size(-1);
  TORCH_CHECK(in % p == 0, "pool_features: ", in, " features (x shape ", x.sizes(),
              ") are not a multiple of the window ", p);
  // [..., in] -> [..., in/p, p] -> mean over the window.
  return x.unflatten(-1, {in / p, p}).mean(-1);
}

at::Tensor repeat_features(const at::Tensor& y, int64_t k) {
  TORCH_CHECK(k >= 1, "repeat_features: repeat must be >= 1, got ", k);
  TORCH_CHECK(y.dim() >= 1, "repeat_features: y must have a feature dimension, got shape ",
              y.sizes());
  if (k == 1) return y;
  // [..., n] -> [..., n, 1] -> [..., n, k] (a view) -> [..., n*k] (one copy).
  std::vector<int64_t> sizes = y.sizes().vec();
  sizes.push_back(k);
  return y.unsqueeze(-1).expand(sizes).flatten(-2);
}

namespace {

// A [R, in/pool], B [out/repeat, R], pool, repeat >= 1.
void check_pooled_lora(const char* op, const at::Tensor& A, const at::Tensor& B, int64_t pool,
                       int64_t repeat) {
  TORCH_CHECK(pool >= 1 && repeat >= 1, op, ": pool and repeat must be >= 1, got pool ", pool,
              ", repeat ", repeat);
  TORCH_CHECK(A.defined() && B.defined() && A.dim() == 2 && B.dim() == 2 && B.size(1) == A.size(0),
              op, ": need A [R, in/pool] and B [out/repeat, R], got A ",
              A.defined() ? A.sizes() : at::IntArrayRef{}, ", B ",
              B.defined() ? B.sizes() : at::IntArrayRef{});
  TORCH_CHECK(A.scalar_type() == B.scalar_type() && A.device() == B.device(), op,
              ": A and B must share dtype and device, got ", A.scalar_type(), " on ", A.device(),
              " and ", B.scalar_type(), " on ", B.device());
}

}  // namespace

at::Tensor pooled_lora_delta(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
                             int64_t pool, int64_t repeat, double scaling) {
  check_pooled_lora("pooled_lora_delta", A, B, pool, repeat);
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == A.size(1) * pool, "pooled_lora_delta: x shape ",
              x.sizes(), " does not fit A ", A.sizes(), " with pool ", pool, " (need ",
              A.size(1) * pool, " input features)");
  auto x_adapter = x.to(A.scalar_type());  // PEFT's _cast_input_dtype: [..., in]
  // [..., in] -> [..., in/pool] -> [..., R] -> [..., out/repeat], same ops as adapted_linear.
  auto small = at::linear(at::linear(pool_features(x_adapter, pool), A), B) * scaling;
  return repeat_features(small, repeat);  // [..., out]
}

ExpandedLora expand_pooled_lora(const at::Tensor& A, const at::Tensor& B, int64_t pool,
                                int64_t repeat) {
  check_pooled_lora("expand_pooled_lora", A, B, pool, repeat);
  // A'[:, i] = A[:, i / pool] / pool;  B'[o, :] = B[o / repeat, :].
  auto a = pool == 1 ? A.clone() : repeat_features(A, pool) / static_cast<double>(pool);
  auto b = repeat == 1 ? B.clone() : repeat_features(B.t(), repeat).t().contiguous();
  return {a, b};
}

at::Tensor pooled_lora_window_delta(const at::Tensor& A, const at::Tensor& B, int64_t pool,
                                    int64_t repeat, double scaling) {
  check_pooled_lora("pooled_lora_window_delta", A, B, pool, repeat);
  // [out/repeat, R] x [R, in/pool] -> [out/repeat, in/pool], one multiply by scaling / pool.
  auto small = at::matmul(B, A) * (scaling / static_cast<double>(pool));
  if (repeat == 1) return small;
  return repeat_features(small.t(), repeat).t().contiguous();  // [out, in/pool]
}

quant::Int4Tensor merge_into_int4_offsets(const quant::Int4Tensor& base,
                                          const at::Tensor& window_delta) {
  const int64_t g = base.group_size;
  TORCH_CHECK(int4::valid_group_size(g) && base.shape.size() == 2 && base.shape[1] % g == 0,
              "merge_into_int4_offsets: bad INT4 tensor (group size ", g, ", logical shape ",
              at::IntArrayRef(base.shape), ")");
  const int64_t out = base.shape[0], groups = base.shape[1] / g;
  TORCH_CHECK(base.blocks.defined() && base.blocks.scalar_type() == at::kByte &&
                  base.blocks.sizes() == at::IntArrayRef({out, groups, int4::block_bytes(g)}),
              "merge_into_int4_offsets: INT4 blocks must be uint8 [", out, ", ", groups, ", ",
              int4::block_bytes(g), "], got ",
              base.blocks.defined() ? base.blocks.sizes() : at::IntArrayRef{});
  TORCH_CHECK(window_delta.defined() && window_delta.dim() == 2 && window_delta.size(0) == out &&
                  window_delta.size(1) == groups,
              "merge_into_int4_offsets: the update must be [out, in / group_size] = [", out, ", ",
              groups, "] (the pooling window must equal the INT4 group size ", g,
              ") for an INT4 weight [", out, ", ", base.shape[1], "], got ",
              window_delta.defined() ? window_delta.sizes() : at::IntArrayRef{});
  TORCH_CHECK(window_delta.scalar_type() == at::kFloat,
              "merge_into_int4_offsets: the update must be fp32, got ", window_delta.scalar_type());
  TORCH_CHECK(window_delta.device() == base.blocks.device(),
              "merge_into_int4_offsets: the update is on ", window_delta.device(),
              ", the INT4 weight on ", base.blocks.device());

  at::NoGradGuard no_grad;
  quant::Int4Tensor merged = base;
  merged.blocks = base.blocks.contiguous().clone();  // [out, groups, block bytes], owned
  // The fp16 offsets, as a view into the copied blocks: bytes [kMOffset, kMOffset + 2) of every
  // block -> [out, groups, 1] fp16 (block sizes and the offset are even, so the view is valid).
  auto m = merged.blocks.narrow(2, int4::kMOffset, 2).view(at::kHalf);
  auto m32 = m.squeeze(-1).to(at::kFloat);  // exact widening
  auto delta = window_delta.detach();
  auto merged_m = (m32 + delta).to(at::kHalf);  // one fp32 add, then round to nearest even fp16
  // Overflow of fp16 (|m + δ| >= 65520) would silently turn the weights into inf.
  auto overflow = merged_m.isfinite().logical_not() & m32.isfinite() & delta.isfinite();
  TORCH_CHECK(!overflow.any().item<bool>(),
              "merge_into_int4_offsets: ", overflow.sum().item<int64_t>(),
              " merged group offsets overflow fp16 (|m + delta| >= 65520)");
  m.copy_(merged_m.unsqueeze(-1));
  return merged;
}

}  // namespace qlt::adapters
