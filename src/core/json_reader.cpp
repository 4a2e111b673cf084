#include "core/json_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "core/errors.h"

namespace qlt {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Line and column (from 1) of byte offset `at` (0-based) in `text`.
void set_position(std::string_view text, std::size_t at, JsonError& error) {
  at = std::min(at, text.size());
  error.line = 1 + static_cast<std::size_t>(std::count(
                       text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
  const std::size_t newline = at == 0 ? std::string_view::npos : text.rfind('\n', at - 1);
  error.column = newline == std::string_view::npos ? at + 1 : at - newline;
}

// Offset of the bracket that first opens nesting level max_depth + 1 (strings skipped), or
// npos. Only called once the parser has seen that depth, to say where it is.
std::size_t too_deep_offset(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return i;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return std::string_view::npos;
}

// JSON Pointer-like path of the open containers ("/optimizer", "/messages/2").
struct Frame {
  bool is_object = false;
  std::set<std::string> keys;
  std::string pending_key;  // objects: the key whose value is being read
  std::size_t index = 0;    // arrays: the index of the element being read
};

std::string path_of(const std::vector<Frame>& frames) {
  std::string path;
  // The innermost frame is the object holding the duplicate; its own key is not part.
  for (std::size_t i = 0; i + 1 < frames.size(); ++i) {
    const Frame& f = frames[i];
    path += "/" + (f.is_object ? f.pending_key : std::to_string(f.index));
  }
  return path.empty() ? "the top-level object" : path;
}

struct DepthExceeded {};
struct DuplicateKey {
  std::string key, path;
};

// nlohmann's message without its "[json.exception.parse_error.101] parse error at line L,
// column C: " prefix (we give the position ourselves).
std::string parser_reason(const json::parse_error& e) {
  std::string what = e.what();
  if (const auto pos = what.find("column "); pos != std::string::npos) {
    if (const auto colon = what.find(": ", pos); colon != std::string::npos)
      return what.substr(colon + 2);
  }
  if (const auto pos = what.find("] "); pos != std::string::npos) return what.substr(pos + 2);
  return what;
}

// Extra advice for the parser errors a person can act on.
std::string parser_hint(const std::string& reason) {
  if (reason.find("UTF-8") != std::string::npos)
    return "; the text must be UTF-8: re-encode the file (e.g. iconv -t UTF-8)";
  if (reason.find("control character") != std::string::npos)
    return "; control characters (NUL, TAB, newline ...) inside a string must be escaped "
           "(\\u0000, \\t, \\n)";
  return "";
}

template <typename Json>
bool parse_bounded(std::string_view text, Json& out, JsonError& error, int max_depth) {
  std::vector<Frame> frames;
  const auto on_event = [&](int depth, json::parse_event_t event, Json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= max_depth) throw DepthExceeded{};
        frames.push_back(Frame{event == json::parse_event_t::object_start, {}, {}, 0});
        break;
      case json::parse_event_t::key: {
        Frame& f = frames.back();
        f.pending_key = parsed.template get<std::string>();
        if (!f.keys.insert(f.pending_key).second)
          throw DuplicateKey{f.pending_key, path_of(frames)};
        break;
      }
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        frames.pop_back();
        if (!frames.empty() && !frames.back().is_object) ++frames.back().index;
        break;
      case json::parse_event_t::value:
        if (!frames.empty() && !frames.back().is_object) ++frames.back().index;
        break;
    }
    return true;
  };
  try {
    out = Json::parse(text.begin(), text.end(), on_event);
    return true;
  } catch (const DepthExceeded&) {
    if (const std::size_t at = too_deep_offset(text, max_depth); at != std::string_view::npos)
      set_position(text, at, error);
    error.message = fmt::format(
        "nested deeper than {} levels of objects and arrays; nothing this program reads needs "
        "that many: check that it is the right file",
        max_depth);
  } catch (const DuplicateKey& d) {
    error.message = fmt::format(
        "key \"{}\" appears twice in {} (a JSON reader would silently keep one of them); "
        "remove one",
        d.key, d.path == "the top-level object" ? d.path : "the object at " + d.path);
  } catch (const json::out_of_range& e) {
    // 406: a number beyond a double ("1e309"); nlohmann names the number but no position.
    std::string what = e.what();
    if (const auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    const auto open = what.find('\''), close = what.rfind('\'');
    if (open != std::string::npos && close > open + 1) {
      if (const auto at = text.find(what.substr(open + 1, close - open - 1));
          at != std::string_view::npos)
        set_position(text, at, error);
    }
    error.message = what + "; numbers must lie within about +-1.8e308";
  } catch (const json::parse_error& e) {
    const std::string reason = parser_reason(e);
    // e.byte counts the bytes read when the error was found; the culprit is the one before.
    set_position(text, e.byte == 0 ? 0 : e.byte - 1, error);
    error.message = reason + parser_hint(reason);
  }
  out = Json();
  return false;
}

}  // namespace

bool try_parse_json(std::string_view text, json& out, JsonError& error, int max_depth) {
  return parse_bounded(text, out, error, max_depth);
}

bool try_parse_json(std::string_view text, nlohmann::ordered_json& out, JsonError& error,
                    int max_depth) {
  return parse_bounded(text, out, error, max_depth);
}

json parse_json(std::string_view text, std::string_view origin, int max_depth) {
  json out;
  JsonError error;
  if (!try_parse_json(text, out, error, max_depth)) {
    if (error.line == 0) user_error("{}: not valid JSON: {}", origin, error.message);
    user_error("{}:{}:{}: not valid JSON: {}", origin, error.line, error.column, error.message);
  }
  return out;
}

std::string read_text_file(const fs::path& file, std::string_view open_hint) {
  std::error_code ec;
  const auto status = fs::status(file, ec);
  if (ec == std::errc::filename_too_long)
    user_error("{}{}", path_too_long("the path", file.native()), open_hint);
  if (ec && ec != std::errc::no_such_file_or_directory)
    user_error("{}: cannot read ({}){}", file.string(), ec.message(), open_hint);
  if (!fs::exists(status)) user_error("{} does not exist{}", file.string(), open_hint);
  if (fs::is_directory(status))
    user_error("{} is a directory, not a file{}", file.string(), open_hint);
  std::ifstream in(file, std::ios::binary);
  if (!in) user_error("{}: cannot open ({}){}", file.string(), std::strerror(errno), open_hint);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) user_error("{}: read failed{}", file.string(), open_hint);
  return std::move(bytes).str();
}

json read_json_file(const fs::path& file, std::string_view open_hint, int max_depth) {
  const std::string text = read_text_file(file, open_hint);
  return parse_json(text, file.string(), max_depth);
}

}  // namespace qlt
