#include "model/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>

namespace qlt::model {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

GenerateResult generate(const LlamaModel& model, const std::vector<int64_t>& prompt,
                        const GenerateOptions& options,
                        const std::function<void(int64_t)>& on_token) {
  TORCH_CHECK(!prompt.empty(), "generate: the prompt has no tokens");
  TORCH_CHECK(options.max_new_tokens >= 1, "generate: max_new_tokens must be >= 1");
  at::NoGradGuard no_grad;
  const auto n = static_cast<int64_t>(prompt.size());
  auto cache = make_kv_cache(model.config, 1, n + std::min<int64_t>(options.max_new_tokens, 256),
                             model.compute_dtype, model.device());
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  // hidden [1, t, hidden] -> logits of the last position [vocab].
  const auto last_logits = [&](const at::Tensor& hidden) {
    return at::linear(hidden.select(1, hidden.size(1) - 1), model.weights.lm_head).squeeze(0);
  };

  GenerateResult result;
  auto start = std::chrono::steady_clock::now();
  auto logits =
      last_logits(forward_cached(model, at::tensor(prompt, at::kLong).unsqueeze(0), cache));
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const int64_t id = next_token(logits, options.sampling, generator);
    if (step == 0) {
      result.prompt_seconds = seconds_since(start);
      start = std::chrono::steady_clock::now();
    }
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), id) != options.stop_ids.end()) {
      result.stop_id = id;
      break;
    }
    result.ids.push_back(id);
    if (on_token) on_token(id);
    if (step + 1 == options.max_new_tokens) break;
    if (cache.length == cache.capacity()) cache.grow(2 * cache.capacity());
    logits = last_logits(forward_cached(model, at::full({1, 1}, id, at::kLong), cache));
  }
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace qlt::model
