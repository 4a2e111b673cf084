#include <system_error>

#include "core/errors.h"
#include "core/json_reader.h"
#include "tokenizer/conventions.h"
#include "tokenizer/json_fields.h"

namespace qlt::tokenizer {

namespace fs = std::filesystem;

namespace {

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

std::optional<std::string> special_token(const JsonField& root, const std::string& key) {
  const auto f = root.find_non_null(key);
  if (!f) return std::nullopt;
  if (f->value.is_string()) return f->string();
  if (f->value.is_object()) return f->at("content").string();
  f->fail("must be a token (a string, or an object with \"content\"), found " +
          describe_json(f->value));
}

}  // namespace

TokenizerConfig read_tokenizer_config(const fs::path& folder) {
  TokenizerConfig config;
  const fs::path file = folder / "tokenizer_config.json";
  if (is_file(file)) {
    config.file = file;
    const nlohmann::json json = read_json_file(file);
    const std::string origin = file.string();
    const JsonField root{json, "", origin};
    root.object();
    if (auto f = root.find_non_null("add_bos_token")) config.add_bos_token = f->boolean();
    if (auto f = root.find_non_null("add_eos_token")) config.add_eos_token = f->boolean();
    config.bos_token = special_token(root, "bos_token");
    config.eos_token = special_token(root, "eos_token");
    config.unk_token = special_token(root, "unk_token");
    config.pad_token = special_token(root, "pad_token");
    if (auto f = root.find_non_null("chat_template")) {
      if (f->value.is_string()) {
        config.chat_template = f->string();
      } else {
        const auto& list = f->array();
        for (size_t i = 0; i < list.size(); ++i) {
          const JsonField entry = f->element(i);
          if (entry.at("name").string() == "default")
            config.chat_template = entry.at("template").string();
        }
      }
    }
  }
  const fs::path jinja = folder / "chat_template.jinja";
  if (config.chat_template.empty() && is_file(jinja)) config.chat_template = read_text_file(jinja);
  return config;
}

}  // namespace qlt::tokenizer
