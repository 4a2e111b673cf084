// The conventions a model's files set for its tokenizer, instead of LLaMA-2 assumptions:
// special ids, whether BOS / EOS are added, the chat template. Where they come from:
//  - GGUF (gguf_vocab.h): tokenizer.ggml.{bos,eos,unknown,padding}_token_id,
//    tokenizer.ggml.add_bos_token / add_eos_token, tokenizer.chat_template;
//  - a Hugging Face folder: tokenizer_config.json (add_bos_token, add_eos_token, bos_token,
//    eos_token, unk_token, pad_token, chat_template) or chat_template.jinja beside it, and for
//    tokenizer.json its post_processor (a TemplateProcessing that puts a special token before
//    / after the text) and model.unk_token.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace qlt::tokenizer {

struct Conventions {
  std::optional<int64_t> bos, eos, unk, pad;
  bool add_bos = false, add_eos = false;
  std::string chat_template;  // "" when the model has none
};

// What a folder's tokenizer_config.json says (every field optional). Special tokens are given
// by their content (a string, or an object with "content" as transformers writes AddedToken).
struct TokenizerConfig {
  std::filesystem::path file;  // where it was read from ("" when there is none)
  std::optional<bool> add_bos_token, add_eos_token;
  std::optional<std::string> bos_token, eos_token, unk_token, pad_token;
  std::string chat_template;
};

// Reads `folder`/tokenizer_config.json when it exists (UserError naming the file and key when a
// field has the wrong type), and the chat template from its "chat_template" (a string, or a
// list of {"name", "template"} of which the one named "default" is taken) or else from
// `folder`/chat_template.jinja (where transformers >= 4.43 writes it).
TokenizerConfig read_tokenizer_config(const std::filesystem::path& folder);

}  // namespace qlt::tokenizer
