#include "export/export_format.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <system_error>

#include "core/did_you_mean.h"
#include "core/errors.h"
#include "export/gguf_export.h"
#include "export/hf_export.h"
#include "export/peft_adapter.h"
#include "io/atomic_dir.h"
#include "io/atomic_file.h"

namespace qlt::exporter {
namespace {

namespace fs = std::filesystem;

// ---- writers of the rows that have no file of their own ----------------------------------

// "peft": the adapter as trained (model::peft_lora_tensors; native kinds also keep their own
// file), what `train` writes into final/.
ExportSummary write_peft_folder(const ExportInput& input, const fs::path& dir) {
  TORCH_CHECK(input.model.has_adapters(), "export peft: the model has no adapter attached");
  write_peft_adapter(dir, input.model, input.source.string());
  return {};
}

quant::WeightFormat dense_format(const QuantizationConfig&, const adapters::AdapterOptions&) {
  return quant::DenseFormat{};
}

// hf-nf4: NF4 with quantization.block_size / double_quant, whatever the base was.
quant::WeightFormat nf4_format(const QuantizationConfig& q, const adapters::AdapterOptions&) {
  return quant::Nf4Options{q.block_size, q.double_quant};
}

// gguf-q4_1: INT4 group 32 (= Q4_1 blocks, written as stored) when that is where the training
// lives: an L4Q quantizer of a group size that is a multiple of 32, any bits <= 4 (its codes,
// exactly: a group of 64 repeats its scale and offset in two blocks), or an INT4 g32 base
// (QA-BLoRA folds into its offsets exactly; a LoRA on it is re-quantized by the merge; linears
// without an adapter stay as stored). Otherwise dense, and the GGUF writer quantizes and
// reports the error.
quant::WeightFormat q4_1_format(const QuantizationConfig& q, const adapters::AdapterOptions& a) {
  const bool l4q_blocks = a.kind == adapters::AdapterKind::kL4q && a.l4q.group_size % 32 == 0;
  if (l4q_blocks || (q.type == "int4" && q.group_size == 32)) return quant::Int4Options{32};
  return quant::DenseFormat{};
}

// A GGUF file of one file type (export/gguf_export.h); the writer's report becomes notes.
template <GgufFileType kType>
ExportSummary write_gguf_file(const ExportInput& input, const fs::path& file) {
  const GgufExportReport report = write_gguf_model(file, input.model, input.tokenizer, kType,
                                                   {"", input.source, input.linears});
  // The report names the staging file (<out>.tmp-<pid>): name the file it becomes instead
  // (write_export lists the file itself).
  std::string note = describe(report);
  const std::string staged = file.string();
  const std::string final_name = staged.substr(0, staged.rfind(".tmp-"));
  for (size_t at = note.find(staged); at != std::string::npos; at = note.find(staged, at))
    note.replace(at, staged.size(), final_name);
  ExportSummary summary;
  summary.notes.push_back(note);
  return summary;
}

// ---- THE table ----------------------------------------------------------------------------

constexpr ExportFormat kFormats[] = {
    {"peft",
     "the adapter only, in PEFT's folder layout (adapter_model.safetensors + "
     "adapter_config.json; native kinds also qlora_adapter.safetensors), for PEFT, vLLM and "
     "--checkpoint",
     nullptr, ExportOutput::kFolder, write_peft_folder},
    {"hf-bf16",
     "the merged model as a Hugging Face folder in bf16 (safetensors, sharded above "
     "--shard-size; config.json; tokenizer files), for transformers, vLLM and model.path",
     dense_format, ExportOutput::kFolder, write_hf_bf16},
    {"hf-nf4",
     "the merged model re-quantized to NF4 (quantization.block_size, double_quant) in "
     "bitsandbytes' layout, as a Hugging Face folder: transformers + bitsandbytes and "
     "model.path load it as stored",
     nf4_format, ExportOutput::kFolder, write_hf_nf4},
    {"gguf-f16", "the merged model as one GGUF file, linears in F16, for llama.cpp and ollama",
     dense_format, ExportOutput::kFile, write_gguf_file<GgufFileType::kF16>},
    {"gguf-bf16", "the merged model as one GGUF file, linears in BF16", dense_format,
     ExportOutput::kFile, write_gguf_file<GgufFileType::kBF16>},
    {"gguf-q8_0", "the merged model as one GGUF file, linears in Q8_0", dense_format,
     ExportOutput::kFile, write_gguf_file<GgufFileType::kQ8_0>},
    {"gguf-q4_0", "the merged model as one GGUF file, linears in Q4_0", dense_format,
     ExportOutput::kFile, write_gguf_file<GgufFileType::kQ4_0>},
    {"gguf-q4_1",
     "the merged model as one GGUF file, linears in Q4_1 (QA-BLoRA and L4Q g32 models and INT4 "
     "g32 bases are written as stored: no re-quantization)",
     q4_1_format, ExportOutput::kFile, write_gguf_file<GgufFileType::kQ4_1>},
};

// ---- atomic output ------------------------------------------------------------------------

// `path` without a trailing separator ("out/" -> "out"), as AtomicDir treats it.
fs::path without_trailing_slash(fs::path path) {
  if (!path.has_filename() && path.has_parent_path()) path = path.parent_path();
  return path;
}

// Whether `inner` is `outer` or lies inside it (both made absolute and normalized; symbolic
// links on the way resolved where they exist).
bool is_within(const fs::path& inner, const fs::path& outer) {
  std::error_code ec;
  const fs::path a = fs::weakly_canonical(fs::absolute(inner), ec);
  if (ec) return false;
  const fs::path b = fs::weakly_canonical(fs::absolute(outer), ec);
  if (ec) return false;
  auto ai = a.begin();
  for (auto bi = b.begin(); bi != b.end(); ++bi, ++ai) {
    if (bi->empty()) continue;  // a trailing separator
    if (ai == a.end() || *ai != *bi) return false;
  }
  return true;
}

// Sizes of the files the writer left in the folder `target`, relative to it, for a summary
// that lists none.
std::vector<std::pair<std::string, int64_t>> listed_files(const fs::path& target) {
  std::vector<std::pair<std::string, int64_t>> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(target, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec))
      files.emplace_back(fs::relative(it->path(), target).string(),
                         static_cast<int64_t>(it->file_size(ec)));
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

int64_t ExportSummary::total_bytes() const {
  int64_t total = 0;
  for (const auto& [name, bytes] : files) total += bytes;
  return total;
}

std::span<const ExportFormat> export_formats() { return kFormats; }

std::vector<std::string_view> export_format_names() {
  std::vector<std::string_view> names;
  for (const auto& f : kFormats) names.push_back(f.name);
  return names;
}

const ExportFormat& export_format(std::string_view name) {
  for (const auto& f : kFormats)
    if (f.name == name) return f;
  std::vector<std::string> names;
  for (const auto& f : kFormats) names.emplace_back(f.name);
  const auto match = closest_match(name, names);
  user_error("--format {}: unknown export format; {}use one of {}", abridged(name),
             match ? fmt::format("did you mean '{}'? ", *match) : "", fmt::join(names, ", "));
}

void check_export_target(const ExportFormat& format, const fs::path& out_arg, bool overwrite,
                         const std::vector<fs::path>& inputs) {
  if (out_arg.empty()) user_error("--out is empty; give the path to write the export to");
  if (out_arg.native().size() >= PATH_MAX)
    user_error("--out: {}; choose a shorter path", path_too_long("the path", out_arg.native()));
  const fs::path out = without_trailing_slash(out_arg);
  const std::string name = out.filename().string();
  if (name.empty() || name == "." || name == "..")
    user_error("--out {}: give the {} a name", out_arg.string(),
               format.output == ExportOutput::kFolder ? "folder" : "file");
  if (name.size() + 32 > NAME_MAX)  // room for ".tmp-<pid>"
    user_error("--out: {}; choose a shorter name", path_too_long("its last name", name));

  const fs::path folder = io::folder_of(out);
  std::error_code ec;
  const fs::file_status folder_status = fs::status(folder, ec);
  if (!fs::exists(folder_status)) {
    user_error(
        "--out {}: the folder {} does not exist{}; create it first", out.string(), folder.string(),
        ec && ec != std::errc::no_such_file_or_directory ? fmt::format(" ({})", ec.message()) : "");
  }
  if (!fs::is_directory(folder_status))
    user_error("--out {}: {} is a file, not a folder", out.string(), folder.string());
  if (::access(folder.c_str(), W_OK | X_OK) != 0) {
    user_error("--out {}: the folder {} is not writable ({}); choose another path", out.string(),
               folder.string(), std::strerror(errno));
  }

  const fs::file_status status = fs::symlink_status(out, ec);
  if (fs::exists(status)) {
    if (!overwrite) {
      user_error(
          "--out {}: it already exists; choose another path, or pass --overwrite to replace it "
          "(atomically: it stays as it is unless the export completes)",
          out.string());
    }
    const bool want_folder = format.output == ExportOutput::kFolder;
    if (want_folder && !fs::is_directory(status))
      user_error(
          "--out {}: it exists and is not a folder; {} writes a folder, so it is not "
          "replaced",
          out.string(), format.name);
    if (!want_folder && !fs::is_regular_file(status))
      user_error(
          "--out {}: it exists and is not a file; {} writes one file, so it is not "
          "replaced",
          out.string(), format.name);
  }
  for (const auto& input : inputs) {
    if (!input.empty() && is_within(input, out)) {
      user_error("--out {}: it is or holds {}, an input of this export; write elsewhere",
                 out.string(), input.string());
    }
  }
}

ExportSummary write_export(const ExportFormat& format, const ExportInput& input,
                           const fs::path& out_arg, bool overwrite) {
  const fs::path out = without_trailing_slash(out_arg);
  ExportSummary summary;
  if (format.output == ExportOutput::kFolder) {
    io::AtomicDir dir(out, overwrite);
    summary = format.write(input, dir.path());
    if (summary.files.empty()) summary.files = listed_files(dir.path());
    dir.commit();
  } else {
    io::StagedFile file(out, overwrite);
    summary = format.write(input, file.path());
    if (summary.files.empty())
      summary.files = {{out.filename().string(), static_cast<int64_t>(fs::file_size(file.path()))}};
    file.commit();
  }
  return summary;
}

}  // namespace qlt::exporter
