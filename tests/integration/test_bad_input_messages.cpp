// End to end: bad input that used to exit 1 with a raw library message, or 2 with a message
// that did not say what was wrong (issue 8): each exits 2 naming the problem, where it is and
// what to do. A full disk is a runtime failure: exit 1, naming the file.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "integration/run_binary.h"
#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "test_common.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::test::check_bad_input;
using qlt::test::kRoot;
using qlt::test::kTinyLlama;
using qlt::test::run_qlora_train;
using qlt::test::TempDir;

// A config in `dir` for the tiny model: eval on a few windows of the KJV eval chapters, and
// train on WordNet into dir/run. `edit` changes it first.
fs::path write_bad_input_config(const TempDir& dir, const std::function<void(json&)>& edit = {}) {
  json config = {{"model", {{"path", kTinyLlama.string()}, {"compute_dtype", "float32"}}},
                 {"data",
                  {{"train", (kRoot / "data/wordnet/train.jsonl").string()},
                   {"eval", (kRoot / "data/kjv/eval.jsonl").string()},
                   {"format", "text"},
                   {"max_seq_len", 64}}},
                 {"training", {{"device", "cpu"}, {"threads", 1}, {"max_steps", 1}}},
                 {"eval", {{"batch_size", 2}, {"max_batches", 1}}},
                 {"checkpoint", {{"output_dir", (dir / "run").string()}}}};
  if (edit) edit(config);
  const fs::path file = dir / "config.json";
  std::ofstream(file) << config.dump(2);
  return file;
}

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// A path of 100,000 characters in names of 200 (each name is allowed; the whole is not).
std::string long_path() {
  std::string path = (fs::temp_directory_path() / "qlt-long").string();
  while (path.size() < 100000) path += "/" + std::string(199, 'a');
  return path.substr(0, 100000);
}

// A copy of the tiny model whose tensor `name` is stored as `dtype`.
fs::path model_with_dtype(const TempDir& tmp, const std::string& name, at::ScalarType dtype) {
  const fs::path dir = tmp / "model";
  fs::create_directories(dir);
  for (const char* f : {"config.json", "tokenizer.model"}) fs::copy_file(kTinyLlama / f, dir / f);
  const auto file = qlt::io::SafetensorsFile::open(kTinyLlama / "model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& info : file.tensors()) {
    at::Tensor t = file.tensor(info.name);
    if (info.name == name) t = t.to(at::kFloat).mul(100).to(dtype);  // nonzero integers too
    tensors.emplace_back(info.name, t);
  }
  qlt::io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  return dir;
}

const std::string kQProj = "model.layers.0.self_attn.q_proj.weight";

}  // namespace

TEST_CASE("an unknown command is named, with the nearest one and the list", "[integration][cli]") {
  const auto r = run_qlora_train("trian --config x.json");
  check_bad_input(r, {"unknown command 'trian'", "did you mean 'train'?",
                      "Commands: config, eval, generate, inspect, quantize, train"});
  CHECK_THAT(r.err, !Contains("A subcommand is required"));
  check_bad_input(run_qlora_train("frobnicate"),
                  {"unknown command 'frobnicate'", "Commands: config, eval"});
  check_bad_input(run_qlora_train("--log-level warn evl --config x.json"),
                  {"unknown command 'evl'", "did you mean 'eval'?"});
}

TEST_CASE("no command at all lists the commands", "[integration][cli]") {
  check_bad_input(
      run_qlora_train(""),
      {"no command given", "config, eval, generate, inspect, quantize, train", "--help"});
  check_bad_input(run_qlora_train("--log-level warn"), {"no command given"});
  // Help and version still work and exit 0.
  CHECK(run_qlora_train("--help").exit_code == 0);
  CHECK(run_qlora_train("--version").exit_code == 0);
  CHECK(run_qlora_train("train --help").exit_code == 0);
}

