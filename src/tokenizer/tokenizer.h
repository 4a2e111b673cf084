// The tokenizer of a model: one interface over the vocabularies LLaMA-family models come with
// (a std::variant of two implementations, no class hierarchy):
//  - SentencePiece (sentencepiece_vocab.h): a folder's tokenizer.model (LLaMA 2, Mistral, the
//    bundled data/tiny-llama), or a GGUF vocabulary with tokenizer.ggml.model "llama";
//  - byte-level BPE, the GPT-2 scheme (bpe.h): a folder's tokenizer.json (Llama 3, SmolLM2,
//    ...; tokenizer_json.h), or a GGUF vocabulary with tokenizer.ggml.model "gpt2"
//    (gguf_vocab.h).
// Ids are those of the references: Hugging Face tokenizers for tokenizer.json, llama.cpp for
// GGUF vocabularies, the sentencepiece library for tokenizer.model (tests/tokenizer/, on the
// corpus of tests/fixtures/tokenizer_bpe/). Special tokens typed in the text (chat markers
// such as "<|im_start|>") become their ids, except with tokenizer.model, where SentencePiece
// keeps them text.
//
// The conventions (which ids are BOS / EOS / pad, whether BOS is added, the chat template)
// come from the model's own files (conventions.h), not from LLaMA-2 assumptions.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qlt::tokenizer {

// UserError saying what is wrong with model.path and how to fix it, unless it is an existing
// folder or a GGUF file: missing, another kind of file (a ".gguf" file without the GGUF magic
// said so), too long, unreadable. Tokenizer::load checks this first; commands that read a
// model without its tokenizer call it before anything else.
void check_model_path(const std::filesystem::path& model_path);
// The former name (a folder was all there was); same check.
inline void check_model_folder(const std::filesystem::path& model_path) {
  check_model_path(model_path);
}

class Tokenizer {
 public:
  // The tokenizer of model.path: a GGUF file's vocabulary, or in a folder tokenizer.model
  // (SentencePiece), else tokenizer.json (with tokenizer_config.json and chat_template.jinja
  // beside it when present). UserError naming what is missing or wrong.
  static Tokenizer load(const std::filesystem::path& model_path);
  // One file: a GGUF file (by its magic), a tokenizer.json (by its ".json" extension), else a
  // SentencePiece model. The folder's tokenizer_config.json is read for the conventions.
  static Tokenizer load_file(const std::filesystem::path& file);
  // A tokenizer.json given as text (the fuzz harness, tests): `origin` names it in errors;
  // no tokenizer_config.json.
  static Tokenizer from_tokenizer_json(std::string_view json_text, const std::string& origin);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // The ids of `text`, with bos_id() before them when add_bos and eos_id() after when add_eos
  // (each only when the model has one). Callers that follow the model's convention pass
  // add_bos_by_default() / add_eos_by_default(). Text that is not valid UTF-8 is encoded
  // byte by byte where it is ill-formed (BPE), as SentencePiece does its own way.
  std::vector<int64_t> encode(std::string_view text, bool add_bos, bool add_eos = false) const;
  // Total bytes of text passed to encode() so far: lets tests check that tokenization work
  // is bounded (data/examples.h, tokenize_truncated).
  uint64_t encoded_bytes() const;

  // The text of `ids` (UserError for an id outside the vocabulary), always valid UTF-8: bytes
  // of byte-level tokens are joined before they are read as UTF-8, so a character split over
  // several tokens comes out whole, and an incomplete one at the end (generation in progress)
  // becomes U+FFFD (stream by decoding everything so far and holding back a trailing U+FFFD,
  // as transformers' TextStreamer does). Special tokens: tokenizer.json and GGUF
  // vocabularies render them as their text (Hugging Face's decode with
  // skip_special_tokens=False, llama.cpp's detokenize with special=true), so that
  // decode(encode(t)) == t; tokenizer.model keeps SentencePiece's rule (BOS / EOS / UNK
  // decode to nothing).
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t vocab_size() const;
  // Special ids; -1 when the model has none (a byte-level vocabulary need not have an unknown
  // token, SmolLM2 has no separate BOS in its Hugging Face files, ...).
  int64_t bos_id() const;
  int64_t eos_id() const;
  int64_t unk_id() const;
  std::optional<int64_t> pad_id() const;
  // Whether the model's files say BOS / EOS are added to a text (GGUF add_bos_token,
  // tokenizer_config.json add_bos_token, a tokenizer.json post-processor that adds it).
  // tokenizer.model without tokenizer_config.json: BOS yes, EOS no (LLaMA 2).
  bool add_bos_by_default() const;
  bool add_eos_by_default() const;
  // The chat template (Jinja) the model ships, "" when none: GGUF tokenizer.chat_template,
  // tokenizer_config.json "chat_template", or chat_template.jinja.
  const std::string& chat_template() const;

  // The vocabulary entry of an id as stored: "▁the" (SentencePiece), "Ġthe" (byte-level), or
  // a special token's text. UserError outside the vocabulary.
  std::string id_to_piece(int64_t id) const;
  // The id of a vocabulary entry spelt exactly so ("<|im_end|>"), or nullopt.
  std::optional<int64_t> piece_to_id(std::string_view piece) const;
  // Whether the id is a special token (control / unknown in SentencePiece and GGUF, an added
  // token marked special in tokenizer.json).
  bool is_special(int64_t id) const;

  // "sentencepiece (tokenizer.model)", "byte-level BPE (tokenizer.json)", "byte-level BPE
  // (GGUF, pre-tokenizer smollm)", ... for logs; and the file it came from.
  const std::string& description() const;
  const std::filesystem::path& source() const;

  struct Impl;  // opaque (tokenizer.cpp)

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  void check_id(int64_t id) const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qlt::tokenizer
