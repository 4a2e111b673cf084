// Malformed GGUF files, built field by field (gguf_test_util.h): each must give a UserError
// naming the file, the key or tensor and what is wrong -- never a crash, an out-of-bounds
// read or a huge allocation (the ASan build runs these too). Then every truncation of a valid
// file and every single-byte corruption of it.
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_test_util.h"

namespace {

using qlt::io::GgufFile;
using qlt::io::GgufValue;
using qlt::io::GgufValueType;
using qlt::io::GgufWriter;
using qlt::test::require_user_error;
using qlt::test::gguf::array_value;
using qlt::test::gguf::gstr;
using qlt::test::gguf::info;
using qlt::test::gguf::kv;
using qlt::test::gguf::kv_str;
using qlt::test::gguf::kv_u32;
using qlt::test::gguf::parse;
using qlt::test::gguf::pattern;
using qlt::test::gguf::RawGguf;
using qlt::test::gguf::small_model_writer;
using qlt::test::gguf::u32;
using qlt::test::gguf::u64;

constexpr uint32_t kF32 = 0, kF16 = 1, kQ8_0 = 8, kQ4_K = 12, kF64 = 28;
constexpr auto kU8 = static_cast<uint32_t>(GgufValueType::UINT8);
constexpr auto kU32 = static_cast<uint32_t>(GgufValueType::UINT32);
constexpr auto kStr = static_cast<uint32_t>(GgufValueType::STRING);
constexpr auto kArr = static_cast<uint32_t>(GgufValueType::ARRAY);

// A valid file: two keys; tensor 'a' F32 [32] at 0 (128 bytes), 'b' F16 dims {4, 2} at 128
// (16 bytes).
RawGguf base_gguf() {
  RawGguf f;
  f.kvs = {kv_str("general.architecture", "llama"), kv_u32("llama.block_count", 1)};
  f.infos = {info("a", {32}, kF32, 0), info("b", {4, 2}, kF16, 128)};
  const auto data = pattern(144);
  f.data.assign(data.begin(), data.end());
  return f;
}

struct GgufErrorCase {
  std::string name;
  std::string bytes;
  std::vector<std::string> parts;  // all must appear in the message
};

// `n` nested arrays around an empty UINT8 array (n + 1 levels in all).
std::string nested_arrays(int n) {
  std::string v = array_value(kU8, 0, "");
  for (int i = 0; i < n; ++i) v = array_value(kArr, 1, v);
  return v;
}

std::vector<GgufErrorCase> gguf_error_cases() {
  std::vector<GgufErrorCase> c;
  const auto add = [&](std::string name, const RawGguf& f, std::vector<std::string> parts) {
    c.push_back({std::move(name), f.bytes(), std::move(parts)});
  };
  const auto with = [](auto change) {
    RawGguf f = base_gguf();
    change(f);
    return f;
  };
  const std::string fixc = "truncated, corrupt or not a GGUF file";
  const std::string trunc = "the file is truncated";

  // ---- header
  add("bad magic", with([](RawGguf& f) { f.magic = "GGUX"; }),
      {"the header (byte 0)", "does not start with the magic \"GGUF\"", "'GGUX'",
       "not a GGUF file"});
  c.push_back({"empty file", "", {"the header", "the file (0 bytes)", "magic"}});
  add("GGJT file", with([](RawGguf& f) { f.magic = "tjgg"; }), {"GGML/GGMF/GGJT", "convert"});
  add("version 1", with([](RawGguf& f) { f.version = 1; }),
      {"the header (byte 4)", "GGUF version 1", "no longer supported", "convert the model again"});
  add("version 4", with([](RawGguf& f) { f.version = 4; }),
      {"(byte 4)", "GGUF version 4 is not supported (versions 2 and 3 are)", "newer"});
  add("version 0", with([](RawGguf& f) { f.version = 0; }), {"GGUF version 0 is not supported"});
  add("big-endian", with([](RawGguf& f) { f.version = 0x03000000; }),
      {"0x03000000", "big-endian", "gguf_convert_endian.py"});
  c.push_back({"truncated header",
               base_gguf().bytes().substr(0, 13),
               {"the header (byte 8)", "the tensor count (u64) takes 8 bytes", trunc}});
  add("2^60 metadata entries", with([](RawGguf& f) { f.kv_count = uint64_t{1} << 60; }),
      {"the header", "claims 1152921504606846976 metadata entries", fixc});
  add("2^64-1 tensors", with([](RawGguf& f) { f.tensor_count = UINT64_MAX; }),
      {"claims 18446744073709551615 tensors"});

  // ---- keys and values
  // Offsets in base_gguf(): header 24 bytes, entry #0 45, entry #1 33 (at 69), tensor info 'a' 33
  // (at 102), 'b' 41 (at 135), data at 192.
  RawGguf no_tensors = base_gguf();  // so that the header's tensor count does not refuse first
  no_tensors.infos.clear();
  no_tensors.data.clear();
  c.push_back({"truncated key",
               no_tensors.bytes().substr(0, 69 + 8 + 5),
               {"metadata entry #1 (after key 'general.architecture') (byte 69)",
                "the key claims 17 bytes but only 5 are left", "truncated"}});
  add("key length beyond the file", with([](RawGguf& f) { f.kvs[1] = u64(60000) + "llama"; }),
      {"metadata entry #1", "the key claims 60000 bytes but only", "truncated"});
  add("key of 65536 bytes", with([](RawGguf& f) { f.kvs[1] = kv_u32(std::string(65536, 'k'), 1); }),
      {"metadata entry #1", "the key is 65536 bytes long; at most 65535"});
  add("string length beyond the file",
      with([](RawGguf& f) { f.kvs.push_back(kv("general.name", kStr, u64(1000) + "abc")); }),
      {"key 'general.name'", "the string claims 1000 bytes but only"});
  add("truncated value", with([](RawGguf& f) {
        f.kvs.push_back(kv("x", GgufValueType::UINT64, "\x01\x02"));
        f.infos.clear();
        f.data.clear();
        f.alignment = 1;
      }),
      {"key 'x'", "a UINT64 takes 8 bytes", trunc});
  add("array of 2^60 strings in a small file", with([](RawGguf& f) {
        f.kvs.push_back(
            kv("tokenizer.ggml.tokens", kArr, array_value(kStr, uint64_t{1} << 60, "")));
      }),
      {"key 'tokenizer.ggml.tokens'", "an array of 1152921504606846976 STRING",
       "at least 8 bytes each", "does not fit"});
  add("array of 2^64-1 bytes",
      with([](RawGguf& f) { f.kvs.push_back(kv("arr", kArr, array_value(kU8, UINT64_MAX, ""))); }),
      {"key 'arr'", "18446744073709551615 UINT8"});
  add("truncated array", with([](RawGguf& f) {
        f.kvs.push_back(kv("arr", kArr, array_value(kU32, 3, u32(1) + u32(2) + "\x03")));
        f.infos.clear();
        f.data.clear();
        f.alignment = 1;
      }),
      {"key 'arr'", "an array of 3 UINT32 (at least 4 bytes each) does not fit in the 9 bytes"});
  add("truncated inner array", with([](RawGguf& f) {
        f.kvs.push_back(
            kv("n", kArr,
               array_value(kArr, 2, array_value(kU8, 1, "\x07") + array_value(kU8, 5, "ab"))));
        f.infos.clear();
        f.data.clear();
        f.alignment = 1;
      }),
      {"key 'n' element [1]", "an array of 5 UINT8", "does not fit in the 2 bytes"});
  add("truncated string in an array", with([](RawGguf& f) {
        f.kvs.push_back(kv("toks", kArr, array_value(kStr, 2, gstr("ab") + u64(9) + "abc")));
        f.infos.clear();
        f.data.clear();
        f.alignment = 1;
      }),
      {"key 'toks' element [1]", "the string claims 9 bytes but only 3"});
  add("unknown value type",
      with([](RawGguf& f) { f.kvs[1] = kv("llama.block_count", 13u, u32(1)); }),
      {"key 'llama.block_count' (byte 94)", "unknown value type id 13 (GGUF defines 0 to 12)"});
  add("unknown array element type",
      with([](RawGguf& f) { f.kvs.push_back(kv("arr", kArr, array_value(99, 0, ""))); }),
      {"key 'arr'", "unknown array element type id 99"});
  add("arrays nested 9 deep",
      with([](RawGguf& f) { f.kvs.push_back(kv("deep", kArr, nested_arrays(8))); }),
      {"key 'deep' element [0][0][0][0][0][0][0]", "nested deeper than 8 levels"});
  add("BOOL byte 2",
      with([](RawGguf& f) { f.kvs.push_back(kv("b", GgufValueType::BOOL, "\x02")); }),
      {"key 'b'", "a BOOL byte is 2, not 0 or 1"});
  add("duplicate key",
      with([](RawGguf& f) { f.kvs.push_back(kv_str("general.architecture", "x")); }),
      {"key 'general.architecture'", "appears twice (metadata entries #0 and #2)",
       "each key once"});
  add("unprintable key", with([](RawGguf& f) { f.kvs[1] = kv("\xff\x01k", 42u, ""); }),
      {"key '\\xff\\x01k'", "unknown value type id 42"});

  // ---- general.alignment
  add("alignment 48", with([](RawGguf& f) { f.kvs.push_back(kv_u32("general.alignment", 48)); }),
      {"key 'general.alignment'", "the alignment 48 is not a power of two"});
  add("alignment 0", with([](RawGguf& f) { f.kvs.push_back(kv_u32("general.alignment", 0)); }),
      {"key 'general.alignment'", "the alignment 0 is not a power of two"});
  add("alignment as UINT64", with([](RawGguf& f) {
        f.kvs.push_back(kv("general.alignment", GgufValueType::UINT64, u64(64)));
      }),
      {"key 'general.alignment'", "it is UINT64 64, not a UINT32"});

  // ---- tensor infos
  c.push_back({"truncated tensor name",
               base_gguf().bytes().substr(0, 135 + 8),
               {"tensor info #1 (after tensor 'a') (byte 135)",
                "the tensor name claims 1 bytes but only 0"}});
  c.push_back({"truncated tensor info",
               base_gguf().bytes().substr(0, 135 + 9 + 4 + 12),
               {"tensor 'b' (byte 156)", "a dimension (u64) takes 8 bytes", trunc}});
  add("unknown tensor type", with([](RawGguf& f) { f.infos[0] = info("a", {32}, 99, 0); }),
      {"tensor 'a'", "unknown ggml type id 99"});
  add("removed tensor type", with([](RawGguf& f) { f.infos[0] = info("a", {32}, 31, 0); }),
      {"tensor 'a'", "ggml type 31 (Q4_0_4_4) was removed", "convert the model again"});
  add("5 dims", with([](RawGguf& f) {
        f.infos[0] = info("a", {32, 1, 1, 1, 1}, kF32, 0);
      }),
      {"tensor 'a'", "it has 5 dimensions; GGUF tensors have 1 to 4"});
  add("0 dims", with([](RawGguf& f) { f.infos[0] = info("a", {}, kF32, 0); }),
      {"tensor 'a'", "it has 0 dimensions"});
  add("2^32 dims", with([](RawGguf& f) { f.infos[0] = info("a", {32}, kF32, 0, UINT32_MAX); }),
      {"tensor 'a'", "it has 4294967295 dimensions"});
  add("dim 0", with([](RawGguf& f) {
        f.infos[1] = info("b", {4, 0}, kF16, 128);
      }),
      {"tensor 'b'", "dimension 1 (ne[1]) is 0; every dimension must be at least 1"});
  add("negative dim", with([](RawGguf& f) {
        f.infos[1] = info("b", {uint64_t(-5), 2}, kF16, 128);
      }),
      {"tensor 'b'", "dimension 0 (ne[0]) is 18446744073709551611 (-5 as a signed 64-bit"});
  add("dims whose product overflows", with([](RawGguf& f) {
        f.infos[1] = info("b", {uint64_t{1} << 32, uint64_t{1} << 32}, kF16, 128);
      }),
      {"tensor 'b'", "the dimensions 4294967296 x 4294967296 hold more than 2^63 - 1 elements"});
  add("byte size that overflows", with([](RawGguf& f) {
        f.infos[1] = info("b", {uint64_t{1} << 31, uint64_t{1} << 31}, kF64, 128);
      }),
      {"tensor 'b'", "4611686018427387904 blocks of 8 bytes overflow"});
  add("row not a multiple of the block", with([](RawGguf& f) {
        f.infos[1] = info("b", {128, 2}, kQ4_K, 128);
      }),
      {"tensor 'b'", "rows (ne[0]) of 128 elements are not a multiple of the Q4_K block of 256"});
  add("Q8_0 row of 33", with([](RawGguf& f) { f.infos[1] = info("b", {33}, kQ8_0, 128); }),
      {"tensor 'b'", "33 elements", "Q8_0 block of 32"});
  add("misaligned offset", with([](RawGguf& f) {
        f.infos[1] = info("b", {4, 2}, kF16, 130);
      }),
      {"tensor 'b'", "data offset 130 is not a multiple of the alignment 32"});
  add("data outside the file", with([](RawGguf& f) {
        f.infos[1] = info("b", {4, 2}, kF16, 160);
      }),
      {"tensor 'b'", "16 bytes of F16 [4, 2] at data offset 160", "reaches past the end"});
  add("offset near 2^64", with([](RawGguf& f) {
        f.infos[1] = info("b", {4, 2}, kF16, UINT64_MAX - 31);
      }),
      {"tensor 'b'", "file byte beyond 2^64", "reaches past the end"});
  add("huge tensor in a small file",
      with([](RawGguf& f) { f.infos[1] = info("b", {uint64_t{1} << 40}, kF16, 128); }),
      {"tensor 'b'", "2199023255552 bytes", "reaches past the end"});
  c.push_back({"truncated data",
               base_gguf().bytes().substr(0, base_gguf().bytes().size() - 4),
               {"tensor 'b'", "reaches past the end of the file", trunc}});
  add("overlapping tensors", with([](RawGguf& f) {
        f.infos[1] = info("b", {4, 2}, kF16, 96);
      }),
      {"tensor 'b'", "its data [96, 112) overlaps that of tensor 'a' [0, 128)"});
  add("two tensors at one offset", with([](RawGguf& f) {
        f.infos[1] = info("b", {4, 2}, kF16, 0);
      }),
      {"overlaps that of tensor"});
  add("duplicate tensor", with([](RawGguf& f) {
        f.infos[1] = info("a", {4, 2}, kF16, 128);
      }),
      {"tensor 'a'", "the name appears twice (tensor infos #0 and #1)", "each tensor once"});
  return c;
}

}  // namespace

