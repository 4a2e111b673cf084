#include "train/evaluate.h"

#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>

#include "data/text_dataset.h"
#include "model/causal_lm_loss.h"

namespace qlt::train {

EvalResult evaluate(const model::LlamaModel& model,
                    const std::vector<std::vector<int64_t>>& windows, int64_t batch_size,
                    int64_t max_batches, int64_t pad_id) {
  at::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  EvalResult result;
  double loss_sum = 0;  // summed in double across batches
  int64_t batches = 0;
  for (size_t begin = 0; begin < windows.size(); begin += static_cast<size_t>(batch_size)) {
    if (max_batches > 0 && batches == max_batches) break;
    size_t end = std::min(windows.size(), begin + static_cast<size_t>(batch_size));
    auto batch = data::collate(windows, begin, end, pad_id);
    auto hidden = model.hidden_states(batch.input_ids);
    auto loss = model::causal_lm_loss(hidden, model.weights.lm_head, batch.labels);
    loss_sum += loss.sum.item<double>();
    result.predicted_tokens += loss.count;
    result.windows += static_cast<int64_t>(end - begin);
    ++batches;
  }
  result.loss =
      result.predicted_tokens ? loss_sum / static_cast<double>(result.predicted_tokens) : 0;
  result.perplexity = std::exp(result.loss);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace qlt::train
