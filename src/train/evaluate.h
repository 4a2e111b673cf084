// Loss and perplexity of a model on tokenized windows (no gradients).
#pragma once

#include <cstdint>
#include <vector>

#include "data/example.h"
#include "model/llama.h"

namespace qlt::train {

struct EvalResult {
  double loss = 0;        // mean next-token cross-entropy (nats) over predicted tokens
  double perplexity = 0;  // exp(loss)
  int64_t windows = 0;    // windows evaluated
  int64_t predicted_tokens = 0;
  double seconds = 0;
};

// Runs windows in batches of batch_size (right-padded; padding never reaches the loss) and
// stops after max_batches batches when it is > 0. The result does not depend on batch_size
// up to floating-point summation order.
EvalResult evaluate(const model::LlamaModel& model,
                    const std::vector<std::vector<int64_t>>& windows, int64_t batch_size,
                    int64_t max_batches, int64_t pad_id);

// The same over examples (alpaca / chat / text records with their loss masks), one per row in
// file order: only trained tokens count (EvalResult::windows counts examples).
EvalResult evaluate_examples(const model::LlamaModel& model,
                             const std::vector<data::Example>& examples, int64_t batch_size,
                             int64_t max_batches, int64_t pad_id);

}  // namespace qlt::train
