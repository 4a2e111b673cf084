// Fuzz target: a JSONL dataset in every line format -> qlt::data::read_examples with the real
// tokenizer of the bundled model (data/tiny-llama), then the training batcher over the
// examples; for format "text" also the eval path (read_documents + make_eval_windows).
//
// Input layout: the first byte chooses the options, the rest is the JSONL file.
//   bits 0-1  format: 0 text, 1 alpaca, 2 chat with chat_template llama2, 3 chat with chatml
//   bit  2    train_on_inputs
//   bit  3    packing
//   bits 4-5  max_seq_len: 64, 2, 16, 128
// An empty input is skipped.
//
// Beyond "no crash, no exception other than UserError": every example read is at most
// max_seq_len tokens, has one label per id (the id itself or kIgnoreIndex, never on the first
// token), ids within the vocabulary and at least one trained token; the counts add up; the
// batcher's rows stay within max_seq_len.
#include <cstdint>
#include <string>
#include <vector>

#include "data/batcher.h"
#include "data/data_options.h"
#include "data/examples.h"
#include "data/text_dataset.h"
#include "fuzz_util.h"
#include "model/causal_lm_loss.h"
#include "tokenizer/tokenizer.h"

namespace {

const qlt::fuzz::ScratchDir& scratch() {
  static const qlt::fuzz::ScratchDir dir("jsonl_examples");
  return dir;
}

const qlt::tokenizer::Tokenizer& tokenizer() {
  static const auto t = qlt::tokenizer::Tokenizer::load(qlt::fuzz::kSourceDir / "data/tiny-llama");
  return t;
}

qlt::data::DataOptions options_of(uint8_t byte) {
  static constexpr const char* kFormats[] = {"text", "alpaca", "chat", "chat"};
  static constexpr int64_t kLengths[] = {64, 2, 16, 128};
  qlt::data::DataOptions o;
  o.format = kFormats[byte & 3];
  o.chat_template = (byte & 3) == 3 ? "chatml" : "llama2";
  o.train_on_inputs = (byte & 4) != 0;
  o.packing = (byte & 8) != 0;
  o.max_seq_len = kLengths[(byte >> 4) & 3];
  return o;
}

void check_examples(const qlt::data::ExampleSet& set, const qlt::data::DataOptions& options) {
  using qlt::model::kIgnoreIndex;
  const int64_t vocab = tokenizer().vocab_size();
  int64_t total = 0;
  for (const auto& ex : set.examples) {
    const auto n = static_cast<int64_t>(ex.ids.size());
    QLT_FUZZ_REQUIRE(n >= 1 && n <= options.max_seq_len, "example of %lld tokens (max %lld)",
                     static_cast<long long>(n), static_cast<long long>(options.max_seq_len));
    QLT_FUZZ_REQUIRE(ex.labels.size() == ex.ids.size(), "%zu labels for %zu ids", ex.labels.size(),
                     ex.ids.size());
    QLT_FUZZ_REQUIRE(ex.labels[0] == kIgnoreIndex, "the first token is trained");
    for (int64_t i = 0; i < n; ++i) {
      QLT_FUZZ_REQUIRE(ex.ids[i] >= 0 && ex.ids[i] < vocab, "id %lld outside the vocabulary",
                       static_cast<long long>(ex.ids[i]));
      QLT_FUZZ_REQUIRE(ex.labels[i] == kIgnoreIndex || ex.labels[i] == ex.ids[i],
                       "label %lld at %lld is neither the id nor ignored",
                       static_cast<long long>(ex.labels[i]), static_cast<long long>(i));
    }
    const int64_t trained = qlt::data::trained_tokens(ex);
    QLT_FUZZ_REQUIRE(trained > 0, "a kept example has no trained token");
    total += trained;
  }
  QLT_FUZZ_REQUIRE(total == set.trained_tokens && total > 0, "trained tokens %lld, set says %lld",
                   static_cast<long long>(total), static_cast<long long>(set.trained_tokens));
  QLT_FUZZ_REQUIRE(static_cast<int64_t>(set.examples.size()) + set.dropped <= set.records,
                   "more examples than records");
}

void check_batches(const qlt::data::ExampleSet& set, const qlt::data::DataOptions& options) {
  qlt::data::Batcher batcher(set.examples, options, /*seed=*/7, /*pad_id=*/0);
  for (int i = 0; i < 2; ++i) {
    const auto batch = batcher.next(/*micro_batch_size=*/3);
    QLT_FUZZ_REQUIRE(batch.input_ids.dim() == 2 && batch.input_ids.size(0) == 3 &&
                         batch.input_ids.size(1) <= options.max_seq_len,
                     "batch of shape [%lld, %lld]", static_cast<long long>(batch.input_ids.size(0)),
                     static_cast<long long>(batch.input_ids.size(1)));
    QLT_FUZZ_REQUIRE(batch.labels.sizes() == batch.input_ids.sizes() &&
                         batch.position_ids.sizes() == batch.input_ids.sizes() &&
                         batch.segment_ids.sizes() == batch.input_ids.sizes(),
                     "batch tensors of different shapes");
  }
}

void check_eval_windows(const std::filesystem::path& file, const qlt::data::DataOptions& options) {
  const auto documents = qlt::data::read_documents(file, options.format);
  const auto windows = qlt::data::make_eval_windows(documents, tokenizer(), options.max_seq_len);
  for (const auto& w : windows) {
    QLT_FUZZ_REQUIRE(w.size() >= 2 && static_cast<int64_t>(w.size()) <= options.max_seq_len,
                     "eval window of %zu tokens", w.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  qlt::fuzz::quiet_once();
  (void)tokenizer();  // loaded once, outside the per-input work
  const auto options = options_of(data[0]);
  const auto path = scratch() / "data.jsonl";
  qlt::fuzz::write_file(path, qlt::fuzz::as_text(data + 1, size - 1));

  qlt::fuzz::accepts([&] {
    const auto set = qlt::data::read_examples(path, tokenizer(), options);
    check_examples(set, options);
    check_batches(set, options);
  });
  if (options.format == "text") qlt::fuzz::accepts([&] { check_eval_windows(path, options); });
  return 0;
}
