// The decoder linear weights an export writes, made one at a time when the writer reaches them:
// the merge of the adapter into each linear happens then, and the result is dropped once
// written, so an export never holds more than one linear in full precision beside the model it
// loaded (a 7B model merged into bf16 is 13.5 GB; one linear of it, 90 MB).
#pragma once

#include <functional>
#include <optional>

#include "model/llama.h"
#include "model/llama_source_linears.h"
#include "quant/weight_format.h"

namespace qlt::exporter {

struct LinearSource {
  // The stored weight of linear `linear` (llama_linear_names() index) of decoder layer `layer`.
  // Made when called (a merge runs then); call it once per linear, when about to write it.
  std::function<quant::StoredWeight(int64_t layer, int linear)> weight;
  // The format of every weight() result, when one format holds them all (a merge target);
  // nullopt: each linear as the model stores it (the writer looks at the model's own weight).
  std::optional<quant::WeightFormat> format;
};

// The model's own stored linears (no merge; the model must have no adapters attached).
LinearSource stored_linears(const model::LlamaModel& model);

// The model's linears merged with its adapters into `target` (model::merge_linear), each when
// it is asked for. With `originals`, the update is added to the original full-precision weight
// read from the source file instead of the model's stored one. Every merge is added to
// `*report` (which must outlive the source). `model` and `originals` must outlive it too.
LinearSource merged_linears(const model::LlamaModel& model, quant::WeightFormat target,
                            const model::SourceLinears* originals, model::MergeReport* report);

}  // namespace qlt::exporter
