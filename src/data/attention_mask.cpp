#include "data/attention_mask.h"

namespace qlt::data {

at::Tensor packed_attention_mask(const at::Tensor& segment_ids) {
  TORCH_CHECK(segment_ids.dim() == 2 && segment_ids.scalar_type() == at::kLong,
              "packed_attention_mask: segment_ids must be [B, T] int64, got ", segment_ids.sizes(),
              " ", segment_ids.scalar_type());
  const int64_t T = segment_ids.size(1);
  auto opts = segment_ids.options().dtype(at::kBool);
  auto causal = at::ones({T, T}, opts).tril();                        // [T, T]
  auto q = segment_ids.unsqueeze(2), k = segment_ids.unsqueeze(1);    // [B, T, 1], [B, 1, T]
  auto same = q.eq(k).logical_and(q.ne(0));                           // [B, T, T]
  auto diagonal = at::eye(T, opts);                                   // [T, T]
  return same.logical_and(causal).logical_or(diagonal).unsqueeze(1);  // [B, 1, T, T]
}

}  // namespace qlt::data
