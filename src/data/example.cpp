#include "data/example.h"

#include "model/causal_lm_loss.h"

namespace qlt::data {

int64_t trained_tokens(const Example& example) {
  int64_t n = 0;
  for (int64_t label : example.labels) n += label != model::kIgnoreIndex;
  return n;
}

}  // namespace qlt::data
