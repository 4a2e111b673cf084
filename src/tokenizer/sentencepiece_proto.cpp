#include "tokenizer/sentencepiece_proto.h"

#include <cstring>

namespace qlt::tokenizer {

namespace {

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void put_key(std::string& out, uint32_t field, uint32_t wire_type) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | wire_type);
}

// int32 fields are varints of the two's-complement 64-bit value (so -1 takes ten bytes).
void put_int(std::string& out, uint32_t field, int64_t v) {
  put_key(out, field, 0);
  put_varint(out, static_cast<uint64_t>(v));
}

void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

void put_float(std::string& out, uint32_t field, float f) {
  put_key(out, field, 5);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  for (int i = 0; i < 4; ++i) out += static_cast<char>((bits >> (8 * i)) & 0xFF);  // little-endian
}

}  // namespace

std::string serialize_sentencepiece_model(const SentencePieceModelSpec& spec) {
  std::string model;
  for (const auto& p : spec.pieces) {
    std::string piece;
    put_bytes(piece, 1, p.text);
    put_float(piece, 2, p.score);
    put_int(piece, 3, p.type);
    put_bytes(model, 1, piece);
  }
  std::string trainer;
  put_int(trainer, 3, 2);  // model_type BPE
  put_int(trainer, 4, static_cast<int64_t>(spec.pieces.size()));
  put_int(trainer, 35, spec.byte_fallback ? 1 : 0);
  put_int(trainer, 40, spec.unk_id);
  // bos/eos/pad: -1 for GGUF vocabularies (their conventions come from the GGUF keys).
  put_int(trainer, 41, spec.bos_id);
  put_int(trainer, 42, spec.eos_id);
  put_int(trainer, 43, spec.pad_id);
  const auto piece_of = [&](uint32_t field, int32_t id) {
    if (spec.name_special_pieces && id >= 0 && static_cast<size_t>(id) < spec.pieces.size())
      put_bytes(trainer, field, spec.pieces[id].text);
  };
  piece_of(45, spec.unk_id);
  piece_of(46, spec.bos_id);
  piece_of(47, spec.eos_id);
  piece_of(48, spec.pad_id);
  put_bytes(model, 2, trainer);
  std::string normalizer;
  put_bytes(normalizer, 1, "identity");
  put_int(normalizer, 3, spec.add_dummy_prefix ? 1 : 0);
  put_int(normalizer, 4, spec.remove_extra_whitespaces ? 1 : 0);
  put_int(normalizer, 5, 1);  // escape_whitespaces: " " -> "▁"
  put_bytes(model, 3, normalizer);
  return model;
}

}  // namespace qlt::tokenizer
