// Streaming generated text (cli/text_stream.h): characters split over tokens come out whole,
// U+FFFD and incomplete sequences are held back until completed or finished, a decoder that
// drops a leading space (SentencePiece) keeps it through the context, and the window restart
// changes nothing in the output.
#include <catch2/catch.hpp>
#include <map>

#include "cli/text_stream.h"

namespace {

using qlt::cli::TextStream;

// A byte-level decoder: each id is a byte string; an incomplete character at the end of the
// joined bytes becomes one U+FFFD, as the BPE decoders render it (tokenizer.h). (Only the
// incomplete endings these ids can make are handled.)
std::string decode_bytes(const std::vector<int64_t>& ids) {
  static const std::map<int64_t, std::string> bytes = {{1, "Hello"},    {2, " w"},   {3, "orld"},
                                                       {4, "\xE2\x82"}, {5, "\xAC"}, {6, "\xF0"},
                                                       {7, "\x9F\x98"}, {8, "\x80"}, {9, "!"}};
  std::string raw;
  for (auto id : ids) raw += bytes.at(id);
  for (const std::string incomplete : {"\xE2\x82", "\xF0\x9F\x98", "\xF0"}) {
    if (raw.size() >= incomplete.size() &&
        raw.compare(raw.size() - incomplete.size(), incomplete.size(), incomplete) == 0) {
      return raw.substr(0, raw.size() - incomplete.size()) + "\xEF\xBF\xBD";
    }
  }
  return raw;
}

std::string stream_all(TextStream& s, const std::vector<int64_t>& ids,
                       std::vector<std::string>* parts) {
  std::string out;
  for (auto id : ids) {
    parts->push_back(s.push(id));
    out += parts->back();
  }
  return out + s.finish();
}

}  // namespace

TEST_CASE("text stream: split characters come out whole, when complete", "[cli][text_stream]") {
  TextStream s(decode_bytes, {});
  std::vector<std::string> parts;
  const std::string all = stream_all(s, {1, 2, 3, 4, 5, 6, 7, 8, 9}, &parts);
  CHECK(all == "Hello world\xE2\x82\xAC\xF0\x9F\x98\x80!");  // "Hello world€😀!"
  CHECK(parts == std::vector<std::string>{"Hello", " w", "orld", "", "\xE2\x82\xAC", "", "",
                                          "\xF0\x9F\x98\x80", "!"});
}

TEST_CASE("text stream: an incomplete character at the end is given out by finish()",
          "[cli][text_stream]") {
  TextStream s(decode_bytes, {});
  CHECK(s.push(1) == "Hello");
  CHECK(s.push(4).empty());
  CHECK(s.finish() == "\xEF\xBF\xBD");  // U+FFFD, as the decoder renders it
}

TEST_CASE("text stream: the context gives the first token its leading space",
          "[cli][text_stream]") {
  // A SentencePiece-like decoder: "_x" pieces, the leading space of the text dropped.
  const auto decode = [](const std::vector<int64_t>& ids) {
    std::string text;
    for (auto id : ids) text += " w" + std::to_string(id);
    return text.substr(1);
  };
  TextStream with_context(decode, {7});
  CHECK(with_context.push(8) == " w8");
  TextStream without(decode, {});
  CHECK(without.push(8) == "w8");
  // Many tokens: the window restarts, the output is the text of the whole sequence.
  std::string out;
  std::vector<int64_t> ids = {7};
  TextStream long_stream(decode, {7});
  for (int64_t i = 0; i < 200; ++i) {
    out += long_stream.push(i);
    ids.push_back(i);
  }
  out += long_stream.finish();
  CHECK(out == decode(ids).substr(2));  // all but the context's "w7"
}

TEST_CASE("unfinished_tail: trailing U+FFFD and incomplete sequences", "[cli][text_stream]") {
  CHECK(qlt::cli::unfinished_tail("abc") == 0);
  CHECK(qlt::cli::unfinished_tail("ab\xE2\x82") == 2);
  CHECK(qlt::cli::unfinished_tail("ab\xE2\x82\xAC") == 0);
  CHECK(qlt::cli::unfinished_tail("ab\xEF\xBF\xBD") == 3);
  CHECK(qlt::cli::unfinished_tail("ab\xEF\xBF\xBD\xF0\x9F") == 5);
  CHECK(qlt::cli::unfinished_tail("\x80\x80") == 0);  // stray continuation bytes stay
}
