#include "train/evaluate.h"

#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <utility>

#include "core/errors.h"
#include "data/batcher.h"
#include "data/examples.h"
#include "data/text_dataset.h"
#include "model/causal_lm_loss.h"

namespace qlt::train {

namespace {

// Batches [begin, end) of `count` items (input_ids, labels) from make_batch, at most
// max_batches of them when > 0; the loss is summed in double across batches.
EvalResult evaluate_batches(
    const model::LlamaModel& model, size_t count, int64_t batch_size, int64_t max_batches,
    const std::function<std::pair<at::Tensor, at::Tensor>(size_t, size_t)>& make_batch) {
  at::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  EvalResult result;
  double loss_sum = 0;
  int64_t batches = 0;
  for (size_t begin = 0; begin < count; begin += static_cast<size_t>(batch_size)) {
    if (max_batches > 0 && batches == max_batches) break;
    const size_t end = std::min(count, begin + static_cast<size_t>(batch_size));
    const auto [input_ids, labels] = make_batch(begin, end);
    auto hidden = model.hidden_states(input_ids);
    auto loss = model::causal_lm_loss(hidden, model.weights.lm_head, labels);
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

}  // namespace

EvalResult evaluate(const model::LlamaModel& model,
                    const std::vector<std::vector<int64_t>>& windows, int64_t batch_size,
                    int64_t max_batches, int64_t pad_id) {
  return evaluate_batches(model, windows.size(), batch_size, max_batches,
                          [&](size_t begin, size_t end) {
                            auto batch = data::collate(windows, begin, end, pad_id);
                            return std::pair{batch.input_ids, batch.labels};
                          });
}

EvalResult evaluate_examples(const model::LlamaModel& model,
                             const std::vector<data::Example>& examples, int64_t batch_size,
                             int64_t max_batches, int64_t pad_id) {
  return evaluate_batches(model, examples.size(), batch_size, max_batches,
                          [&](size_t begin, size_t end) {
                            auto batch = data::collate_examples(examples, begin, end, pad_id);
                            return std::pair{batch.input_ids, batch.labels};
                          });
}

at::Tensor EvalSet::first_batch(int64_t batch_size, int64_t pad_id) const {
  const size_t end = std::min(size(), static_cast<size_t>(batch_size));
  return by_windows() ? data::collate(windows, 0, end, pad_id).input_ids
                      : data::collate_examples(examples, 0, end, pad_id).input_ids;
}

EvalSet read_eval_set(const std::filesystem::path& file, const data::DataOptions& options,
                      const tokenizer::Tokenizer& tokenizer) {
  EvalSet out;
  if (options.format == "text") {
    out.windows =
        data::make_eval_windows(data::read_documents(file, "text"), tokenizer, options.max_seq_len);
    if (out.windows.empty()) user_error("dataset {} yields no token to predict", file.string());
  } else {
    out.examples = data::read_examples(file, tokenizer, options).examples;
  }
  return out;
}

EvalResult evaluate_set(const model::LlamaModel& model, const EvalSet& set, int64_t batch_size,
                        int64_t max_batches, int64_t pad_id) {
  return set.by_windows() ? evaluate(model, set.windows, batch_size, max_batches, pad_id)
                          : evaluate_examples(model, set.examples, batch_size, max_batches, pad_id);
}

}  // namespace qlt::train
