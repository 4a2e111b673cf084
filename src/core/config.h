// TrainConfig: every setting of a run, typed, with its default in one place (DESIGN.md §4).
//
// JSON <-> struct goes through one table of key descriptors (config.cpp, config_keys(); the
// machinery and the recipe to add a key are in config_schema.h): each key is declared once
// with its JSON path, type, allowed range or choices and meaning, and its default is read from
// the initializers below (so they are the only place a default is written); parsing,
// validation, --set overrides, `qlora-train config --keys` and the effective-config dump all
// read that table. Nothing below cli/ sees JSON: it receives these structs.
//
// Only keys that the program acts on exist.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qlt {

struct ModelConfig {
  std::string path;                       // required: Hugging Face LLaMA directory
  std::string compute_dtype = "float32";  // "float32" | "bfloat16"
  bool allow_non_finite = false;          // load weights holding NaN / Inf (refused by default)
};

struct QuantizationConfig {
  // Frozen decoder linears (not embeddings/lm_head): "none" | "nf4" | "int4" (the format
  // table, quant/weight_format.h, turns this section into a quant::WeightFormat).
  std::string type = "none";
  int64_t block_size = 64;   // NF4 block size, power of two 32..4096
  bool double_quant = true;  // quantize the NF4 absmax values too
  int64_t group_size = 32;   // INT4 group size: 32 (= GGUF Q4_1), 64 or 128
};

struct AdapterConfig {
  // "none" | "lora" (QLoRA when quantization.type is nf4) | "blora" (Q-BLoRA) | "qa-blora"
  // (QA-BLoRA, INT4 base) | "l4q" (adapters/adapter.h has what each is)
  std::string type = "lora";
  int64_t rank = 64;      // r: inner dimension of A [r, in] and B [out, r]
  double alpha = 16.0;    // scaling = alpha / r (alpha / sqrt(r) with use_rslora)
  double dropout = 0.05;  // on the adapter's input, training only (lora, blora, qa-blora)
  bool use_rslora = false;
  std::vector<std::string> target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
  int64_t balance = 2;           // blora: λ (pool and repeat, rank λr); qa-blora: output repeat
  int64_t l4q_bits = 4;          // l4q: 4 (Q4_1-style codes 0..15) or 3 (0..7)
  int64_t l4q_group_size = 32;   // l4q: inputs per learned (scale, offset); 32 = GGUF Q4_1
  int64_t l4q_warmup_steps = 0;  // l4q: plain LoRA steps before fake quantization starts
};

struct DataConfig {
  std::string train;            // JSONL read by `train`
  std::string eval;             // JSONL evaluated by `eval` and during `train`
  std::string format = "text";  // "text" | "alpaca" | "chat" (line formats)
  // "llama2" | "llama3" | "chatml" | "auto" (the model's own template when it is one of these);
  // format "chat" and `generate --chat`
  std::string chat_template = "llama2";
  int64_t max_seq_len = 256;     // tokens per sequence, 2..1048576
  bool packing = false;          // several examples per sequence (no cross-attention)
  bool train_on_inputs = false;  // false: only outputs / assistant turns carry loss
};

struct OptimizerConfig {
  std::string type = "adamw";  // "adamw" (fp32 state) | "adamw_8bit" (optim/optimizer.h table)
  double lr = 2e-4;            // peak learning rate
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double max_grad_norm = 0.3;  // global-norm clipping; 0 = off
};

struct ScheduleConfig {
  std::string type = "constant";  // "constant" | "linear" | "cosine" (to 0 at max_steps)
  int64_t warmup_steps = 0;       // linear warmup from 0
};

struct EvalConfig {
  int64_t batch_size = 8;   // sequences per forward pass, 1..65536
  int64_t max_batches = 0;  // 0 = the whole eval set
  int64_t every_steps = 0;  // during `train`: every N optimizer steps; 0 = only at the end
};

struct TrainingConfig {
  std::string device = "auto";   // "auto" | "cpu" | "cuda" | "cuda:N"
  int64_t threads = 0;           // CPU threads for LibTorch, 0..4096; 0 = LibTorch's default
  int64_t seed = 42;             // 0..2^63-1
  int64_t micro_batch_size = 4;  // sequences per forward/backward
  int64_t grad_accum = 1;        // micro-batches per optimizer step
  int64_t max_steps = 100;       // optimizer steps
  bool activation_checkpointing = false;  // recompute each decoder layer in backward
  // Data parallelism, when RANK / WORLD_SIZE / ... are set (dist/dist_env.h):
  std::string distributed = "auto";     // "auto" (nccl on CUDA, gloo on CPU) | "gloo" | "nccl"
  int64_t distributed_timeout_s = 300;  // rendezvous and collectives; a dead rank is noticed
};

struct CheckpointConfig {
  std::string output_dir = "runs/qlora";  // run directory: config, metrics, checkpoints, final/
  int64_t every_steps = 100;              // 0 = only the final adapter (and on SIGINT/SIGTERM)
  int64_t keep_last = 3;                  // checkpoints kept; 0 = keep all
};

struct LoggingConfig {
  int64_t every_steps = 10;  // progress line + metrics.jsonl record
};

struct GenerateConfig {
  int64_t max_new_tokens = 256;  // tokens generated after the prompt (fewer at an end token)
  double temperature = 0.0;      // 0 = greedy; else sample from softmax(logits / temperature)
  double top_p = 1.0;            // nucleus sampling: keep the most probable tokens of mass top_p
  int64_t seed = 0;              // seed of the sampling generator (the same seed, the same text)
};

struct TrainConfig {
  ModelConfig model;
  QuantizationConfig quantization;
  AdapterConfig adapter;
  DataConfig data;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  TrainingConfig training;
  CheckpointConfig checkpoint;
  LoggingConfig logging;
  EvalConfig eval;
  GenerateConfig generate;
};

// Parses and validates a JSON config. `origin` names the source in messages (a file name).
// Throws UserError naming the JSON path (e.g. "data.max_seq_len") and the fix for: unknown
// keys (with a did-you-mean), wrong types, out-of-range values and missing required fields.
// An integer key accepts an integral float (256.0, 2.56e2: JSON has one number type and some
// generators write floats); a fractional value (2.5) is a type error.
TrainConfig config_from_json(const nlohmann::json& json, const std::string& origin);

// Reads `file` (JSON; a syntax error is reported as file:line:column), applies each override
// "dotted.key=value" in order (value parsed as JSON when it parses, else taken as a string),
// then validates as config_from_json does. Errors name the file or the --set argument.
// A string key takes the text itself unless it is a quoted JSON string (so a path named `123`
// stays a string); a string-list key also takes "a,b,c". Overrides apply before validation,
// so one may supply a missing required key or replace an invalid value of the file.
TrainConfig load_config(const std::filesystem::path& file,
                        const std::vector<std::string>& overrides = {});

// The effective config as JSON, every key present (defaults filled in).
nlohmann::json config_to_json(const TrainConfig& config);

// config_to_json as pretty-printed text with keys in table order (model first, as --keys lists
// them) rather than alphabetical: what `qlora-train config` prints.
std::string config_to_text(const TrainConfig& config);

// Every key, one per line: dotted path, type, default, allowed values, meaning.
std::string describe_config_keys();

}  // namespace qlt