TEST_CASE("gguf errors: the base of the bad files is valid", "[gguf]") {
  const GgufFile f = parse(base_gguf().bytes());
  CHECK(f.metadata().size() == 2);
  CHECK(f.tensors().size() == 2);
  CHECK(f.data_offset() == 192);  // 24 + 45 + 33 + 33 + 41 = 176, padded to 32
  CHECK(f.tensor("b").nbytes == 16);
}

TEST_CASE("gguf errors: each bad file is a UserError naming the file, the key or tensor",
          "[gguf]") {
  for (const GgufErrorCase& c : gguf_error_cases()) {
    DYNAMIC_SECTION(c.name) {
      std::vector<std::string> parts = c.parts;
      parts.push_back("bad GGUF file test.gguf: ");
      require_user_error([&] { parse(c.bytes); }, parts);
    }
  }
}

TEST_CASE("gguf errors: too many metadata values is refused before they are allocated", "[gguf]") {
  // One UINT8 array of kMaxMetadataValues elements (plus the key itself: one too many);
  // refused after reading its count, before reserving 16 M values (~800 MB).
  RawGguf f;
  const uint64_t n = qlt::io::kMaxMetadataValues;
  f.kvs = {kv("big", kArr, array_value(kU8, n, std::string(n, '\x01')))};
  f.alignment = 1;
  require_user_error([&] { parse(f.bytes()); },
                     {"key 'big'", "more than 16777216 values", "corrupt"});
}

