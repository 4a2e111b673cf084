// Shared by the GGUF reader's files (gguf.cpp, gguf_metadata.cpp) and the writer: how names
// from a file appear in messages. Not part of the API.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace qlt::io::gguf_detail {

inline constexpr uint64_t kDefaultAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT

// `text` (a key, tensor name or string value read from a file) in single quotes, safe to
// print: bytes that are not printable ASCII become \xNN, and text longer than `max` bytes
// keeps its start and says how long it was.
std::string quote_text(std::string_view text, size_t max = 120);

// The advice for a file that breaks the format.
inline constexpr std::string_view kFixCorrupt =
    "the file is truncated, corrupt or not a GGUF file; re-download it or convert the model "
    "again (llama.cpp: convert_hf_to_gguf.py)";

}  // namespace qlt::io::gguf_detail
