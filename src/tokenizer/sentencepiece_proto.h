// A SentencePiece model (sentencepiece_model.proto, ModelProto) serialized by hand, for GGUF
// vocabularies of type "llama" (gguf_vocab.h): the pieces, scores and types are in the GGUF,
// and the sentencepiece library loads the bytes with LoadFromSerializedProto. Debian's
// libsentencepiece installs no sentencepiece_model.pb.h, so the few fields needed are written
// in the protobuf wire format here (varint keys "field << 3 | wire type"; wire types 0 varint,
// 2 length-delimited, 5 fixed32), with the field numbers of sentencepiece 0.1.97's
// src/sentencepiece_model.proto:
//   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
//   SentencePiece   1 piece (string), 2 score (float), 3 type (enum: 1 normal, 2 unknown,
//                   3 control, 4 user-defined, 5 unused, 6 byte) -- the GGUF token types
//   TrainerSpec     3 model_type (2 = BPE), 4 vocab_size, 35 byte_fallback, 40 unk_id,
//                   41 bos_id, 42 eos_id, 43 pad_id, 45 unk_piece, 46 bos_piece,
//                   47 eos_piece, 48 pad_piece (the library's bos_id() etc. look the *_piece
//                   up and want a control piece there; unset: "<unk>", "<s>", "</s>", "<pad>")
//   NormalizerSpec  1 name ("identity": no normalization table), 3 add_dummy_prefix,
//                   4 remove_extra_whitespaces, 5 escape_whitespaces
// The model type is BPE whatever the original was: llama.cpp tokenizes every "llama"
// vocabulary by merging the adjacent pair whose merged piece has the highest score, which is
// SentencePiece's BPE algorithm (bpe_model.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qlt::tokenizer {

struct SentencePieceModelSpec {
  struct Piece {
    std::string text;
    float score = 0;
    int32_t type = 1;
  };
  std::vector<Piece> pieces;
  bool byte_fallback = false;
  int32_t unk_id = 0;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  // BOS / EOS / pad: -1 (the default) for GGUF vocabularies, whose conventions come from the
  // GGUF keys. A tokenizer.model written from a GGUF (export/hf_tokenizer_files.h) sets them
  // and name_special_pieces, which also writes the text of the unk / bos / eos / pad pieces
  // (fields 45-48) so that the library's unk_id(), bos_id() ... find them.
  int32_t bos_id = -1, eos_id = -1, pad_id = -1;
  bool name_special_pieces = false;
};

std::string serialize_sentencepiece_model(const SentencePieceModelSpec& spec);

}  // namespace qlt::tokenizer