TEST_CASE("gguf errors: every truncation of a valid file is a UserError", "[gguf]") {
  GgufWriter w = small_model_writer();
  w.add("general.alignment", GgufValue::u32(64));
  const std::string bytes = w.to_bytes();
  const GgufFile good = parse(bytes);
  // Past the end of the last tensor only padding is left: cuts there leave a valid file.
  const auto& last = good.tensors().back();
  const uint64_t end = good.data_offset() + last.offset + last.nbytes;
  for (uint64_t cut = 0; cut < end; ++cut) {
    INFO("cut at byte " << cut);
    require_user_error([&] { parse(bytes.substr(0, cut)); }, {"bad GGUF file"});
  }
  CHECK(parse(bytes.substr(0, end)).tensors().size() == 3);
}

TEST_CASE("gguf errors: single-byte corruption is accepted or a UserError, never worse", "[gguf]") {
  const std::string bytes = small_model_writer().to_bytes();
  int refused = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (const char b : {'\x00', '\x01', '\x7f', '\x80', '\xff'}) {
      std::string bad = bytes;
      bad[i] = b;
      try {
        const GgufFile f = parse(bad);
        for (const auto& t : f.tensors()) {  // accepted: every tensor lies in the file
          REQUIRE(f.data_offset() + t.offset + t.nbytes <= bad.size());
          REQUIRE(f.tensor_bytes(t).size() == t.nbytes);
        }
      } catch (const qlt::UserError&) {
        ++refused;
      }
    }
  }
  CHECK(refused > 100);  // the corruption is seen, not silently accepted everywhere
}
