// Loss and perplexity of a model on tokenized windows (no gradients).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "data/data_options.h"
#include "data/example.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

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

// The eval set of a run: format text -> the documents cut into windows (every token
// predicted, as `eval` has always measured); alpaca / chat -> examples with their loss masks
// (only outputs / assistant turns count, as in training).
struct EvalSet {
  std::vector<std::vector<int64_t>> windows;
  std::vector<data::Example> examples;
  bool by_windows() const { return examples.empty(); }
  size_t size() const { return by_windows() ? windows.size() : examples.size(); }
  bool empty() const { return size() == 0; }
  const char* unit() const { return by_windows() ? "windows" : "examples"; }
  // input_ids [B, T] of the first min(batch_size, size()) sequences, right-padded.
  at::Tensor first_batch(int64_t batch_size, int64_t pad_id) const;
};

// Reads `file` as options.format says. UserError (naming the file) when a text file yields no
// token to predict; read_examples' errors otherwise.
EvalSet read_eval_set(const std::filesystem::path& file, const data::DataOptions& options,
                      const tokenizer::Tokenizer& tokenizer);

// evaluate or evaluate_examples, whichever the set holds.
EvalResult evaluate_set(const model::LlamaModel& model, const EvalSet& set, int64_t batch_size,
                        int64_t max_batches, int64_t pad_id);

}  // namespace qlt::train
