#include "data/text_dataset.h"

#include <algorithm>

#include "core/errors.h"
#include "data/jsonl.h"
#include "model/causal_lm_loss.h"

namespace qlt::data {

std::vector<std::string> read_documents(const std::filesystem::path& file,
                                        const std::string& format) {
  if (format != "text") {
    user_error("data.format \"{}\" is not supported by this command; use \"text\"", format);
  }
  std::vector<std::string> docs;
  for_each_jsonl(file, [&](const nlohmann::json& object, int64_t line) {
    auto it = object.find("text");
    if (it == object.end() || !it->is_string()) {
      user_error("{}:{}: format \"text\" needs a string field \"text\" on every line",
                 file.string(), line);
    }
    docs.push_back(it->get<std::string>());
  });
  if (docs.empty()) user_error("dataset {} holds no documents", file.string());
  return docs;
}

std::vector<std::vector<int64_t>> make_eval_windows(const std::vector<std::string>& documents,
                                                    const tokenizer::Tokenizer& tokenizer,
                                                    int64_t max_seq_len) {
  std::vector<std::vector<int64_t>> windows;
  for (const auto& doc : documents) {
    // BOS as the model's files say (LLaMA 2: yes, SmolLM2: no); EOS always, so that the end
    // of a document is predicted.
    auto ids = tokenizer.encode(doc, tokenizer.add_bos_by_default(), /*add_eos=*/true);
    for (size_t start = 0; start < ids.size(); start += static_cast<size_t>(max_seq_len)) {
      size_t end = std::min(ids.size(), start + static_cast<size_t>(max_seq_len));
      if (end - start >= 2) windows.emplace_back(ids.begin() + start, ids.begin() + end);
    }
  }
  return windows;
}

Batch collate(const std::vector<std::vector<int64_t>>& windows, size_t begin, size_t end,
              int64_t pad_id) {
  TORCH_CHECK(begin < end && end <= windows.size(), "collate: bad range [", begin, ", ", end,
              ") of ", windows.size());
  size_t longest = 0;
  for (size_t i = begin; i < end; ++i) longest = std::max(longest, windows[i].size());
  const auto B = static_cast<int64_t>(end - begin), T = static_cast<int64_t>(longest);
  auto input_ids = at::full({B, T}, pad_id, at::kLong);
  auto labels = at::full({B, T}, model::kIgnoreIndex, at::kLong);
  auto ids_acc = input_ids.accessor<int64_t, 2>();
  auto labels_acc = labels.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& w = windows[begin + static_cast<size_t>(b)];
    for (size_t t = 0; t < w.size(); ++t) ids_acc[b][t] = labels_acc[b][t] = w[t];
  }
  return {input_ids, labels};
}

}  // namespace qlt::data
