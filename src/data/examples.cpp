#include "data/examples.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/errors.h"
#include "data/jsonl.h"
#include "data/templates.h"
#include "model/causal_lm_loss.h"

namespace qlt::data {

namespace {

struct Where {
  const std::filesystem::path& file;
  int64_t line;
};

// object[key] as a string; absent -> `fallback` when given, else UserError.
std::string string_field(const nlohmann::json& object, const char* key, const Where& at,
                         const std::string& format, const std::string* fallback = nullptr) {
  auto it = object.find(key);
  if (it == object.end() && fallback) return *fallback;
  if (it == object.end() || !it->is_string()) {
    user_error("{}:{}: format \"{}\" needs a string field \"{}\"{}", at.file.string(), at.line,
               format, key, it == object.end() ? "" : fmt::format(" (got {})", it->type_name()));
  }
  return it->get<std::string>();
}

std::vector<ChatMessage> chat_messages(const nlohmann::json& object, const Where& at) {
  auto it = object.find("messages");
  if (it == object.end() || !it->is_array()) {
    user_error(
        "{}:{}: format \"chat\" needs an array field \"messages\" of {{\"role\", \"content\"}} "
        "objects",
        at.file.string(), at.line);
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& m = (*it)[i];
    auto role = m.is_object() ? m.find("role") : m.end();
    auto content = m.is_object() ? m.find("content") : m.end();
    if (!m.is_object() || role == m.end() || !role->is_string() || content == m.end() ||
        !content->is_string()) {
      user_error(
          "{}:{}: messages[{}] must be an object with string fields \"role\" and "
          "\"content\"",
          at.file.string(), at.line, i);
    }
    messages.push_back({role->get<std::string>(), content->get<std::string>()});
  }
  if (auto problem = chat_shape_problem(messages); !problem.empty()) {
    user_error("{}:{}: {}", at.file.string(), at.line, problem);
  }
  return messages;
}

std::vector<Segment> record_segments(const nlohmann::json& object, const Where& at,
                                     const DataOptions& options,
                                     const ChatTemplate& chat_template) {
  if (options.format == "text") return text_segments(string_field(object, "text", at, "text"));
  if (options.format == "alpaca") {
    // Stanford's train.py reads the input with example.get("input", ""): it may be absent.
    static const std::string kNoInput;
    return alpaca_segments(string_field(object, "instruction", at, "alpaca"),
                           string_field(object, "input", at, "alpaca", &kNoInput),
                           string_field(object, "output", at, "alpaca"), options.train_on_inputs);
  }
  return chat_segments(chat_template, chat_messages(object, at), options.train_on_inputs);
}

}  // namespace

ExampleSet read_examples(const std::filesystem::path& file, const tokenizer::Tokenizer& tokenizer,
                         const DataOptions& options) {
  // Values were validated with the config (data.format, data.max_seq_len); a caller that builds
  // options by hand gets an internal error instead of a misread file.
  TORCH_CHECK(options.format == "text" || options.format == "alpaca" || options.format == "chat",
              "read_examples: unknown data format ", options.format);
  TORCH_CHECK(options.max_seq_len >= 2, "read_examples: max_seq_len ", options.max_seq_len);
  ExampleSet set;
  const auto max_len = static_cast<size_t>(options.max_seq_len);
  // "auto" becomes the model's own template once, before any record is read.
  const ChatTemplate chat_template =
      options.format == "chat"
          ? resolve_chat_template(options.chat_template, tokenizer, tokenizer.source().string())
          : ChatTemplate{};
  for_each_jsonl(file, [&](const nlohmann::json& object, int64_t line) {
    ++set.records;
    auto segments = record_segments(object, Where{file, line}, options, chat_template);
    Example ex;
    bool truncated = false;
    try {
      ex = tokenize_truncated(tokenizer, segments, max_len, truncated);
    } catch (const UserError& e) {
      user_error("{}:{}: {}", file.string(), line, e.what());
    }
    set.truncated += truncated;
    const int64_t trained = trained_tokens(ex);
    if (trained == 0) {
      ++set.dropped;
      return;
    }
    set.trained_tokens += trained;
    set.examples.push_back(std::move(ex));
  });
  if (set.records == 0) user_error("dataset {} holds no examples", file.string());
  if (set.dropped > 0) {
    spdlog::warn(
        "dataset {}: {} of {} examples dropped: nothing left to train on after truncation to "
        "max_seq_len {}",
        file.string(), set.dropped, set.records, options.max_seq_len);
  }
  if (set.examples.empty()) {
    user_error(
        "dataset {}: no example has a token to train on within max_seq_len {} (the trained "
        "part comes after the prompt); raise data.max_seq_len or shorten the prompts",
        file.string(), options.max_seq_len);
  }
  return set;
}

}  // namespace qlt::data