TEST_CASE("a model.path that does not exist or is a file says so, for every command",
          "[integration][cli][model_path]") {
  TempDir tmp;
  const fs::path config = write_bad_input_config(tmp);
  const fs::path missing = tmp / "no-such-model";
  const fs::path gguf = tmp / "tiny.Q4_K_M.gguf";
  std::ofstream(gguf) << "GGUF";  // the magic, then nothing: a GGUF file, truncated
  const fs::path not_gguf = tmp / "page.gguf";
  std::ofstream(not_gguf) << "<html>404</html>";
  for (const std::string command : {"train", "eval", "inspect", "quantize"}) {
    INFO(command);
    const std::string base =
        command + " --config " + quoted(config) +
        (command == "quantize" ? " --set quantization.type=nf4 --out " + quoted(tmp / "out") : "");
    check_bad_input(run_qlora_train(base + " --set model.path=" + quoted(missing)),
                    {"model.path " + missing.string() + " does not exist",
                     "set model.path to a Hugging Face LLaMA model folder (config.json, "
                     "*.safetensors, tokenizer.model)"});
    check_bad_input(
        run_qlora_train(base + " --set model.path=" + quoted(kTinyLlama / "config.json")),
        {"model.path " + (kTinyLlama / "config.json").string() + " is a file, not a folder",
         "set model.path to a Hugging Face LLaMA model folder"});
    // A GGUF file is a model.path: this one is read, and found truncated (quantize, which
    // reads Hugging Face folders only, names the path).
    check_bad_input(run_qlora_train(base + " --set model.path=" + quoted(gguf)),
                    command == "quantize" ? std::vector<std::string>{gguf.string()}
                                          : std::vector<std::string>{gguf.string(), "truncated"});
    check_bad_input(run_qlora_train(base + " --set model.path=" + quoted(not_gguf)),
                    {"model.path " + not_gguf.string() + " is named .gguf but is not a GGUF file",
                     "Hugging Face LLaMA model folder"});
    CHECK_FALSE(fs::exists(tmp / "out"));
  }
}

TEST_CASE("a tokenizer.model that is a folder is named", "[integration][cli][model_path]") {
  TempDir tmp;
  const fs::path model = tmp / "model";
  fs::create_directories(model / "tokenizer.model");
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(kTinyLlama / f, model / f);
  const fs::path config =
      write_bad_input_config(tmp, [&](json& c) { c["model"]["path"] = model.string(); });
  for (const std::string command : {"train", "eval", "inspect"}) {
    INFO(command);
    check_bad_input(run_qlora_train(command + " --config " + quoted(config)),
                    {(model / "tokenizer.model").string() + ": is a folder, not a file",
                     "SentencePiece tokenizer.model"});
  }
}

// Where the path is handled by the command (model.path, --checkpoint, --dump-logits, --out) the
// message gives its length and the limits; the config and data readers and the run folder say
// "File name too long" (their message names the path's setting).
TEST_CASE("a path of 100,000 characters is refused as too long wherever a path is accepted",
          "[integration][cli][long_path]") {
  TempDir tmp;
  const std::string path = long_path();
  const fs::path config = write_bad_input_config(tmp);
  const std::string too_long = "is too long (100000 characters; the system allows";
  const std::string c = " --config " + quoted(config);
  SECTION("model.path") {
    for (const std::string command : {"train", "eval", "inspect"}) {
      INFO(command);
      check_bad_input(run_qlora_train(command + c + " --set model.path=" + path),
                      {"model.path " + too_long, "set model.path to a Hugging Face"});
    }
    check_bad_input(run_qlora_train("quantize" + c + " --set quantization.type=nf4 --out " +
                                    quoted(tmp / "out") + " --set model.path=" + path),
                    {"model.path " + too_long});
  }
  SECTION("--checkpoint, --dump-logits, --out") {
    check_bad_input(run_qlora_train("eval" + c + " --checkpoint " + path),
                    {"--checkpoint: the path " + too_long});
    check_bad_input(run_qlora_train("eval" + c + " --dump-logits " + path),
                    {"--dump-logits: the path " + too_long, "choose a shorter path"});
    check_bad_input(run_qlora_train("quantize" + c + " --set quantization.type=nf4 --out " + path),
                    {"the path " + too_long, "choose a shorter path"});
  }
  SECTION("--config, data.train, data.eval, checkpoint.output_dir, --resume") {
    check_bad_input(run_qlora_train("config --config " + path), {"too long", "--config"});
    check_bad_input(run_qlora_train("train" + c + " --set data.train=" + path),
                    {"too long", "data.train"});
    check_bad_input(run_qlora_train("eval" + c + " --set data.eval=" + path),
                    {"too long", "data.eval"});
    check_bad_input(run_qlora_train("train" + c + " --set checkpoint.output_dir=" + path),
                    {"too long", "checkpoint.output_dir"});
    check_bad_input(run_qlora_train("train" + c + " --resume " + path), {"cannot resume from"});
  }
}

