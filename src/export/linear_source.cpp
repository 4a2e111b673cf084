#include "export/linear_source.h"

#include <c10/util/Exception.h>

namespace qlt::exporter {

LinearSource stored_linears(const model::LlamaModel& model) {
  TORCH_CHECK(!model.has_adapters(),
              "stored_linears: the model has adapters attached; merge them (merged_linears)");
  return {[&model](int64_t layer, int linear) {
            return model::linear_weight(model.weights.layers.at(static_cast<size_t>(layer)), linear)
                .stored;
          },
          std::nullopt};
}

LinearSource merged_linears(const model::LlamaModel& model, quant::WeightFormat target,
                            const model::SourceLinears* originals, model::MergeReport* report) {
  TORCH_CHECK(report != nullptr, "merged_linears: no report");
  return {[&model, target, originals, report](int64_t layer, int linear) {
            const at::Tensor original = originals ? originals->read(layer, linear) : at::Tensor();
            model::MergedLinear m = model::merge_linear(model, layer, linear, target, original);
            report->add(layer, linear, m);
            return std::move(m.weight);
          },
          target};
}

}  // namespace qlt::exporter
