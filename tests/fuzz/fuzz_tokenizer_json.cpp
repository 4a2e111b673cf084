// Fuzz target: a Hugging Face tokenizer.json -> qlt::tokenizer::Tokenizer::from_tokenizer_json
// (tokenizer/tokenizer_json.h: the model, added tokens, normalizer, pre-tokenizer with its
// PCRE2 patterns, post-processor and decoder). An accepted file then encodes and decodes a
// fixed text (words, digits, white-space runs, CJK, emoji, chat markers, ill-formed UTF-8)
// and the first bytes of the input itself.
//
// Beyond "no crash, no exception other than UserError": every id is inside the vocabulary,
// BOS/EOS are added exactly when asked for and present, every id has a piece, and decode
// always returns valid UTF-8.
#include <string>

#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

const std::string kText =
    "Hello world, it's 2024-01-15: 1234567 items!\n\n\t  spaces   and\r\ntabs "
    "日本語のテキスト 😀👍🏽 <|im_start|>user<|im_end|> <mask> é e\xCC\x81 "
    "\xFF\xC0\x80 "
    "end";

void check(const qlt::tokenizer::Tokenizer& t, std::string_view text) {
  const int64_t n = t.vocab_size();
  QLT_FUZZ_REQUIRE(n > 0, "accepted an empty vocabulary");
  const auto ids = t.encode(text, /*add_bos=*/false);
  for (int64_t id : ids) {
    QLT_FUZZ_REQUIRE(id >= 0 && id < n, "id %lld outside [0, %lld)", static_cast<long long>(id),
                     static_cast<long long>(n));
    (void)t.id_to_piece(id);
    (void)t.is_special(id);
  }
  const std::string decoded = t.decode(ids);
  QLT_FUZZ_REQUIRE(qlt::tokenizer::to_valid_utf8(decoded) == decoded, "decode gave invalid UTF-8");
  const auto with = t.encode(text, true, true);
  const size_t extra = (t.bos_id() >= 0 ? 1 : 0) + (t.eos_id() >= 0 ? 1 : 0);
  QLT_FUZZ_REQUIRE(with.size() == ids.size() + extra,
                   "BOS/EOS: %zu ids, %zu without, %zu expected extra", with.size(), ids.size(),
                   extra);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlt::fuzz::quiet_once();
  const std::string_view input = qlt::fuzz::as_text(data, size);
  qlt::fuzz::accepts([&] {
    const auto t = qlt::tokenizer::Tokenizer::from_tokenizer_json(input, "fuzz/tokenizer.json");
    check(t, kText);
    check(t, input.substr(0, 512));
  });
  return 0;
}
