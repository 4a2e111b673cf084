#include "data/batcher.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/errors.h"
#include "data/shuffle.h"
#include "model/causal_lm_loss.h"

namespace qlt::data {

namespace {

// FNV-1a 64 over the int64 values, byte by byte in little-endian order (portable).
struct Fnv1a {
  uint64_t h = 0xCBF29CE484222325ull;
  void add(int64_t v) {
    auto u = static_cast<uint64_t>(v);
    for (int i = 0; i < 8; ++i, u >>= 8) h = (h ^ (u & 0xFF)) * 0x100000001B3ull;
  }
};

std::string data_hash(const std::vector<Example>& examples, int64_t max_seq_len, bool packing) {
  Fnv1a f;
  f.add(static_cast<int64_t>(examples.size()));
  for (const auto& ex : examples) {
    f.add(static_cast<int64_t>(ex.ids.size()));
    for (auto id : ex.ids) f.add(id);
    for (auto label : ex.labels) f.add(label);
  }
  f.add(max_seq_len);
  f.add(packing ? 1 : 0);
  return fmt::format("{:016x}", f.h);
}

// Lays out rows of examples (rows[b] = the examples of row b, in order) as a [B, T] batch.
TrainBatch build_batch(const std::vector<std::vector<const Example*>>& rows, int64_t T,
                       int64_t pad_id) {
  const auto B = static_cast<int64_t>(rows.size());
  TrainBatch batch;
  batch.input_ids = at::full({B, T}, pad_id, at::kLong);
  batch.labels = at::full({B, T}, model::kIgnoreIndex, at::kLong);
  batch.position_ids = at::zeros({B, T}, at::kLong);
  batch.segment_ids = at::zeros({B, T}, at::kLong);
  auto ids = batch.input_ids.accessor<int64_t, 2>();
  auto labels = batch.labels.accessor<int64_t, 2>();
  auto positions = batch.position_ids.accessor<int64_t, 2>();
  auto segments = batch.segment_ids.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t t = 0, segment = 0;
    for (const Example* ex : rows[static_cast<size_t>(b)]) {
      ++segment;
      for (size_t i = 0; i < ex->ids.size(); ++i, ++t) {
        ids[b][t] = ex->ids[i];
        // labels[0] of an example is kIgnoreIndex (Example's contract, forced here too):
        // the loss pairs position t-1 with labels[t], so the last token of the previous
        // example in the row never learns to predict this one's first token.
        labels[b][t] = i == 0 ? model::kIgnoreIndex : ex->labels[i];
        batch.trained_tokens += labels[b][t] != model::kIgnoreIndex;
        positions[b][t] = static_cast<int64_t>(i);
        segments[b][t] = segment;
      }
    }
    batch.examples += static_cast<int64_t>(rows[static_cast<size_t>(b)].size());
  }
  return batch;
}

}  // namespace

nlohmann::json cursor_to_json(const DataCursor& c) {
  return {{"epoch", c.epoch},
          {"position", c.position},
          {"seed", c.seed},
          {"num_examples", c.num_examples},
          {"data_hash", c.data_hash}};
}

DataCursor cursor_from_json(const nlohmann::json& json, const std::string& where) {
  if (!json.is_object()) user_error("{}: the data cursor must be a JSON object", where);
  auto field = [&](const char* key, bool is_string) -> const nlohmann::json& {
    auto it = json.find(key);
    if (it == json.end() || (is_string ? !it->is_string() : !it->is_number_integer())) {
      user_error(
          "{}: the data cursor needs {} field \"{}\"; the checkpoint is damaged or from "
          "another program",
          where, is_string ? "a string" : "an integer", key);
    }
    return *it;
  };
  DataCursor c;
  c.epoch = field("epoch", false).get<int64_t>();
  c.position = field("position", false).get<int64_t>();
  c.seed = field("seed", false).get<uint64_t>();
  c.num_examples = field("num_examples", false).get<int64_t>();
  c.data_hash = field("data_hash", true).get<std::string>();
  return c;
}

Batcher::Batcher(std::vector<Example> examples, const DataOptions& options, uint64_t seed,
                 int64_t pad_id)
    : examples_(std::move(examples)),
      max_seq_len_(options.max_seq_len),
      packing_(options.packing),
      seed_(seed),
      pad_id_(pad_id) {
  TORCH_CHECK(!examples_.empty(), "Batcher: no examples");
  for (const auto& ex : examples_) {
    TORCH_CHECK(!ex.ids.empty() && ex.ids.size() == ex.labels.size() &&
                    static_cast<int64_t>(ex.ids.size()) <= max_seq_len_,
                "Batcher: an example has ", ex.ids.size(), " ids, ", ex.labels.size(),
                " labels, max_seq_len ", max_seq_len_);
  }
  data_hash_ = data_hash(examples_, max_seq_len_, packing_);
  order_ = epoch_permutation(num_examples(), seed_, epoch_);
}

const Example& Batcher::peek() const {
  return examples_[static_cast<size_t>(order_[static_cast<size_t>(position_)])];
}

void Batcher::advance() {
  if (++position_ == num_examples()) {
    ++epoch_;
    position_ = 0;
    order_ = epoch_permutation(num_examples(), seed_, epoch_);
  }
}

TrainBatch Batcher::next(int64_t micro_batch_size) {
  TORCH_CHECK(micro_batch_size > 0, "Batcher::next: micro_batch_size must be positive");
  // rows[b] = the examples of row b, in order.
  std::vector<std::vector<const Example*>> rows(static_cast<size_t>(micro_batch_size));
  int64_t T = 0;
  for (auto& row : rows) {
    int64_t len = 0;
    do {
      row.push_back(&peek());
      len += static_cast<int64_t>(peek().ids.size());
      advance();
    } while (packing_ && len + static_cast<int64_t>(peek().ids.size()) <= max_seq_len_);
    T = std::max(T, len);
  }
  return build_batch(rows, T, pad_id_);
}

DataCursor Batcher::cursor() const {
  return {epoch_, position_, seed_, num_examples(), data_hash_};
}

void Batcher::restore(const DataCursor& c) {
  if (c.seed != seed_ || c.num_examples != num_examples() || c.data_hash != data_hash_) {
    user_error(
        "the data cursor of the checkpoint was made for another data stream (seed {}, {} "
        "examples, hash {}; now seed {}, {} examples, hash {}); resume with the same data files, "
        "data options, tokenizer and training.seed, or start a new run",
        c.seed, c.num_examples, c.data_hash, seed_, num_examples(), data_hash_);
  }
  if (c.epoch < 0 || c.position < 0 || c.position >= num_examples()) {
    user_error("the data cursor (epoch {}, position {}) is outside the dataset of {} examples",
               c.epoch, c.position, num_examples());
  }
  epoch_ = c.epoch;
  position_ = c.position;
  order_ = epoch_permutation(num_examples(), seed_, epoch_);
}

TrainBatch collate_examples(const std::vector<Example>& examples, size_t begin, size_t end,
                            int64_t pad_id) {
  TORCH_CHECK(begin < end && end <= examples.size(), "collate_examples: bad range [", begin, ", ",
              end, ") of ", examples.size());
  std::vector<std::vector<const Example*>> rows;
  int64_t T = 0;
  for (size_t i = begin; i < end; ++i) {
    rows.push_back({&examples[i]});
    T = std::max(T, static_cast<int64_t>(examples[i].ids.size()));
  }
  return build_batch(rows, T, pad_id);
}

double Batcher::epoch_progress() const {
  return static_cast<double>(epoch_) +
         static_cast<double>(position_) / static_cast<double>(num_examples());
}

}  // namespace qlt::data
