// Autoregressive generation with the KV cache (generate command): the prompt in one forward,
// then one position per new token, each chosen by model/sampling.h, until a stop token or
// max_new_tokens. As transformers' generate for one sequence: the stop token ends generation
// (here it is reported, not returned among the new tokens).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "model/llama.h"
#include "model/sampling.h"

namespace qlt::model {

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  SamplingOptions sampling;       // temperature 0 = greedy
  uint64_t seed = 0;              // of the CPU generator that sampling draws from
  std::vector<int64_t> stop_ids;  // EOS, a chat template's end-of-turn token
};

struct GenerateResult {
  std::vector<int64_t> ids;        // the new tokens, without the stop token
  std::optional<int64_t> stop_id;  // the stop token that ended generation; nullopt: the limit
  double prompt_seconds = 0.0;     // the prompt's forward and the first choice
  double decode_seconds = 0.0;     // every later step
};

// prompt: [n >= 1] token ids. on_token(id) runs for each new token as soon as it is chosen (not
// for the stop token), so a caller can stream. The cache starts at n + min(max_new_tokens, 256)
// positions and doubles when full, so a large max_new_tokens costs memory only when used.
GenerateResult generate(const LlamaModel& model, const std::vector<int64_t>& prompt,
                        const GenerateOptions& options,
                        const std::function<void(int64_t)>& on_token = {});

}  // namespace qlt::model
