// One tokenized training example: the ids the model reads and the labels it is trained on.
#pragma once

#include <cstdint>
#include <vector>

namespace qlt::data {

struct Example {
  std::vector<int64_t> ids;     // [n] token ids, ids[0] is BOS (if the tokenizer has one)
  std::vector<int64_t> labels;  // [n] = ids where trained, model::kIgnoreIndex elsewhere;
                                //     labels[0] is always ignored (nothing predicts BOS)
};

// Number of labels that are not kIgnoreIndex: the tokens this example adds to the loss.
int64_t trained_tokens(const Example& example);

}  // namespace qlt::data
