// Hugging Face tokenizer.json (the tokenizers library's serialization) -> BpeSpec. Supported,
// and everything else refused with a UserError that names the file, the JSON path and the
// value (so the user knows the model is not one of ours rather than getting wrong ids):
//   model           type "BPE": vocab {token: id} with ids 0..n-1, merges as "a b" strings or
//                   ["a", "b"] pairs, ignore_merges, byte_fallback, unk_token, fuse_unk;
//                   dropout null or 0, no continuing_subword_prefix / end_of_word_suffix
//   added_tokens    id, content, special, single_word, lstrip, rstrip, normalized; a token in
//                   model.vocab must have its vocab id, the others follow the vocabulary in
//                   order (the ids Hugging Face gives them)
//   normalizer      null (or an empty Sequence)
//   pre_tokenizer   ByteLevel (add_prefix_space, use_regex), Split (Regex or String pattern,
//                   behavior, invert), Digits, Sequence of these; ByteLevel must be there, last
//   post_processor  null, ByteLevel, TemplateProcessing ("single": at most one special token
//                   before and one after $A), Sequence of these
//   decoder         ByteLevel, ByteFallback, Fuse, Replace (String pattern), Sequence of these,
//                   with a ByteLevel
// truncation and padding are ignored (transformers sets them per call).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "tokenizer/bpe.h"

namespace qlt::tokenizer {

struct TokenizerJson {
  BpeSpec spec;
  // The special tokens the post-processor puts before / after the text (add_special_tokens).
  std::optional<int64_t> template_bos, template_eos;
};

TokenizerJson parse_tokenizer_json(const nlohmann::json& root, const std::string& origin);

}  // namespace qlt::tokenizer
