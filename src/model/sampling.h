// Choosing the next token from the logits of the last position (generate): greedy, or sampled
// with a temperature and nucleus (top-p) filtering, in the order and with the arithmetic of
// transformers' generate (TemperatureLogitsWarper, then TopPLogitsWarper, then
// torch.multinomial over the softmax).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace qlt::model {

struct SamplingOptions {
  double temperature = 0.0;  // 0 = greedy (argmax); else logits / temperature, then sample
  double top_p = 1.0;        // (0, 1]: keep the most probable tokens whose mass reaches top_p
};

// logits [vocab] (any float dtype, any device) -> the next token id. Greedy takes the first
// index of the maximum (as torch.argmax). Sampling runs on the CPU in fp32 and draws from
// `generator` (a CPU generator), so a seed gives the same tokens on every device for the same
// logits. The config checks the options (temperature >= 0, 0 < top_p <= 1); here a bad one
// is an internal error (TORCH_CHECK).
int64_t next_token(const at::Tensor& logits, const SamplingOptions& options,
                   at::Generator& generator);

// transformers' TopPLogitsWarper (min_tokens_to_keep = 1) on logits [vocab] fp32: sort
// ascending, cumulative softmax, remove the tokens whose cumulative probability is
// <= 1 - top_p, but never the most probable one. That keeps the smallest set of most probable
// tokens whose probability sums to at least top_p. Removed tokens get -inf. top_p >= 1 returns
// the logits unchanged (transformers adds no warper then).
at::Tensor top_p_filter(const at::Tensor& logits, double top_p);

}  // namespace qlt::model
