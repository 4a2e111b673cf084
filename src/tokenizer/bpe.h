// Byte-level BPE (the GPT-2 scheme), as Hugging Face tokenizers' BPE model
// (models/bpe/model.rs, word.rs) and llama.cpp's llm_tokenizer_bpe compute it, shared by the
// tokenizer.json and GGUF readers (tokenizer_json.h, gguf_vocab.h).
//
// encode(text): added tokens are taken out of the text first (added_tokens.h); each stretch of
// text between them is pre-tokenized (pre_tokenizer.h); each piece is then, in its raw bytes:
//  1. with ignore_merges (Llama 3), one token when the whole piece is in the vocabulary;
//  2. otherwise one symbol per byte: the vocabulary id of the byte's byte-level character
//     (byte_level.h); a byte whose character is missing becomes byte-fallback tokens
//     "<0xXX>" (when byte_fallback; for the bytes of that character's UTF-8, as Hugging Face
//     does), else the unknown token (consecutive ones fused when fuse_unk), else nothing;
//  3. merges: repeatedly the adjacent pair with the lowest merge rank, the leftmost of equal
//     ranks, is replaced by the merged token (a min-heap of (rank, position) with stale entries
//     skipped, word.rs merge_all; llama.cpp's work queue is the same order).
// The result of a piece depends only on its bytes, so pieces shorter than 256 bytes are cached
// (up to kWordCacheSize of them; thread-safe), which makes encoding large texts fast.
//
// decode(ids): see BpeDecoder.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/pre_tokenizer.h"

namespace qlt::tokenizer {

inline constexpr size_t kWordCacheSize = 200000;

// Hash for std::string keys that are looked up with std::string_view (no temporary string).
struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringViewHash, std::equal_to<>>;

// Decoding. Hugging Face's decoders (decoders/*.rs) are a chain over the list of token strings:
//   ByteFallback  runs of "<0xXX>" tokens -> their bytes as text (U+FFFD per byte when the run
//                 is not valid UTF-8)
//   Fuse          all strings -> one
//   Replace       each string: every occurrence of `pattern` -> `content`
//   ByteLevel     each string whose characters are all in the byte-level alphabet -> its
//                 bytes, any other string as it is; then the bytes as UTF-8, each ill-formed
//                 subsequence -> U+FFFD
// and the results are concatenated. llama.cpp (token_to_piece) instead renders special tokens
// (control, user-defined, unknown) as their text, byte tokens as their byte and other tokens
// through the byte-level alphabet; the bytes are joined, and the result is made valid UTF-8
// the same way.
struct DecodeByteFallback {};
struct DecodeFuse {};
struct DecodeReplace {
  std::string pattern, content;
};
struct DecodeByteLevel {};
using DecoderStep = std::variant<DecodeByteFallback, DecodeFuse, DecodeReplace, DecodeByteLevel>;

// What a reader hands to BpeModel.
struct BpeSpec {
  std::string origin;  // the file (or "<file>: <key>") named in every message
  // id -> token text as stored (byte-level form), ids 0..tokens.size()-1. Ids below
  // model_size are the BPE model's vocabulary; ids from model_size on are added tokens only.
  std::vector<std::string> tokens;
  size_t model_size = 0;
  // Merges in rank order as (left, right) token texts, and where they come from for messages
  // (e.g. "model.merges" or "tokenizer.ggml.merges").
  std::vector<std::pair<std::string, std::string>> merges;
  std::string merges_origin;
  // A pair listed twice: Hugging Face keeps the later rank (a HashMap collect), llama.cpp the
  // first (unordered_map::emplace).
  bool later_duplicate_merge_wins = true;
  bool ignore_merges = false;
  bool byte_fallback = false;
  std::optional<int64_t> unk;  // the model's unknown token
  bool fuse_unk = false;
  PreTokenizer pre;
  std::vector<AddedToken> added;
  AddedTokenRule added_rule = AddedTokenRule::kHuggingFace;
  // Decoding: Hugging Face's chain, or llama.cpp's rule with the token types (1 normal,
  // 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte; empty = all normal).
  bool llama_cpp_decode = false;
  std::vector<DecoderStep> decoder;
  std::vector<int32_t> token_types;
};

class BpeModel {
 public:
  // Validates the merges (both sides and the merged text must be model tokens: UserError
  // naming spec.merges_origin[i]) and builds the lookup tables.
  explicit BpeModel(BpeSpec spec);
  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  void encode(std::string_view text, std::vector<int64_t>& out) const;
  std::string decode(const std::vector<int64_t>& ids) const;  // ids in [0, size())

  int64_t size() const { return static_cast<int64_t>(spec_.tokens.size()); }
  const std::string& token(int64_t id) const { return spec_.tokens[id]; }
  std::optional<int64_t> find(std::string_view token) const;
  bool is_special(int64_t id) const;  // an added token marked special (HF) / control (GGUF)

 private:
  struct Cache;
  void encode_piece(std::string_view piece, std::vector<int64_t>& out) const;
  void merge_word(std::string_view piece, std::vector<int32_t>& ids) const;
  std::string decode_hf(const std::vector<int64_t>& ids) const;
  std::string decode_llama_cpp(const std::vector<int64_t>& ids) const;

  BpeSpec spec_;
  AddedTokenMatcher added_;
  StringMap<int32_t> token_to_id_;  // every id
  StringMap<int32_t> raw_to_id_;    // model tokens by their raw bytes
  // (left << 32 | right) -> (rank << 32 | merged id)
  std::unordered_map<uint64_t, uint64_t> merges_;
  // Per byte: the initial symbol ids (one id; or byte-fallback ids; empty = unknown).
  std::array<std::vector<int32_t>, 256> byte_symbols_;
  std::vector<uint8_t> special_;
  std::unique_ptr<Cache> cache_;
};

}  // namespace qlt::tokenizer
