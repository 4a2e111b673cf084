#include "io/folder_manifest.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/errors.h"
#include "core/json_reader.h"
#include "io/atomic_file.h"

namespace qlt::io {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kManifestFormat = "qlora-train checkpoint 1";

// Files under `dir` (recursively), as sorted relative paths; the manifest and `skip` excluded.
std::vector<std::string> content_files(const fs::path& dir, const std::string& skip) {
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string rel = fs::relative(entry.path(), dir).generic_string();
    if (rel == kManifestFile || (!skip.empty() && rel == skip)) continue;
    files.push_back(rel);
  }
  std::sort(files.begin(), files.end());
  return files;
}

// A manifest key must name a file inside the folder: relative, no "..".
bool is_inside(const std::string& rel) {
  const fs::path p(rel);
  if (rel.empty() || p.is_absolute()) return false;
  return std::none_of(p.begin(), p.end(), [](const fs::path& part) { return part == ".."; });
}

}  // namespace

std::string file_sha1(const fs::path& file) {
  // Streamed in 1 MiB chunks through OpenSSL's SHA-1: a checkpoint's optimizer state can be
  // gigabytes (8-bit AdamW of a 70B run's adapters), which must not be read into memory whole.
  constexpr size_t kChunkBytes = size_t{1} << 20;
  std::ifstream in(file, std::ios::binary);
  if (!in) user_error("{}: cannot read ({})", file.string(), std::strerror(errno));
  const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                    &EVP_MD_CTX_free);
  TORCH_CHECK(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha1(), nullptr) == 1,
              "file_sha1: OpenSSL could not start a SHA-1 digest");
  std::vector<char> chunk(kChunkBytes);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    const auto got = static_cast<size_t>(in.gcount());
    if (got > 0) TORCH_CHECK(EVP_DigestUpdate(ctx.get(), chunk.data(), got) == 1);
  }
  if (in.bad())
    user_error("{}: read error while hashing ({})", file.string(), std::strerror(errno));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_bytes = 0;
  TORCH_CHECK(EVP_DigestFinal_ex(ctx.get(), digest, &digest_bytes) == 1 && digest_bytes == 20);
  std::string hex;
  hex.reserve(2 * digest_bytes);
  for (unsigned int i = 0; i < digest_bytes; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

void write_folder_manifest(const fs::path& dir, const std::string& skip) {
  json manifest = {{"format", kManifestFormat}, {"files", json::object()}};
  for (const auto& rel : content_files(dir, skip)) {
    const fs::path file = dir / rel;
    manifest["files"][rel] = {{"bytes", fs::file_size(file)}, {"sha1", file_sha1(file)}};
  }
  write_file_atomically(dir / kManifestFile, manifest.dump(2) + "\n");
}

std::string folder_manifest_problem(const fs::path& dir, const std::string& skip) {
  std::error_code ec;
  if (!fs::is_regular_file(dir / kManifestFile, ec)) return "no manifest.json";
  json manifest;
  try {
    manifest = read_json_file(dir / kManifestFile);
  } catch (const UserError& e) {
    return fmt::format("manifest.json is not valid JSON ({})", e.what());
  }
  if (!manifest.is_object() || !manifest.contains("files") || !manifest["files"].is_object())
    return "manifest.json has no \"files\" object";
  for (const auto& [rel, entry] : manifest["files"].items()) {
    if (!is_inside(rel)) return fmt::format("manifest.json lists {}, outside the folder", rel);
    const fs::path file = dir / rel;
    if (!fs::is_regular_file(file, ec))
      return fmt::format("file {} listed in the manifest is missing", rel);
    if (!entry.is_object() || !entry.contains("bytes") || !entry["bytes"].is_number_unsigned() ||
        !entry.contains("sha1") || !entry["sha1"].is_string())
      return fmt::format("manifest.json entry {} is malformed (needs \"bytes\" and \"sha1\")", rel);
    const auto size = fs::file_size(file, ec);
    if (ec) return fmt::format("file {} cannot be read ({})", rel, ec.message());
    if (size != entry["bytes"].get<uint64_t>())
      return fmt::format("file {} has {} bytes, the manifest says {}", rel, size,
                         entry["bytes"].dump());
    try {
      if (file_sha1(file) != entry["sha1"].get<std::string>())
        return fmt::format("file {}: SHA-1 differs from the manifest (the file is corrupted)", rel);
    } catch (const UserError& e) {
      return e.what();
    }
  }
  for (const auto& rel : content_files(dir, skip)) {
    if (!manifest["files"].contains(rel)) return fmt::format("file {} is not in the manifest", rel);
  }
  return "";
}

}  // namespace qlt::io
