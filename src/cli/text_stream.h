// Streaming generated tokens as text (generate): a token may end in the middle of a UTF-8
// character (byte-level vocabularies, SentencePiece byte fallback) and a SentencePiece token's
// leading space depends on what comes before it, so tokens are not printed one by one. Instead
// the tokens of a window are decoded together and only what is final is handed out: the
// decoders make an incomplete character at the end U+FFFD (tokenizer.h), so trailing U+FFFD
// (and any incomplete UTF-8 sequence, for a decoder that leaves bytes raw) is held back until
// the next token completes it or the stream ends, as transformers' TextStreamer does.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace qlt::cli {

class TextStream {
 public:
  using Decode = std::function<std::string(const std::vector<int64_t>&)>;

  // `context`: tokens before the first new one (the end of the prompt), decoded with the new
  // ones so that a leading space comes out right, but never handed out.
  TextStream(Decode decode, std::vector<int64_t> context);

  // The text that became final with token `id` (possibly empty).
  std::string push(int64_t id);
  // What is still held back (an incomplete character as U+FFFD): call once at the end.
  std::string finish();

 private:
  Decode decode_;
  std::vector<int64_t> window_;  // context, then the new tokens since the window last moved
  std::string seen_;             // decode(window_) as far as handed out (or context)
  std::string held_;             // decoded text after seen_, not handed out yet
};

// Bytes at the end of `text` that may still change when more tokens follow: trailing U+FFFD
// characters and an incomplete UTF-8 sequence. Returns their length.
size_t unfinished_tail(const std::string& text);

}  // namespace qlt::cli
