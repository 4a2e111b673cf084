// Malformed safetensors files, built byte by byte: each must give a UserError that names the
// file, the tensor and what is wrong -- never a crash or an out-of-bounds read (run under
// QLT_SANITIZE to check the latter).
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_test_util.h"

namespace {

using qlt::io::SafetensorsFile;
using qlt::test::require_user_error;
using qlt::test::st_bytes;
using qlt::test::TempDir;

const std::string kEightBytes(8, '\0');  // data of one F32 [2] tensor

// Writes `bytes` as a file and requires open() to fail with a message naming the file and
// containing every one of `parts`.
void require_bad_file(const std::string& bytes, std::vector<std::string> parts) {
  TempDir dir;
  const auto path = dir / "bad.safetensors";
  qlt::test::write_bytes(path, bytes);
  parts.push_back(path.string());
  parts.push_back("bad safetensors file");
  require_user_error([&] { SafetensorsFile::open(path); }, parts);
}

// A header with one tensor "w" whose entry is `entry`, followed by `data`.
std::string one_tensor(const std::string& entry, const std::string& data = kEightBytes) {
  return st_bytes("{\"w\":" + entry + "}", data);
}

}  // namespace

TEST_CASE("safetensors: a valid hand-made file opens (baseline of the error cases)",
          "[safetensors]") {
  TempDir dir;
  qlt::test::write_bytes(dir / "ok.safetensors",
                         one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"));
  const auto file = SafetensorsFile::open(dir / "ok.safetensors");
  REQUIRE(file.tensors().size() == 1);
  CHECK(file.tensor("w").sizes() == at::IntArrayRef{2});
}

TEST_CASE("safetensors: a file shorter than the 8-byte length prefix", "[safetensors]") {
  SECTION("5 bytes") { require_bad_file("abcde", {"5 bytes long", "truncated", "re-download"}); }
  SECTION("empty") { require_bad_file("", {"0 bytes long", "truncated"}); }
}

TEST_CASE("safetensors: a header length larger than the file", "[safetensors]") {
  require_bad_file(st_bytes("{}", "", 1000),
                   {"header length 1000", "runs past the end", "10-byte file", "truncated"});
}

TEST_CASE("safetensors: an absurdly large header length", "[safetensors]") {
  SECTION("just over 100 MB") {
    require_bad_file(st_bytes("{}", "", 100'000'001), {"exceeds the 100000000-byte limit"});
  }
  SECTION("2^64 - 1 (would overflow 8 + length)") {
    require_bad_file(st_bytes("{}", "", UINT64_MAX), {"exceeds the 100000000-byte limit"});
  }
}

TEST_CASE("safetensors: a header that is not valid JSON", "[safetensors]") {
  SECTION("cut off") { require_bad_file(st_bytes(R"({"w": {"dtype")"), {"not valid JSON"}); }
  SECTION("binary garbage") { require_bad_file(st_bytes("\x01\x02\xff"), {"not valid JSON"}); }
  SECTION("zero-length header") { require_bad_file(st_bytes(""), {"not valid JSON"}); }
  SECTION("invalid UTF-8 in a name") {
    require_bad_file(st_bytes("{\"\xff\":1}"), {"not valid JSON"});
  }
}

TEST_CASE("safetensors: a header that is not a JSON object", "[safetensors]") {
  SECTION("array") { require_bad_file(st_bytes("[1,2]"), {"must be a JSON object", "array"}); }
  SECTION("string") { require_bad_file(st_bytes("\"x\""), {"must be a JSON object", "string"}); }
}

TEST_CASE("safetensors: an entry missing a key", "[safetensors]") {
  SECTION("dtype") {
    require_bad_file(one_tensor(R"({"shape":[2],"data_offsets":[0,8]})"),
                     {"tensor 'w'", "\"dtype\" is missing"});
  }
  SECTION("shape") {
    require_bad_file(one_tensor(R"({"dtype":"F32","data_offsets":[0,8]})"),
                     {"tensor 'w'", "\"shape\" is missing"});
  }
  SECTION("data_offsets") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":[2]})"),
                     {"tensor 'w'", "\"data_offsets\" is missing"});
  }
}

TEST_CASE("safetensors: an entry with wrong JSON types", "[safetensors]") {
  SECTION("entry is not an object") {
    require_bad_file(one_tensor("[1,2]"), {"tensor 'w'", "must be a JSON object"});
  }
  SECTION("dtype is a number") {
    require_bad_file(one_tensor(R"({"dtype":7,"shape":[2],"data_offsets":[0,8]})"),
                     {"tensor 'w'", "\"dtype\" must be a string"});
  }
  SECTION("shape is a string") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})"),
                     {"tensor 'w'", "\"shape\" must be an array"});
  }
  SECTION("shape holds a float") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})"),
                     {"tensor 'w'", "shape[0] must be a non-negative integer", "2.5"});
  }
  SECTION("shape holds a string") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})"),
                     {"tensor 'w'", "shape[0] must be a non-negative integer"});
  }
  SECTION("data_offsets has three numbers") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,9]})"),
                     {"tensor 'w'", "\"data_offsets\" must be an array [begin, end]"});
  }
  SECTION("data_offsets is an object") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":{"a":0}})"),
                     {"tensor 'w'", "\"data_offsets\" must be an array [begin, end]"});
  }
  SECTION("data_offsets beyond u64 (parsed as a float)") {
    require_bad_file(
        one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,99999999999999999999]})"),
        {"tensor 'w'", "data_offsets[1] (end) must be a non-negative integer"});
  }
}

TEST_CASE("safetensors: a negative dimension", "[safetensors]") {
  require_bad_file(one_tensor(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"),
                   {"tensor 'w'", "shape[0] is negative (-2)"});
}

TEST_CASE("safetensors: a negative data offset", "[safetensors]") {
  require_bad_file(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,8]})"),
                   {"tensor 'w'", "data_offsets[0] (begin) is negative"});
}

