#include "tokenizer/bpe.h"

#include <algorithm>
#include <deque>
#include <mutex>
#include <shared_mutex>

#include "core/errors.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace qlt::tokenizer {

namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a "<0xXX>" token (Hugging Face: length 6, u8::from_str_radix of the two
// characters, which also takes "+X"); -1 for any other token.
int byte_token_value(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  if (t[3] == '+') return hex_digit(t[4]);
  const int hi = hex_digit(t[3]), lo = hex_digit(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// One symbol of a word being merged (word.rs Symbol): its token, its neighbours, and whether
// it was merged away.
struct Symbol {
  int32_t id;
  int32_t prev, next;
  bool alive;
};

struct MergeEntry {
  int32_t rank, pos, new_id;
  // std::push_heap keeps a max-heap: "less" is the later merge (higher rank, then position),
  // so the top is the lowest rank, leftmost first.
  bool operator<(const MergeEntry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

struct BpeModel::Cache {
  std::shared_mutex mutex;
  StringMap<std::vector<int32_t>> words;
};

BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

BpeModel::BpeModel(BpeSpec spec) : spec_(std::move(spec)), cache_(std::make_unique<Cache>()) {
  const size_t n = spec_.tokens.size();
  token_to_id_.reserve(n);
  for (size_t id = 0; id < n; ++id)
    token_to_id_.emplace(spec_.tokens[id], static_cast<int32_t>(id));
  const auto model_id = [&](const std::string& text) -> int32_t {
    const auto it = token_to_id_.find(text);
    return it != token_to_id_.end() && static_cast<size_t>(it->second) < spec_.model_size
               ? it->second
               : -1;
  };
  for (size_t id = 0; id < spec_.model_size; ++id) {
    std::string raw;
    if (byte_level::decode(spec_.tokens[id], raw)) raw_to_id_.emplace(std::move(raw), id);
  }

  merges_.reserve(spec_.merges.size());
  for (size_t rank = 0; rank < spec_.merges.size(); ++rank) {
    const auto& [left, right] = spec_.merges[rank];
    const int32_t a = model_id(left), b = model_id(right);
    const std::string merged = left + right;
    const int32_t m = model_id(merged);
    const char* missing = a < 0   ? left.c_str()
                          : b < 0 ? right.c_str()
                          : m < 0 ? merged.c_str()
                                  : nullptr;
    if (missing != nullptr) {
      user_error(
          "{}: {}[{}] (\"{}\" + \"{}\") names \"{}\", which is not a token of the vocabulary; "
          "the merges and the vocabulary do not belong together (use the model's original "
          "tokenizer files)",
          spec_.origin, spec_.merges_origin, rank, abridged(left, 60), abridged(right, 60),
          abridged(missing, 60));
    }
    const uint64_t value = (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(m);
    if (spec_.later_duplicate_merge_wins) {
      merges_[pair_key(a, b)] = value;
    } else {
      merges_.emplace(pair_key(a, b), value);
    }
  }

  for (int b = 0; b < 256; ++b) {
    const std::string& c = byte_level::byte_to_utf8(static_cast<uint8_t>(b));
    if (const int32_t id = model_id(c); id >= 0) {
      byte_symbols_[b] = {id};
    } else if (spec_.byte_fallback) {
      std::vector<int32_t> ids;
      for (char cb : c) {
        const int32_t f = model_id(fmt::format("<0x{:02X}>", static_cast<uint8_t>(cb)));
        if (f < 0) break;
        ids.push_back(f);
      }
      if (ids.size() == c.size()) byte_symbols_[b] = std::move(ids);
    }
  }

  special_.assign(n, 0);
  if (!spec_.token_types.empty()) {
    for (size_t id = 0; id < n; ++id)
      special_[id] = spec_.token_types[id] == 2 || spec_.token_types[id] == 3;
  } else {
    for (const AddedToken& t : spec_.added) special_[t.id] = t.special;
  }
  added_ = AddedTokenMatcher(spec_.added, spec_.added_rule);
}

std::optional<int64_t> BpeModel::find(std::string_view token) const {
  const auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

bool BpeModel::is_special(int64_t id) const { return special_[id] != 0; }

void BpeModel::merge_word(std::string_view piece, std::vector<int32_t>& ids) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<MergeEntry> heap;
  symbols.clear();
  bool pending_unk = false;
  const auto push = [&](int32_t id) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, true});
    if (index > 0) symbols[index - 1].next = index;
  };
  for (char c : piece) {
    const auto& initial = byte_symbols_[static_cast<uint8_t>(c)];
    if (!initial.empty()) {
      if (pending_unk) push(static_cast<int32_t>(*spec_.unk));
      pending_unk = false;
      for (int32_t id : initial) push(id);
    } else if (spec_.unk) {
      // The unknown token; consecutive unknown characters fused into one with fuse_unk.
      if (pending_unk && !spec_.fuse_unk) push(static_cast<int32_t>(*spec_.unk));
      pending_unk = true;
    }  // else: no unknown token, the character is dropped (as Hugging Face does)
  }
  if (pending_unk) push(static_cast<int32_t>(*spec_.unk));

  heap.clear();
  const auto lookup = [&](int32_t a, int32_t b) -> const uint64_t* {
    const auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  const auto offer = [&](int32_t pos) {  // the pair (pos, next of pos)
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    if (const uint64_t* m = lookup(symbols[pos].id, symbols[next].id)) {
      heap.push_back({static_cast<int32_t>(*m >> 32), pos, static_cast<int32_t>(*m & 0xFFFFFFFF)});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) offer(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const MergeEntry top = heap.back();
    heap.pop_back();
    Symbol& sym = symbols[top.pos];
    if (!sym.alive || sym.next < 0) continue;
    Symbol& right = symbols[sym.next];
    const uint64_t* m = lookup(sym.id, right.id);
    if (m == nullptr || static_cast<int32_t>(*m & 0xFFFFFFFF) != top.new_id) continue;  // stale
    sym.id = top.new_id;
    right.alive = false;
    sym.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (sym.prev >= 0) offer(sym.prev);
    offer(top.pos);
  }
  ids.clear();
  for (const Symbol& s : symbols) {
    if (s.alive) ids.push_back(s.id);
  }
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int64_t>& out) const {
  if (piece.empty()) return;
  if (spec_.ignore_merges) {
    const auto it = raw_to_id_.find(piece);
    if (it != raw_to_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  constexpr size_t kMaxCachedBytes = 256;  // as Hugging Face's cache (MAX_LENGTH)
  const bool cacheable = piece.size() < kMaxCachedBytes;
  if (cacheable) {
    std::shared_lock lock(cache_->mutex);
    const auto it = cache_->words.find(piece);
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  thread_local std::vector<int32_t> ids;
  merge_word(piece, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::unique_lock lock(cache_->mutex);
    if (cache_->words.size() < kWordCacheSize) cache_->words.emplace(std::string(piece), ids);
  }
}

void BpeModel::encode(std::string_view text, std::vector<int64_t>& out) const {
  std::vector<TextSegment> segments;
  added_.split(text, segments);
  std::deque<std::string> storage;
  std::vector<std::string_view> pieces;
  for (const TextSegment& seg : segments) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    if (seg.end == seg.begin) continue;
    pieces.clear();
    spec_.pre.split(text.substr(seg.begin, seg.end - seg.begin), storage, pieces);
    for (std::string_view piece : pieces) encode_piece(piece, out);
    storage.clear();
  }
}

std::string BpeModel::decode(const std::vector<int64_t>& ids) const {
  return spec_.llama_cpp_decode ? decode_llama_cpp(ids) : decode_hf(ids);
}

std::string BpeModel::decode_llama_cpp(const std::vector<int64_t>& ids) const {
  std::string bytes;
  for (int64_t id : ids) {
    const std::string& t = spec_.tokens[id];
    const int32_t type = spec_.token_types.empty() ? 1 : spec_.token_types[id];
    if (type == 2 || type == 3 || type == 4) {
      bytes += t;  // special tokens as their text
    } else if (type == 6) {
      const int b = byte_token_value(t);
      if (b >= 0) {
        bytes += static_cast<char>(b);
      } else {
        bytes += t;
      }
    } else if (type == 1) {
      if (!byte_level::decode(t, bytes)) bytes += t;
    }  // unused (5) and undefined (0) tokens render as nothing, as in llama.cpp
  }
  return to_valid_utf8(bytes);
}

std::string BpeModel::decode_hf(const std::vector<int64_t>& ids) const {
  std::vector<std::string> strings;
  strings.reserve(ids.size());
  for (int64_t id : ids) strings.push_back(spec_.tokens[id]);
  for (const DecoderStep& step : spec_.decoder) {
    std::vector<std::string> next;
    if (std::holds_alternative<DecodeByteFallback>(step)) {
      std::string run;  // bytes of consecutive "<0xXX>" tokens
      size_t run_tokens = 0;
      const auto flush = [&] {
        if (run_tokens == 0) return;
        if (to_valid_utf8(run) == run) {
          next.push_back(run);
        } else {
          for (size_t k = 0; k < run_tokens; ++k) next.emplace_back("\xEF\xBF\xBD");
        }
        run.clear();
        run_tokens = 0;
      };
      for (std::string& s : strings) {
        const int b = byte_token_value(s);
        if (b >= 0) {
          run += static_cast<char>(b);
          ++run_tokens;
        } else {
          flush();
          next.push_back(std::move(s));
        }
      }
      flush();
    } else if (std::holds_alternative<DecodeFuse>(step)) {
      std::string all;
      for (const std::string& s : strings) all += s;
      next.push_back(std::move(all));
    } else if (const auto* r = std::get_if<DecodeReplace>(&step)) {
      for (const std::string& s : strings) {
        std::string out;
        size_t from = 0;
        for (size_t at; (at = s.find(r->pattern, from)) != std::string::npos;) {
          out.append(s, from, at - from).append(r->content);
          from = at + r->pattern.size();
        }
        out.append(s, from);
        next.push_back(std::move(out));
      }
    } else {  // ByteLevel
      std::string bytes;
      for (const std::string& s : strings) {
        if (!byte_level::decode(s, bytes)) bytes += s;
      }
      next.push_back(to_valid_utf8(bytes));
    }
    strings.swap(next);
  }
  std::string text;
  for (const std::string& s : strings) text += s;
  return to_valid_utf8(text);
}

}  // namespace qlt::tokenizer
