// Batcher: seeded portable shuffle, padding and packing layouts, labels at packed
// boundaries, epoch rollover, and exact resume from a serialized cursor.
#include <catch2/catch.hpp>
#include <set>

#include "core/errors.h"
#include "data/batcher.h"
#include "data/shuffle.h"
#include "model/causal_lm_loss.h"
#include "model/llama.h"

namespace {

using Catch::Matchers::Contains;
using qlt::data::Batcher;
using qlt::data::DataOptions;
using qlt::data::Example;
using Ids = std::vector<int64_t>;
using qlt::model::kIgnoreIndex;
constexpr int64_t kPad = 0;

// Example i: BOS(1), then len-1 tokens 10*i+1.. ; the first half of them untrained.
Example make_example(int64_t i, int64_t len) {
  Example ex;
  for (int64_t t = 0; t < len; ++t) {
    ex.ids.push_back(t == 0 ? 1 : 10 * i + t);
    ex.labels.push_back(t <= len / 2 ? kIgnoreIndex : 10 * i + t);
  }
  return ex;
}

std::vector<Example> make_examples(const Ids& lengths) {
  std::vector<Example> out;
  for (size_t i = 0; i < lengths.size(); ++i) out.push_back(make_example(int64_t(i), lengths[i]));
  return out;
}

DataOptions opts(int64_t max_seq_len, bool packing) {
  DataOptions o;
  o.max_seq_len = max_seq_len;
  o.packing = packing;
  return o;
}

Ids row(const at::Tensor& t, int64_t b) {
  auto r = t[b].contiguous();
  return Ids(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

bool same_batch(const qlt::data::TrainBatch& a, const qlt::data::TrainBatch& b) {
  return a.input_ids.equal(b.input_ids) && a.labels.equal(b.labels) &&
         a.position_ids.equal(b.position_ids) && a.segment_ids.equal(b.segment_ids) &&
         a.trained_tokens == b.trained_tokens && a.examples == b.examples;
}

}  // namespace

TEST_CASE("bounded_draw stays in range and is unbiased enough", "[data][batcher]") {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100; ++i) CHECK(qlt::data::bounded_draw(rng, 1) == 0);
  std::vector<int> counts(3, 0);
  for (int i = 0; i < 30000; ++i) ++counts[qlt::data::bounded_draw(rng, 3)];
  for (int c : counts) CHECK(std::abs(c - 10000) < 400);
  // A bound just above 2^63 rejects almost half of the raw draws; results stay below it.
  const uint64_t big = (uint64_t{1} << 63) + 1;
  for (int i = 0; i < 100; ++i) CHECK(qlt::data::bounded_draw(rng, big) < big);
}

TEST_CASE("epoch_permutation: a permutation, fixed by (seed, epoch), portable golden values",
          "[data][batcher]") {
  auto p = qlt::data::epoch_permutation(10, 42, 0);
  CHECK(std::set<int64_t>(p.begin(), p.end()).size() == 10);
  CHECK(*std::min_element(p.begin(), p.end()) == 0);
  CHECK(*std::max_element(p.begin(), p.end()) == 9);
  CHECK(p == qlt::data::epoch_permutation(10, 42, 0));
  CHECK(p != qlt::data::epoch_permutation(10, 42, 1));
  CHECK(p != qlt::data::epoch_permutation(10, 43, 0));
  CHECK(qlt::data::epoch_permutation(0, 1, 0).empty());
  CHECK(qlt::data::epoch_permutation(1, 1, 5) == Ids{0});
  // mt19937_64 and this Fisher-Yates are fully specified: any platform gives these values.
  // (Pinned from this implementation; a change here changes every training run's order.)
  CHECK(p == (Ids{2, 0, 4, 7, 8, 3, 5, 1, 9, 6}));
}

TEST_CASE("without packing: one example per row, right-padded to the longest", "[data][batcher]") {
  auto examples = make_examples({5, 3, 4});
  Batcher batcher(examples, opts(8, false), 1, kPad);
  const auto order = qlt::data::epoch_permutation(3, 1, 0);
  auto batch = batcher.next(2);
  REQUIRE(batch.input_ids.sizes() == at::IntArrayRef({2, 5}));
  CHECK(batch.examples == 2);
  int64_t trained = 0;
  for (int64_t b = 0; b < 2; ++b) {
    const auto& ex = examples[static_cast<size_t>(order[static_cast<size_t>(b)])];
    const auto n = ex.ids.size();
    Ids ids = ex.ids, labels = ex.labels, pos, seg(n, 1);
    for (size_t t = 0; t < n; ++t) pos.push_back(int64_t(t));
    ids.resize(5, kPad);
    labels.resize(5, kIgnoreIndex);
    pos.resize(5, 0);
    seg.resize(5, 0);
    CHECK(row(batch.input_ids, b) == ids);
    CHECK(row(batch.labels, b) == labels);
    CHECK(row(batch.position_ids, b) == pos);
    CHECK(row(batch.segment_ids, b) == seg);
    trained += qlt::data::trained_tokens(ex);
  }
  CHECK(batch.trained_tokens == trained);
  CHECK(batch.trained_tokens == batch.labels.ne(kIgnoreIndex).sum().item<int64_t>());
}

TEST_CASE("collate_examples: file order, one per row, same layout as the batcher",
          "[data][batcher]") {
  auto examples = make_examples({5, 3, 4});
  auto batch = qlt::data::collate_examples(examples, 1, 3, kPad);
  REQUIRE(batch.input_ids.sizes() == at::IntArrayRef({2, 4}));
  CHECK(row(batch.input_ids, 0) == Ids{1, 11, 12, kPad});
  CHECK(row(batch.labels, 0) == Ids{kIgnoreIndex, kIgnoreIndex, 12, kIgnoreIndex});
  CHECK(row(batch.labels, 1) == Ids{kIgnoreIndex, kIgnoreIndex, kIgnoreIndex, 23});
  CHECK(row(batch.position_ids, 1) == Ids{0, 1, 2, 3});
  CHECK(row(batch.segment_ids, 0) == Ids{1, 1, 1, 0});
  CHECK(batch.examples == 2);
  CHECK(batch.trained_tokens == 2);
}

TEST_CASE(
    "packing: greedy rows of whole examples, positions and segments restart, no label "
    "crosses a boundary",
    "[data][batcher]") {
  // Lengths 3..6 with max_seq_len 10: rows take 1-3 examples.
  auto examples = make_examples({3, 6, 4, 5, 3, 4, 6});
  // Labels fully trained here, so that a boundary label would be visible if it leaked.
  for (auto& ex : examples) {
    ex.labels = ex.ids;
    ex.labels[0] = kIgnoreIndex;
  }
  Batcher batcher(examples, opts(10, true), 3, kPad);
  const auto order = qlt::data::epoch_permutation(7, 3, 0);
  auto batch = batcher.next(2);
  // Replay the greedy rule on the known order.
  size_t k = 0;
  for (int64_t b = 0; b < 2; ++b) {
    Ids ids, labels, pos, seg;
    int64_t segment = 0;
    do {
      const auto& ex = examples[static_cast<size_t>(order[k++])];
      ++segment;
      for (size_t t = 0; t < ex.ids.size(); ++t) {
        ids.push_back(ex.ids[t]);
        labels.push_back(t == 0 ? kIgnoreIndex : ex.ids[t]);
        pos.push_back(int64_t(t));
        seg.push_back(segment);
      }
    } while (ids.size() + examples[static_cast<size_t>(order[k])].ids.size() <= 10);
    const auto T = batch.input_ids.size(1);
    REQUIRE(int64_t(ids.size()) <= T);
    ids.resize(size_t(T), kPad);
    labels.resize(size_t(T), kIgnoreIndex);
    pos.resize(size_t(T), 0);
    seg.resize(size_t(T), 0);
    CHECK(row(batch.input_ids, b) == ids);
    CHECK(row(batch.labels, b) == labels);
    CHECK(row(batch.position_ids, b) == pos);
    CHECK(row(batch.segment_ids, b) == seg);
  }
  CHECK(batch.examples == int64_t(k));
  CHECK(batch.examples > 2);  // something was packed
  CHECK(batcher.cursor().position == int64_t(k));
  CHECK(batch.input_ids.size(1) <= 10);
}

TEST_CASE("packing: the loss of a packed row is the sum of its examples' losses",
          "[data][batcher]") {
  // Hidden state of a position = one-hot of its token (no attention), so each example's
  // loss is independent of its neighbours unless a label crosses a boundary.
  auto examples = make_examples({4, 5, 3, 6});
  const int64_t V = 64;
  auto lm_head = at::randn({V, V}, at::TensorOptions().dtype(at::kFloat));
  auto loss_of = [&](const at::Tensor& ids, const at::Tensor& labels) {
    auto hidden = at::one_hot(ids, V).to(at::kFloat);
    return qlt::model::causal_lm_loss(hidden, lm_head, labels);
  };
  // max_seq_len = 4+5+3+6: the row holds exactly epoch 0's four examples.
  Batcher packed(examples, opts(18, true), 5, kPad);
  auto batch = packed.next(1);
  REQUIRE(batch.examples == 4);
  auto packed_loss = loss_of(batch.input_ids, batch.labels);
  double separate = 0;
  int64_t count = 0;
  Batcher single(examples, opts(18, false), 5, kPad);
  for (int i = 0; i < 4; ++i) {
    auto b = single.next(1);
    auto l = loss_of(b.input_ids, b.labels);
    separate += l.sum.item<double>();
    count += l.count;
  }
  CHECK(packed_loss.count == count);
  CHECK(packed_loss.count == batch.trained_tokens);
  CHECK(packed_loss.sum.item<double>() == Approx(separate).epsilon(1e-5));
}

// The batcher's segment ids through the model's mask (model/llama.h).
TEST_CASE("segment_attention_mask: causal within a segment, padding sees itself",
          "[data][batcher]") {
  auto seg = at::tensor(Ids{1, 1, 2, 2, 2, 0}, at::kLong).view({1, 6});
  auto mask = qlt::model::segment_attention_mask(seg);
  REQUIRE(mask.sizes() == at::IntArrayRef({1, 1, 6, 6}));
  auto expected = at::tensor(std::vector<uint8_t>{1, 0, 0, 0, 0, 0,  //
                                                  1, 1, 0, 0, 0, 0,  //
                                                  0, 0, 1, 0, 0, 0,  //
                                                  0, 0, 1, 1, 0, 0,  //
                                                  0, 0, 1, 1, 1, 0,  //
                                                  0, 0, 0, 0, 0, 1},
                             at::kByte)
                      .view({1, 1, 6, 6})
                      .to(at::kBool);
  CHECK(mask.equal(expected));
}

TEST_CASE("epochs roll over: each epoch visits every example once, in a new order",
          "[data][batcher]") {
  auto examples = make_examples({3, 4, 5, 6, 7});
  Batcher batcher(examples, opts(8, false), 11, kPad);
  std::vector<Ids> firsts(3);
  for (int epoch = 0; epoch < 3; ++epoch) {
    for (int i = 0; i < 5; ++i) {
      CHECK(batcher.cursor().epoch == epoch);
      CHECK(batcher.cursor().position == i);
      firsts[size_t(epoch)].push_back(batcher.next(1).input_ids[0][1].item<int64_t>());
    }
    CHECK(std::set<int64_t>(firsts[size_t(epoch)].begin(), firsts[size_t(epoch)].end()) ==
          std::set<int64_t>{1, 11, 21, 31, 41});
  }
  CHECK(batcher.cursor().epoch == 3);
  CHECK(batcher.epoch_progress() == 3.0);
  CHECK(firsts[0] != firsts[1]);
  // A batch may span two epochs: 2 + 2 + 2 from 5 examples.
  Batcher spanning(examples, opts(8, false), 11, kPad);
  spanning.next(2);
  spanning.next(2);
  auto b = spanning.next(2);
  CHECK(b.examples == 2);
  CHECK(spanning.cursor().epoch == 1);
  CHECK(spanning.cursor().position == 1);
}

TEST_CASE("a restored cursor continues exactly as the uninterrupted run", "[data][batcher]") {
  const bool packing = GENERATE(false, true);
  auto examples = make_examples({3, 9, 4, 5, 8, 3, 6, 7, 4, 5, 3});
  Batcher run(examples, opts(12, packing), 2024, kPad);
  std::vector<qlt::data::TrainBatch> expected;
  nlohmann::json saved;
  for (int step = 0; step < 12; ++step) {
    if (step == 5) saved = nlohmann::json::parse(qlt::data::cursor_to_json(run.cursor()).dump());
    expected.push_back(run.next(3));
  }
  CHECK(run.cursor().epoch >= 2);  // the comparison spans epoch boundaries
  Batcher resumed(examples, opts(12, packing), 2024, kPad);
  resumed.restore(qlt::data::cursor_from_json(saved, "checkpoint/data_cursor.json"));
  for (int step = 5; step < 12; ++step) {
    INFO("packing " << packing << " step " << step);
    CHECK(same_batch(resumed.next(3), expected[size_t(step)]));
  }
  // Same seed, fresh batcher: the same first batch (determinism from the seed).
  Batcher again(examples, opts(12, packing), 2024, kPad);
  CHECK(same_batch(again.next(3), expected[0]));
}

TEST_CASE("cursor errors: other data stream, damaged JSON, out of range",
          "[data][batcher][errors]") {
  auto examples = make_examples({3, 4, 5});
  Batcher batcher(examples, opts(8, false), 1, kPad);
  auto cursor = batcher.cursor();
  SECTION("another seed") {
    Batcher other(examples, opts(8, false), 2, kPad);
    REQUIRE_THROWS_WITH(other.restore(cursor),
                        Contains("made for another data stream") && Contains("training.seed"));
  }
  SECTION("other examples or options") {
    Batcher fewer(make_examples({3, 4}), opts(8, false), 1, kPad);
    REQUIRE_THROWS_AS(fewer.restore(cursor), qlt::UserError);
    Batcher changed(make_examples({3, 4, 6}), opts(8, false), 1, kPad);
    REQUIRE_THROWS_AS(changed.restore(cursor), qlt::UserError);
    Batcher packed(examples, opts(8, true), 1, kPad);
    REQUIRE_THROWS_AS(packed.restore(cursor), qlt::UserError);
  }
  SECTION("position outside the dataset") {
    cursor.position = 3;
    REQUIRE_THROWS_WITH(batcher.restore(cursor), Contains("outside the dataset of 3 examples"));
  }
  SECTION("missing or mistyped field") {
    auto json = qlt::data::cursor_to_json(cursor);
    json.erase("position");
    REQUIRE_THROWS_WITH(qlt::data::cursor_from_json(json, "ck/state.json"),
                        Contains("ck/state.json: the data cursor needs an integer field "
                                 "\"position\""));
    json = qlt::data::cursor_to_json(cursor);
    json["data_hash"] = 5;
    REQUIRE_THROWS_WITH(qlt::data::cursor_from_json(json, "ck/state.json"),
                        Contains("a string field \"data_hash\""));
    REQUIRE_THROWS_AS(qlt::data::cursor_from_json(nlohmann::json::array(), "x"), qlt::UserError);
  }
}
