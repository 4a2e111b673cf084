// TrainConfig <-> JSON through the table of keys below (config_keys()); see config_schema.h
// for the machinery and the recipe to add a key.
#include "core/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <sstream>

#include "core/config_schema.h"
#include "core/did_you_mean.h"
#include "core/errors.h"
#include "core/json_reader.h"

namespace qlt {

using nlohmann::json;

namespace {

// "auto" | "cpu" | "cuda" | "cuda:N": choices cannot express the device index.
std::string check_device(const std::string& device) {
  if (device == "auto" || device == "cpu" || device == "cuda") return "";
  if (device.rfind("cuda:", 0) != 0) return "not a device name";
  const std::string index = device.substr(5);
  const bool digits =
      !index.empty() && index.size() <= 6 &&
      std::all_of(index.begin(), index.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
  return digits ? "" : "the N of cuda:N must be a non-negative integer";
}

}  // namespace

const TrainConfig& default_train_config() {
  static const TrainConfig defaults;
  return defaults;
}

// THE table: every key the program reads, in the order --keys prints them. Defaults are not
// written here; key() reads them from TrainConfig{} (config.h).
const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = {
      key("model.path", "Hugging Face LLaMA directory: config.json, *.safetensors, tokenizer.model",
          [](auto& c) { return &c.model.path; })
          .required(),
      key("model.compute_dtype", "dtype of activations and of the weights that are not quantized",
          [](auto& c) { return &c.model.compute_dtype; })
          .one_of({"float32", "bfloat16"}),
      key("model.allow_non_finite",
          "load weights that hold NaN or Inf (refused by default, naming the tensor: such a "
          "file is damaged or comes from a diverged run)",
          [](auto& c) { return &c.model.allow_non_finite; }),
      key("quantization.type",
          "frozen weights of the decoder's linear layers: none (compute dtype), nf4 "
          "(bitsandbytes NF4) or int4 (groups w = d*q + m; group 32 = GGUF Q4_1, so a Q4_1 "
          "GGUF model is used as stored)",
          [](auto& c) { return &c.quantization.type; })
          .one_of({"none", "nf4", "int4"}),  // = quant::weight_format_names() (tested)
      key("quantization.block_size", "NF4 block size (a power of two; 64 is QLoRA's)",
          [](auto& c) { return &c.quantization.block_size; })
          .range(32, 4096),  // power of two: checked by quant::check_nf4_block_size
      key("quantization.double_quant", "quantize the NF4 absmax values too (4.127 vs 4.5 bits)",
          [](auto& c) { return &c.quantization.double_quant; }),
      key("quantization.group_size",
          "INT4 group size: inputs of a row sharing one (d, m) pair; 32 (= GGUF Q4_1), 64 or 128",
          [](auto& c) { return &c.quantization.group_size; })
          .range(32, 128),  // 32, 64 or 128: checked by quant::check_int4_group_size
      key("adapter.type", "trainable adapter on every targeted linear layer",
          [](auto& c) { return &c.adapter.type; })
          .one_of({"none", "lora", "blora", "qa-blora",
                   "l4q"}),  // = adapters::adapter_type_names() (tested)
      key("adapter.rank", "LoRA rank r", [](auto& c) { return &c.adapter.rank; }).range(1, 65536),
      key("adapter.alpha", "LoRA alpha: scaling = alpha / rank (alpha / sqrt(rank) with rsLoRA)",
          [](auto& c) { return &c.adapter.alpha; })
          .float_range(1e-12, 1e12),
      key("adapter.dropout", "dropout on the adapter input while training",
          [](auto& c) { return &c.adapter.dropout; })
          .float_range(0.0, 0.99),
      key("adapter.use_rslora", "rank-stabilized LoRA: scaling = alpha / sqrt(rank)",
          [](auto& c) { return &c.adapter.use_rslora; }),
      key("adapter.target_modules", "linear layers that get an adapter",
          [](auto& c) { return &c.adapter.target_modules; })
          .one_of({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
      key("adapter.balance",
          "blora: balance factor λ (input averaged over λ features, output repeated λ times, "
          "rank λ*rank at LoRA-rank's parameter count); qa-blora: output repeat",
          [](auto& c) { return &c.adapter.balance; })
          .range(1, 64),
      key("adapter.l4q_bits", "l4q: bits of the learned quantizer (4: codes 0..15, 3: 0..7)",
          [](auto& c) { return &c.adapter.l4q_bits; })
          .range(3, 4),
      key("adapter.l4q_group_size",
          "l4q: inputs of a row sharing one learned (scale, offset); 32 (= GGUF Q4_1), 64 or 128",
          [](auto& c) { return &c.adapter.l4q_group_size; })
          .range(32, 128),  // 32, 64 or 128: checked by adapters::adapter_options
      key("adapter.l4q_warmup_steps",
          "l4q: optimizer steps of plain LoRA before the quantizer starts (its scale and offset "
          "are then initialized from the adapted weights)",
          [](auto& c) { return &c.adapter.l4q_warmup_steps; })
          .range(0, kInt64Max),
      key("data.train", "training set, JSONL (read by `train`)",
          [](auto& c) { return &c.data.train; }),
      key("data.eval", "evaluation set, JSONL (read by `eval` and by `train`)",
          [](auto& c) { return &c.data.eval; }),
      key("data.format",
          "line format: text {\"text\"}, alpaca {\"instruction\",\"input\",\"output\"}, chat "
          "{\"messages\": [{\"role\",\"content\"}]}",
          [](auto& c) { return &c.data.format; })
          .one_of({"text", "alpaca", "chat"}),
      key("data.chat_template",
          "template of format chat and of `generate --chat`; auto = the model's own template "
          "(tokenizer_config.json / GGUF) when it is one of llama2, llama3, chatml",
          [](auto& c) { return &c.data.chat_template; })
          .one_of({"llama2", "llama3", "chatml", "auto"}),
      key("data.max_seq_len", "tokens per sequence (longer examples are truncated)",
          [](auto& c) { return &c.data.max_seq_len; })
          .range(2, 1 << 20),
      key("data.packing", "pack several examples into one sequence (attention stays per example)",
          [](auto& c) { return &c.data.packing; }),
      key("data.train_on_inputs", "also train on prompt tokens (false: outputs / assistant only)",
          [](auto& c) { return &c.data.train_on_inputs; }),
      key("optimizer.type",
          "adamw (torch.optim.AdamW, fp32 state), adamw_8bit (bitsandbytes AdamW8bit: 8-bit "
          "blockwise state for parameters of >= 4096 elements, fp32 for smaller ones), "
          "paged_adamw or paged_adamw_8bit (the same with the state in CUDA managed memory, "
          "which the driver can evict to host RAM under memory pressure; on a CPU they run as "
          "adamw / adamw_8bit)",
          [](auto& c) { return &c.optimizer.type; })
          .one_of({"adamw", "adamw_8bit", "paged_adamw",
                   "paged_adamw_8bit"}),  // = optim::optimizer_type_names() (tested)
      key("optimizer.lr", "peak learning rate", [](auto& c) { return &c.optimizer.lr; })
          .float_range(0.0, 10.0),
      key("optimizer.beta1", "AdamW beta1", [](auto& c) { return &c.optimizer.beta1; })
          .float_range(0.0, 0.999999),
      key("optimizer.beta2", "AdamW beta2", [](auto& c) { return &c.optimizer.beta2; })
          .float_range(0.0, 0.999999999),
      key("optimizer.eps", "AdamW epsilon", [](auto& c) { return &c.optimizer.eps; })
          .float_range(0.0, 1.0),
      key("optimizer.weight_decay", "decoupled weight decay",
          [](auto& c) { return &c.optimizer.weight_decay; })
          .float_range(0.0, 1.0),
      key("optimizer.max_grad_norm", "clip the global gradient norm to this; 0 = no clipping",
          [](auto& c) { return &c.optimizer.max_grad_norm; })
          .float_range(0.0, 1e12),
      key("schedule.type", "learning-rate schedule after warmup (linear/cosine decay to 0)",
          [](auto& c) { return &c.schedule.type; })
          .one_of({"constant", "linear", "cosine"}),
      key("schedule.warmup_steps", "linear warmup steps from lr 0",
          [](auto& c) { return &c.schedule.warmup_steps; })
          .range(0, kInt64Max),
      key("training.device", "where to run; auto = cuda when a GPU is available, else cpu",
          [](auto& c) { return &c.training.device; })
          .check("auto|cpu|cuda|cuda:N", check_device),
      key("training.threads", "CPU threads for LibTorch; 0 = LibTorch's default",
          [](auto& c) { return &c.training.threads; })
          .range(0, 4096),
      key("training.seed", "seed of every random choice (shuffling, dropout, init)",
          [](auto& c) { return &c.training.seed; })
          .range(0, kInt64Max),
      key("training.micro_batch_size", "sequences per forward/backward pass",
          [](auto& c) { return &c.training.micro_batch_size; })
          .range(1, 65536),
      key("training.grad_accum", "micro-batches per optimizer step",
          [](auto& c) { return &c.training.grad_accum; })
          .range(1, 65536),
      key("training.max_steps", "optimizer steps to train",
          [](auto& c) { return &c.training.max_steps; })
          .range(1, kInt64Max),
      key("training.activation_checkpointing",
          "recompute each decoder layer in backward (less memory, ~1/3 more compute)",
          [](auto& c) { return &c.training.activation_checkpointing; }),
      key("training.distributed",
          "process-group backend when launched with RANK / WORLD_SIZE / LOCAL_RANK / "
          "MASTER_ADDR / MASTER_PORT (torchrun): auto = nccl on CUDA, gloo on the CPU",
          [](auto& c) { return &c.training.distributed; })
          .one_of({"auto", "gloo", "nccl"}),
      key("training.distributed_timeout_s",
          "seconds the rendezvous and each collective may wait: a rank that died is noticed "
          "within this time",
          [](auto& c) { return &c.training.distributed_timeout_s; })
          .range(1, 86400),
      key("checkpoint.output_dir", "run directory: config, metrics.jsonl, checkpoints, final/",
          [](auto& c) { return &c.checkpoint.output_dir; }),
      key("checkpoint.every_steps", "write a checkpoint every N steps; 0 = only at the end",
          [](auto& c) { return &c.checkpoint.every_steps; })
          .range(0, kInt64Max),
      key("checkpoint.keep_last", "checkpoints to keep (older ones are deleted); 0 = all",
          [](auto& c) { return &c.checkpoint.keep_last; })
          .range(0, 1000000),
      key("logging.every_steps", "progress line and metrics.jsonl record every N steps",
          [](auto& c) { return &c.logging.every_steps; })
          .range(1, kInt64Max),
      key("eval.batch_size", "sequences per eval forward pass",
          [](auto& c) { return &c.eval.batch_size; })
          .range(1, 65536),
      key("eval.max_batches", "batches to evaluate; 0 = the whole eval set",
          [](auto& c) { return &c.eval.max_batches; })
          .range(0, kInt64Max),
      key("eval.every_steps", "evaluate during `train` every N steps; 0 = only at the end",
          [](auto& c) { return &c.eval.every_steps; })
          .range(0, kInt64Max),
      key("generate.max_new_tokens", "`generate`: tokens to generate after the prompt at most",
          [](auto& c) { return &c.generate.max_new_tokens; })
          .range(1, 1 << 20),
      key("generate.temperature",
          "`generate`: 0 = greedy (the most probable token); else sample from "
          "softmax(logits / temperature)",
          [](auto& c) { return &c.generate.temperature; })
          .float_range(0.0, 100.0),
      key("generate.top_p",
          "`generate`, sampling: keep the smallest set of most probable tokens whose "
          "probability reaches top_p (1 = all)",
          [](auto& c) { return &c.generate.top_p; })
          .float_range(1e-6, 1.0),
      key("generate.seed", "`generate`, sampling: seed of the random draws (same seed, same text)",
          [](auto& c) { return &c.generate.seed; })
          .range(0, kInt64Max),
  };
  return keys;
}

namespace {

// Lookups derived from the table: the keys by path, and the sections (every proper prefix
// of a key's path, e.g. "model"), each with its direct children for messages.
struct Schema {
  std::map<std::string, const ConfigKey*> keys;
  std::map<std::string, std::vector<std::string>> section_children;  // "" = top level
  std::vector<std::string> names;  // keys then sections, in table order: did-you-mean pool
};

const Schema& schema() {
  static const Schema built = [] {
    Schema s;
    std::vector<std::string> sections;
    for (const auto& key : config_keys()) {
      s.keys[key.path] = &key;
      s.names.push_back(key.path);
      std::string parent;
      for (std::size_t dot = key.path.find('.');; dot = key.path.find('.', dot + 1)) {
        std::string child = key.path.substr(0, dot);
        auto& children = s.section_children[parent];
        std::string leaf = child.substr(parent.empty() ? 0 : parent.size() + 1);
        if (std::find(children.begin(), children.end(), leaf) == children.end()) {
          children.push_back(leaf);
        }
        if (dot == std::string::npos) break;
        if (std::find(sections.begin(), sections.end(), child) == sections.end()) {
          sections.push_back(child);
        }
        parent = child;
      }
    }
    s.names.insert(s.names.end(), sections.begin(), sections.end());
    return s;
  }();
  return built;
}

const ConfigKey* find_key(const std::string& path) {
  auto it = schema().keys.find(path);
  return it == schema().keys.end() ? nullptr : it->second;
}

bool is_section(const std::string& path) { return schema().section_children.count(path) > 0; }

std::string children_of(const std::string& section) {
  return fmt::format("{}", fmt::join(schema().section_children.at(section), ", "));
}

std::string last_component(const std::string& path) {
  const std::size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

// A typo of a known name, or else a key with the same last component in another section
// ("seed" at the top level -> "training.seed").
std::optional<std::string> suggest(const std::string& path) {
  if (auto match = closest_match(path, schema().names)) return match;
  const std::string leaf = last_component(path);
  for (const auto& key : config_keys()) {
    if (last_component(key.path) == leaf) return key.path;
  }
  return std::nullopt;
}

// `is_object`: a top-level name holding an object is a misspelled section ("trainng"); one
// holding a value is a key put at the wrong level ("seed").
[[noreturn]] void unknown_key(const std::string& path, std::string_view where, bool is_object) {
  const std::size_t dot = path.rfind('.');
  const std::string parent = dot == std::string::npos ? "" : path.substr(0, dot);
  const char* kind = !parent.empty() ? "key" : is_object ? "section" : "top-level key";
  std::string hint = "`qlora-train config --keys` lists every key";
  if (auto match = suggest(path)) {
    user_error("{}: unknown {} {}; did you mean {}? ({})", where, kind, path, *match, hint);
  }
  if (is_section(parent)) {
    user_error("{}: unknown {} {}; {} has: {} ({})", where, kind, path,
               parent.empty() ? "the top level" : parent, children_of(parent), hint);
  }
  user_error("{}: unknown {} {} ({})", where, kind, path, hint);
}

void require_object(const json& value, const std::string& section, std::string_view where) {
  if (value.is_object()) return;
  if (section.empty()) {
    user_error(
        "{}: the top level must be a JSON object such as {{\"model\": {{\"path\": "
        "\"...\"}}}}, got {}",
        where, describe_json(value));
  }
  user_error("{}: {} must be an object with keys ({}), got {}", where, section,
             children_of(section), describe_json(value));
}

// Sets every key present in `object` (the section `prefix`), descending into sub-sections.
void read_object(const json& object, const std::string& prefix, std::string_view where,
                 TrainConfig& config) {
  for (const auto& [name, value] : object.items()) {
    const std::string path = prefix.empty() ? name : prefix + "." + name;
    if (const ConfigKey* key = find_key(path)) {
      key->set(config, check_value(*key, value, where));
    } else if (is_section(path)) {
      require_object(value, path, where);
      read_object(value, path, where, config);
    } else {
      unknown_key(path, where, value.is_object());
    }
  }
}

json::json_pointer pointer_of(const std::string& path) {
  std::string pointer = "/" + path;
  std::replace(pointer.begin(), pointer.end(), '.', '/');
  return json::json_pointer(pointer);
}

// {"model": {"path": ...}} for "model.path": where a missing key goes in the file.
std::string nested_example(const std::string& path) {
  std::string open, close;
  std::size_t start = 0;
  for (std::size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', start)) {
    open += fmt::format("{{\"{}\": ", path.substr(start, dot - start));
    close += "}";
    start = dot + 1;
  }
  return fmt::format("{}{{\"{}\": ...}}{}", open, path.substr(start), close);
}

void check_required(const json& root, const TrainConfig& config, std::string_view where) {
  for (const auto& key : config_keys()) {
    if (!key.is_required) continue;
    if (!root.contains(pointer_of(key.path))) {
      user_error("{}: missing required key {} ({}); add {} to the file or pass --set {}=VALUE",
                 where, key.path, key.meaning, nested_example(key.path), key.path);
    }
    if (key.type == KeyType::kString && key.get(config).get_ref<const std::string&>().empty()) {
      user_error("{}: {} must not be empty ({})", where, key.path, key.meaning);
    }
  }
}

// The value of `--set key=text`: JSON when it parses, else the text itself. A string key
// always takes the text unless it is a quoted JSON string, so a path named `123` or `true`
// stays a path; a list key also takes "a,b,c" as ["a", "b", "c"].
json override_value(const ConfigKey& key, const std::string& text) {
  // Every string of a config is written back as JSON (config.json of a run), which must be
  // UTF-8; a file's strings are checked by the JSON reader, a command line's here.
  try {
    (void)json(text).dump();
  } catch (const json::type_error&) {
    user_error(
        "--set {}=...: the value is not valid UTF-8; pass the text in UTF-8 (a path with "
        "other bytes: rename it)",
        key.path);
  }
  json parsed;
  JsonError error;
  if (!try_parse_json(text, parsed, error)) {
    // Text that merely is not JSON is a string value; JSON that breaks our reader's limits
    // (nesting, duplicate keys, a number beyond a double) is an error, not a string.
    if (error.message.find("appears twice") != std::string::npos ||
        error.message.find("nested deeper") != std::string::npos ||
        error.message.find("number overflow") != std::string::npos)
      user_error("--set {}={}: {}", key.path, text.substr(0, 40), error.message);
    parsed = text;
  }
  if (key.type == KeyType::kString && !parsed.is_string()) return text;
  if (key.type == KeyType::kStringList && parsed.is_string()) {
    json list = json::array();
    std::stringstream items(parsed.get<std::string>());
    for (std::string item; std::getline(items, item, ',');) list.push_back(item);
    return list;
  }
  return parsed;
}

// Applies one "dotted.key=value" to the parsed file, creating missing sections. The value is
// checked here so that its error names the --set argument; the file's own values are checked
// afterwards by config_from_json.
void apply_override(json& root, const std::string& argument, std::string_view file) {
  const std::string where = fmt::format("--set {}", argument);
  const std::size_t equals = argument.find('=');
  if (equals == std::string::npos || equals == 0) {
    user_error("{}: expected dotted.key=value, e.g. --set data.max_seq_len=512", where);
  }
  const std::string path = argument.substr(0, equals);
  const ConfigKey* key = find_key(path);
  if (key == nullptr && is_section(path)) {
    user_error("{}: {} is a section; set one of its keys ({}) as {}.KEY=VALUE", where, path,
               children_of(path), path);
  }
  if (key == nullptr) unknown_key(path, where, /*is_object=*/false);
  json value = check_value(*key, override_value(*key, argument.substr(equals + 1)), where);

  json* node = &root;
  std::string section;
  std::size_t start = 0;
  for (std::size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', start)) {
    const std::string name = path.substr(start, dot - start);
    section = section.empty() ? name : section + "." + name;
    if (!node->contains(name)) (*node)[name] = json::object();
    node = &(*node)[name];
    require_object(*node, section, file);
    start = dot + 1;
  }
  (*node)[path.substr(start)] = std::move(value);
}

}  // namespace

TrainConfig config_from_json(const json& root, const std::string& origin) {
  const std::string where = origin.empty() ? "config" : origin;
  require_object(root, "", where);
  TrainConfig config;
  read_object(root, "", where, config);
  check_required(root, config, where);
  return config;
}

TrainConfig load_config(const std::filesystem::path& file,
                        const std::vector<std::string>& overrides) {
  json root = read_json_file(file, "; --config takes the path of a JSON config file");
  require_object(root, "", file.string());
  for (const auto& argument : overrides) apply_override(root, argument, file.string());
  return config_from_json(root, file.string());
}

json config_to_json(const TrainConfig& config) {
  json out = json::object();
  for (const auto& key : config_keys()) out[pointer_of(key.path)] = key.get(config);
  return out;
}

std::string config_to_text(const TrainConfig& config) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& key : config_keys()) {
    out[nlohmann::ordered_json::json_pointer(pointer_of(key.path).to_string())] = key.get(config);
  }
  return out.dump(2);
}

std::string describe_config_keys() {
  struct Row {
    std::string path, type, value, allowed, meaning;
  };
  std::vector<Row> rows = {{"KEY", "TYPE", "DEFAULT", "ALLOWED", "MEANING"}};
  for (const auto& key : config_keys()) {
    rows.push_back({key.path, key_type_name(key.type), describe_default(key), describe_allowed(key),
                    key.meaning});
  }
  std::size_t widths[4] = {0, 0, 0, 0};
  for (const auto& row : rows) {
    widths[0] = std::max(widths[0], row.path.size());
    widths[1] = std::max(widths[1], row.type.size());
    widths[2] = std::max(widths[2], row.value.size());
    widths[3] = std::max(widths[3], row.allowed.size());
  }
  std::string out;
  for (const auto& row : rows) {
    out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:<{}}  {}\n", row.path, widths[0], row.type,
                       widths[1], row.value, widths[2], row.allowed, widths[3], row.meaning);
  }
  return out;
}

}  // namespace qlt