TEST_CASE("a weight of a dtype NF4 cannot quantize is named, with what to do",
          "[integration][cli][dtype]") {
  TempDir tmp;
  SECTION("float64 under NF4: named; without quantization: converted") {
    const fs::path model = model_with_dtype(tmp, kQProj, at::kDouble);
    const fs::path config =
        write_bad_input_config(tmp, [&](json& c) { c["model"]["path"] = model.string(); });
    for (const std::string command : {"eval", "inspect"}) {
      INFO(command);
      check_bad_input(
          run_qlora_train(command + " --config " + quoted(config) + " --set quantization.type=nf4"),
          {kQProj, "dtype F64 is not supported for NF4 quantization",
           "convert the checkpoint to bfloat16 or float32"});
    }
    const auto dense = run_qlora_train("eval --config " + quoted(config));
    INFO("stderr: " << dense.err);
    CHECK(dense.exit_code == 0);
  }
  SECTION("int8 and bool: named, with or without NF4") {
    for (const auto dtype : {at::kChar, at::kBool}) {
      TempDir each;
      const fs::path model = model_with_dtype(each, kQProj, dtype);
      const fs::path config =
          write_bad_input_config(each, [&](json& c) { c["model"]["path"] = model.string(); });
      const std::string name = dtype == at::kChar ? "I8" : "BOOL";
      INFO(name);
      check_bad_input(
          run_qlora_train("inspect --config " + quoted(config) + " --set quantization.type=nf4"),
          {kQProj, "dtype " + name + " is not supported for NF4 quantization",
           "full-precision weights"});
      check_bad_input(
          run_qlora_train("eval --config " + quoted(config) + " --set quantization.type=nf4"),
          {kQProj, "dtype " + name + " is not supported for NF4 quantization"});
      check_bad_input(run_qlora_train("eval --config " + quoted(config)),
                      {kQProj, "expected a floating-point weight"});
    }
  }
}

// Runs `script` with sh (under `prefix`, e.g. "unshare -rm") in the repository, stderr into
// `err`; returns the exit code.
int run_script(const TempDir& tmp, const std::string& prefix, const std::string& script,
               const fs::path& err) {
  const fs::path file = tmp / "script.sh";
  std::ofstream(file) << "cd '" QLT_SOURCE_DIR "' || exit 99\n" << script << "\n";
  const int status = std::system((prefix + " sh " + quoted(file) + " 2>" + quoted(err)).c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A full disk, for real: a 256 KiB tmpfs in a private mount namespace (`unshare -rm`, no root
// needed where unprivileged user namespaces are allowed; skipped with a warning elsewhere).
TEST_CASE("quantize onto a full disk exits 1 naming the file, and leaves nothing behind",
          "[integration][cli][disk_full]") {
  TempDir tmp;
  const fs::path mount = tmp / "small";
  fs::create_directories(mount);
  const std::string mount_it = "mount -t tmpfs -o size=256k tmpfs " + quoted(mount);
  if (run_script(tmp, "unshare -rm", mount_it, tmp / "probe") != 0) {
    WARN("unshare -rm with a tmpfs mount is not allowed here: disk-full test skipped ("
         << qlt::test::read_text(tmp / "probe") << ")");
    return;
  }
  const fs::path config = write_bad_input_config(tmp);
  const std::string script = mount_it + " || exit 98\n'" QLT_BINARY "' quantize --config " +
                             quoted(config) + " --set quantization.type=nf4 --out " +
                             quoted(mount / "tiny-nf4") + " --log-level warn\nrc=$?\nls -A " +
                             quoted(mount) + " >" + quoted(tmp / "left") + "\nexit $rc";
  const int code = run_script(tmp, "unshare -rm", script, tmp / "err");
  const std::string err = qlt::test::read_text(tmp / "err");
  INFO("stderr: " << err);
  CHECK(code == 1);
  CHECK_THAT(err, Contains("error: cannot write " + (mount / "tiny-nf4").string()));
  CHECK_THAT(err, Contains("No space left on device"));
  CHECK_THAT(err, Contains("free space on the device holding " + mount.string()));
  CHECK_THAT(err, Contains("run the command again"));
  CHECK(qlt::test::read_text(tmp / "left").empty());  // no temporary folder left behind
}

// A file size limit (RLIMIT_FSIZE, `ulimit -f`) makes writes fail with EFBIG wherever the test
// runs: the same class of failure as a full disk.
TEST_CASE("quantize past the file size limit exits 1 naming the file",
          "[integration][cli][disk_full]") {
  TempDir tmp;
  const fs::path config = write_bad_input_config(tmp);
  // SIGXFSZ ignored (inherited through exec), so the write fails with EFBIG instead of killing.
  const std::string script = "trap '' XFSZ\nulimit -f 256\n'" QLT_BINARY "' quantize --config " +
                             quoted(config) + " --set quantization.type=nf4 --out " +
                             quoted(tmp / "out") + " --log-level warn";
  const int code = run_script(tmp, "", script, tmp / "err");
  const std::string err = qlt::test::read_text(tmp / "err");
  INFO("stderr: " << err);
  CHECK(code == 1);
  CHECK_THAT(err, Contains("error: cannot write " + (tmp / "out").string()));
  CHECK_THAT(err, Contains("File too large"));
  CHECK_THAT(err, Contains("ulimit -f"));
  CHECK_FALSE(fs::exists(tmp / "out"));
}
