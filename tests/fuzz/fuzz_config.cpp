// Fuzz target: a config file and its --set overrides -> qlt::load_config, then config_to_text.
//
// Input layout: the bytes before the first NUL byte are the config file's text; the bytes
// after it are zero or more `--set` arguments, one per line ("dotted.key=value", exactly as
// the shell would pass them; an empty line is skipped). An input without NUL is a config file
// with no overrides.
//
// Beyond "no crash, no exception other than UserError": the effective config that
// config_to_text prints (what `qlora-train config` shows and every run writes to its
// config.json) must load again and print the same text.
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "fuzz_util.h"

namespace {

const qlt::fuzz::ScratchDir& scratch() {
  static const qlt::fuzz::ScratchDir dir("config");
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlt::fuzz::quiet_once();
  const std::string_view input = qlt::fuzz::as_text(data, size);
  const size_t nul = input.find('\0');
  const std::string_view file_text = input.substr(0, nul);
  std::vector<std::string> overrides;
  if (nul != std::string_view::npos) {
    std::string_view rest = input.substr(nul + 1);
    while (!rest.empty()) {
      const size_t newline = rest.find('\n');
      const std::string_view line = rest.substr(0, newline);
      if (!line.empty()) overrides.emplace_back(line);
      if (newline == std::string_view::npos) break;
      rest.remove_prefix(newline + 1);
    }
  }
  const auto path = scratch() / "config.json";
  qlt::fuzz::write_file(path, file_text);

  std::string text;
  if (!qlt::fuzz::accepts([&] { text = qlt::config_to_text(qlt::load_config(path, overrides)); }))
    return 0;

  // The printed effective config is itself a valid config that means the same.
  const auto again = scratch() / "effective.json";
  qlt::fuzz::write_file(again, text);
  std::string text_again;
  try {
    text_again = qlt::config_to_text(qlt::load_config(again));
  } catch (const qlt::UserError& e) {
    QLT_FUZZ_REQUIRE(false, "the effective config does not load again: %s\n%s", e.what(),
                     text.c_str());
  }
  QLT_FUZZ_REQUIRE(text_again == text, "the effective config changes when loaded again:\n%s\n%s",
                   text.c_str(), text_again.c_str());
  return 0;
}
