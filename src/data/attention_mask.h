// The attention mask that packed rows need: causal and within one segment.
#pragma once

#include <ATen/ATen.h>

namespace qlt::data {

// segment_ids [B, T] int64 (TrainBatch::segment_ids) -> [B, 1, T, T] bool, true where query
// t may attend to key s: s <= t and segment[s] == segment[t] != 0. A padding query
// (segment 0) attends to itself only, so no softmax row is empty (an empty row gives NaN
// that the backward pass would spread). Broadcasts over heads in SDPA's attn_mask.
at::Tensor packed_attention_mask(const at::Tensor& segment_ids);

}  // namespace qlt::data
