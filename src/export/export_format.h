// THE export-format table: what `qlora-train export --format F` can write. One row per format
// (export_format.cpp, kFormats): its name, what it writes, whether and into which weight
// format the adapter is merged first, whether the output is a folder or one file, and the
// function that writes it.
//
// Adding a format: its writer in its own file (export/<format>.{h,cpp}: a function with the
// ExportWriter signature that writes into the path it is given), then one row in kFormats.
// Nothing else changes: the command (cli/cmd_export.cpp) loads the model and adapter, merges
// when the row says so, and write_export makes the output atomic (the writer writes into a
// temporary folder or file beside --out, renamed into place when the writer returns) and
// checks --out before any work (check_export_target).
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "adapters/adapter.h"
#include "core/config.h"
#include "export/linear_source.h"
#include "model/llama.h"
#include "quant/weight_format.h"
#include "tokenizer/tokenizer.h"

namespace qlt::exporter {

// Whether a format writes a folder (--out is created as a folder) or one file.
enum class ExportOutput { kFolder, kFile };

// Options of the command that some writers use.
struct ExportSettings {
  // Largest safetensors shard (Hugging Face folders). transformers' save_pretrained default
  // max_shard_size "5GB" = 5 * 10^9 bytes; a tensor larger than this gets a shard of its own.
  int64_t max_shard_bytes = 5'000'000'000;
};

// What a writer is given.
struct ExportInput {
  // The model as loaded, with its adapters attached (the trained ones, from --checkpoint).
  // Merging rows write `linears` instead of its decoder linears.
  const model::LlamaModel& model;
  const tokenizer::Tokenizer& tokenizer;
  // model.path: a Hugging Face folder (config.json and tokenizer files are read from it) or a
  // GGUF file.
  std::filesystem::path source;
  ExportSettings settings;
  // Merging rows: the decoder linears merged into the row's target, made one at a time as the
  // writer reaches them (exporter::merged_linears). Empty: the model's own.
  LinearSource linears;
};

// What a writer reports; write_export adds up the bytes.
struct ExportSummary {
  std::vector<std::pair<std::string, int64_t>> files;  // path relative to --out, bytes
  std::vector<std::string> notes;  // lines for the user (e.g. what the output lacks and why)
  int64_t total_bytes() const;
};

// Writes the model into `target`: an existing empty folder (ExportOutput::kFolder) or the path
// of a file to create (kFile). UserError for bad input, RuntimeError for a failing machine.
using ExportWriter = ExportSummary (*)(const ExportInput& input,
                                       const std::filesystem::path& target);

// The weight format a merging row merges the adapter into (quantization.* gives its sizes; the
// adapter decides where an exact merge exists, e.g. L4Q into INT4 of its group size).
using MergeTarget = quant::WeightFormat (*)(const QuantizationConfig& quantization,
                                            const adapters::AdapterOptions& adapter);

struct ExportFormat {
  std::string_view name;    // --format value: "peft", "hf-bf16", ...
  std::string_view writes;  // one line for --help and the summary
  // nullptr: the adapter is written as it is (no merge); else the adapter is merged into the
  // frozen weights stored in this format before the writer runs (model::merge_adapters).
  MergeTarget merge_into;
  ExportOutput output;
  ExportWriter write;

  bool merges() const { return merge_into != nullptr; }
};

// The table, in the order --help lists it.
std::span<const ExportFormat> export_formats();
std::vector<std::string_view> export_format_names();

// The row named `name`; UserError "--format X: unknown export format; use one of ..." (with a
// did-you-mean) listing every name of the table.
const ExportFormat& export_format(std::string_view name);

// Checks --out before any work, so that a bad path costs nothing: not empty, not too long, its
// folder exists, is a folder and is writable; when --out exists, UserError unless `overwrite`
// (and then it must be of the format's kind: a folder for folder formats, a file for file
// formats); never one of `inputs` (model.path, the checkpoint) or a folder holding one of them.
void check_export_target(const ExportFormat& format, const std::filesystem::path& out,
                         bool overwrite, const std::vector<std::filesystem::path>& inputs);

// Runs format.write atomically: everything is written under a temporary name beside `out`
// ("<out>.tmp-<pid>", a folder or a file) and renamed to `out` once complete (with `overwrite`
// an existing `out` is replaced by an atomic swap). On any failure nothing is left at `out`
// (an existing one stays as it was) and the temporary is removed. Returns the writer's
// summary.
ExportSummary write_export(const ExportFormat& format, const ExportInput& input,
                           const std::filesystem::path& out, bool overwrite);

}  // namespace qlt::exporter
