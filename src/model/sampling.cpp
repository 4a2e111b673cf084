#include "model/sampling.h"

#include <c10/util/Exception.h>

#include <limits>

namespace qlt::model {

at::Tensor top_p_filter(const at::Tensor& logits, double top_p) {
  TORCH_CHECK(logits.dim() == 1 && logits.scalar_type() == at::kFloat,
              "top_p_filter: logits must be [vocab] fp32, got ", logits.sizes(), " ",
              logits.scalar_type());
  TORCH_CHECK(top_p > 0.0, "top_p_filter: top_p must be > 0, got ", top_p);
  if (top_p >= 1.0) return logits;
  // transformers 4.57 generation/logits_process.py, TopPLogitsWarper.__call__.
  auto [sorted, indices] = logits.sort(/*dim=*/-1, /*descending=*/false);
  auto cumulative = sorted.softmax(-1).cumsum(-1);
  auto remove_sorted = cumulative <= (1.0 - top_p);
  remove_sorted.narrow(0, logits.size(0) - 1, 1).fill_(false);  // keep at least one
  auto remove = at::zeros_like(remove_sorted).scatter(0, indices, remove_sorted);
  return logits.masked_fill(remove, -std::numeric_limits<float>::infinity());
}

int64_t next_token(const at::Tensor& logits, const SamplingOptions& options,
                   at::Generator& generator) {
  TORCH_CHECK(logits.dim() == 1 && logits.size(0) > 0, "next_token: logits must be [vocab], got ",
              logits.sizes());
  TORCH_CHECK(options.temperature >= 0.0 && options.top_p > 0.0 && options.top_p <= 1.0,
              "next_token: temperature ", options.temperature, " must be >= 0 and top_p ",
              options.top_p, " in (0, 1]");
  auto scores = logits.detach().to(at::kCPU, at::kFloat);
  if (options.temperature == 0.0) return scores.argmax().item<int64_t>();
  scores = top_p_filter(scores / options.temperature, options.top_p);
  return at::multinomial(scores.softmax(-1), /*num_samples=*/1, /*replacement=*/false, generator)
      .item<int64_t>();
}

}  // namespace qlt::model
