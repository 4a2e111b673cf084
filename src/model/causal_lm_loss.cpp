#include "model/causal_lm_loss.h"

namespace qlt::model {

LossSum causal_lm_loss(const at::Tensor& hidden, const at::Tensor& lm_head,
                       const at::Tensor& labels, int64_t chunk_size) {
  TORCH_CHECK(hidden.dim() == 3 && labels.dim() == 2 && hidden.size(0) == labels.size(0) &&
                  hidden.size(1) == labels.size(1),
              "causal_lm_loss: hidden [B, T, H] and labels [B, T] disagree: ", hidden.sizes(),
              " vs ", labels.sizes());
  TORCH_CHECK(chunk_size > 0, "causal_lm_loss: chunk_size must be positive");
  const int64_t T = hidden.size(1);
  LossSum out{at::zeros({}, hidden.options().dtype(at::kFloat)), 0};
  if (T < 2) return out;
  // [B, T-1, H] predicting [B, T-1] targets, flattened to rows.
  auto h = hidden.narrow(1, 0, T - 1).reshape({-1, hidden.size(2)});
  auto targets = labels.narrow(1, 1, T - 1).reshape({-1}).to(hidden.device());
  const int64_t rows = h.size(0);
  for (int64_t start = 0; start < rows; start += chunk_size) {
    const int64_t n = std::min(chunk_size, rows - start);
    auto t = targets.narrow(0, start, n);
    const int64_t counted = t.ne(kIgnoreIndex).sum().item<int64_t>();
    if (counted == 0) continue;
    auto logits = at::linear(h.narrow(0, start, n), lm_head).to(at::kFloat);
    out.sum = out.sum +
              at::cross_entropy_loss(logits, t, /*weight=*/{}, at::Reduction::Sum, kIgnoreIndex);
    out.count += counted;
  }
  return out;
}

}  // namespace qlt::model