TEST_CASE("safetensors: a shape whose element count overflows", "[safetensors]") {
  SECTION("product of dims overflows u64") {
    require_bad_file(
        one_tensor(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"),
        {"tensor 'w'", "too many elements"});
  }
  SECTION("product overflows, then a zero dim (must not be accepted as 0 elements)") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":[4294967296,4294967296,0],)"
                                R"("data_offsets":[0,0]})",
                                ""),
                     {"tensor 'w'", "too many elements"});
  }
  SECTION("element count fits, byte size overflows") {
    require_bad_file(
        one_tensor(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]})"),
        {"tensor 'w'", "too many elements"});
  }
  SECTION("a single dimension beyond int64") {
    require_bad_file(
        one_tensor(R"({"dtype":"U8","shape":[10000000000000000000],"data_offsets":[0,8]})"),
        {"tensor 'w'", "shape[0] = 10000000000000000000 is too large"});
  }
}

TEST_CASE("safetensors: data_offsets that begin after they end", "[safetensors]") {
  require_bad_file(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"),
                   {"tensor 'w'", "[8, 0] begin after they end"});
}

TEST_CASE("safetensors: data_offsets outside the data buffer", "[safetensors]") {
  SECTION("end past the buffer") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"),
                     {"tensor 'w'", "[0, 16] reach past the end of the 8-byte data buffer"});
  }
  SECTION("huge offsets (would wrap a pointer)") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":[2],)"
                                R"("data_offsets":[18446744073709551608,18446744073709551615]})"),
                     {"tensor 'w'", "reach past the end"});
  }
}

TEST_CASE("safetensors: two tensors that overlap", "[safetensors]") {
  require_bad_file(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            std::string(12, '\0')),
                   {"tensor 'b'", "overlap those of tensor 'a' [0, 8]"});
}

TEST_CASE("safetensors: an unknown or unsupported dtype", "[safetensors]") {
  SECTION("unknown") {
    require_bad_file(
        one_tensor(R"({"dtype":"F12","shape":[2],"data_offsets":[0,8]})"),
        {"tensor 'w'", "dtype \"F12\" is not supported", "supported dtypes are", "BF16"});
  }
  SECTION("sub-byte F4") {
    require_bad_file(one_tensor(R"({"dtype":"F4","shape":[16],"data_offsets":[0,8]})"),
                     {"tensor 'w'", "dtype \"F4\" is not supported"});
  }
  SECTION("lower-case spelling") {
    require_bad_file(one_tensor(R"({"dtype":"f32","shape":[2],"data_offsets":[0,8]})"),
                     {"tensor 'w'", "dtype \"f32\" is not supported"});
  }
}

TEST_CASE("safetensors: a shape whose byte size disagrees with its offsets", "[safetensors]") {
  require_bad_file(
      one_tensor(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"),
      {"tensor 'w'", "shape [3] of dtype F32 needs 12 bytes", "data_offsets [0, 8] hold 8"});
}

TEST_CASE("safetensors: data buffer not fully covered by tensors", "[safetensors]") {
  SECTION("gap before a tensor") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})"),
                     {"tensor 'w'", "bytes [0, 4) of the data buffer before it belong to no"});
  }
  SECTION("trailing bytes after the last tensor") {
    require_bad_file(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})"),
                     {"the last 4 bytes of the 8-byte data buffer belong to no tensor"});
  }
  SECTION("data but no tensors") { require_bad_file(st_bytes("{}", "xyz"), {"the last 3 bytes"}); }
}

TEST_CASE("safetensors: a name that appears twice in the header", "[safetensors]") {
  require_bad_file(st_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            kEightBytes),
                   {"key \"w\"", "appears twice"});
}

TEST_CASE("safetensors: __metadata__ that is not a string->string object", "[safetensors]") {
  SECTION("not an object") {
    require_bad_file(st_bytes(R"({"__metadata__":["a"]})"),
                     {"\"__metadata__\" must be an object of strings, not array"});
  }
  SECTION("a non-string value") {
    require_bad_file(st_bytes(R"({"__metadata__":{"format":"pt","step":3}})"),
                     {"\"__metadata__\" value of \"step\" must be a string, not 3"});
  }
}

TEST_CASE("safetensors: a BOOL tensor holding a byte other than 0/1", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "bool.safetensors";
  qlt::test::write_bytes(path, one_tensor(R"({"dtype":"BOOL","shape":[8],"data_offsets":[0,8]})",
                                          std::string("\x00\x01\x00\x02\x00\x00\x00\x00", 8)));
  const auto file = SafetensorsFile::open(path);  // values are checked when read
  require_user_error([&] { file.tensor("w"); },
                     {path.string(), "tensor 'w'", "BOOL byte 3 of the tensor is 2"});
}

TEST_CASE("safetensors: a path that is missing or not a file", "[safetensors]") {
  TempDir dir;
  require_user_error([&] { SafetensorsFile::open(dir / "nope.safetensors"); },
                     {(dir / "nope.safetensors").string(), "No such file"});
  require_user_error([&] { SafetensorsFile::open(dir.path); },
                     {dir.path.string(), "not a regular file but a directory"});
}

TEST_CASE("safetensors: asking for a tensor the file does not hold", "[safetensors]") {
  TempDir dir;
  qlt::test::write_bytes(dir / "ok.safetensors",
                         one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"));
  const auto file = SafetensorsFile::open(dir / "ok.safetensors");
  CHECK_FALSE(file.contains("v"));
  require_user_error([&] { file.tensor("v"); }, {"tensor 'v' is not in", "ok.safetensors"});
}
