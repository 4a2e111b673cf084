#include "io/folder_manifest.h"

#include <c10/util/hash.h>
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
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
  std::ifstream in(file, std::ios::binary);
  if (!in) user_error("{}: cannot read", file.string());
  std::ostringstream bytes;
  bytes << in.rdbuf();
  // c10::sha1 (LibTorch) hashes a whole string; the folders hashed here are adapter-sized.
  return c10::sha1(bytes.str()).str();
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
