// Segment-by-segment tokenization: a templated example is a list of text pieces, each
// either trained or not, tokenized one after another so that every token belongs to
// exactly one piece and the loss mask is exact.
//
// SentencePiece (LLaMA 2, the tiny model) prepends a "dummy prefix" space to every encode()
// call. A piece that follows other text must not get it, or the ids would differ from
// tokenizing the whole rendered string. encode_continuation() removes it by encoding
// "\n" + text and dropping the tokens of "\n" (checked to be an exact prefix). Byte-level BPE
// tokenizers (Llama 3, SmolLM2) add no such prefix: there the sentinel gives the same ids as
// encoding the piece alone, except that it merges with a piece that starts with a newline;
// then the tokenizer is asked whether it marks the text start (tokenizer_marks_text_start) and,
// as it does not, the piece is encoded as it is. With the result, the concatenated
// ids equal tokenizer.encode(whole string) whenever the tokenizer does not merge tokens
// across a piece boundary; the tests check this equality for every template.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/example.h"
#include "tokenizer/tokenizer.h"

namespace qlt::data {

struct Segment {
  // kBos: BOS when the tokenizer adds one by default (add_bos_by_default(): what
  // tokenizer(text) gives in Hugging Face); kTemplateBos: a bos_token that the template writes
  // itself, emitted whenever the tokenizer has a BOS. kEos: EOS when the tokenizer has one.
  enum class Kind { kBos, kTemplateBos, kEos, kText };
  Kind kind = Kind::kText;
  std::string text;      // kText only
  bool trained = false;  // labels = ids for these tokens, kIgnoreIndex otherwise
};

Segment bos_segment();
Segment template_bos_segment();
Segment eos_segment(bool trained);
Segment text_segment(std::string text, bool trained);

// Whether encode() tokenizes the start of a text differently from the same text after other
// text (SentencePiece's dummy prefix, a byte-level add_prefix_space): the tokens of "a" alone
// differ from those of "a" after a newline.
bool tokenizer_marks_text_start(const tokenizer::Tokenizer& tokenizer);

// Tokens of `text` as they appear after other text (no dummy-prefix space), by the newline
// sentinel, or encode(text) where the sentinel merges with the text and the tokenizer does not
// mark the text start. UserError when a tokenizer that marks it (SentencePiece) merges the
// sentinel with the text that follows (then pieces cannot be tokenized independently).
std::vector<int64_t> encode_continuation(const tokenizer::Tokenizer& tokenizer,
                                         const std::string& text);

// The first min(max_tokens, N) ids of `text`'s N tokens, as tokenizer.encode(text) (`fresh`:
// at the start of a string, with the dummy prefix) or encode_continuation(text) would give them,
// tokenizing only a prefix of `text` of about 8 bytes per token (see segments.cpp).
std::vector<int64_t> encode_first_tokens(const tokenizer::Tokenizer& tokenizer,
                                         const std::string& text, bool fresh, size_t max_tokens);

// tokenize_segments(tokenizer, segments) cut to its first `max_tokens` tokens, with bounded
// work: segments after the budget are not tokenized, and a long segment only on a prefix of
// its text (encode_first_tokens). `truncated` is set to whether the whole would have more than
// max_tokens tokens. The ids and labels equal those of the whole, cut; the tests check it on
// every example of the bundled datasets.
Example tokenize_truncated(const tokenizer::Tokenizer& tokenizer,
                           const std::vector<Segment>& segments, size_t max_tokens,
                           bool& truncated);

// No limit for tokenize_truncated: the whole example.
inline constexpr size_t kNoTokenLimit = static_cast<size_t>(-1);

// Tokenizes the segments in order (adjacent text segments with equal `trained` joined). A text
// segment right after a BOS segment (or first) is encoded with the dummy prefix, as a fresh
// string; any other text segment with encode_continuation(). labels[0] is forced to
// kIgnoreIndex.
Example tokenize_segments(const tokenizer::Tokenizer& tokenizer,
                          const std::vector<Segment>& segments);

// Python's str.strip(): removes leading and trailing Unicode whitespace (str.isspace()) from
// UTF-8 text. The Llama-2 chat templates of Meta and Hugging Face strip message contents.
std::string python_strip(const std::string& text);

}  // namespace qlt::data
