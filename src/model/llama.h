// The LLaMA decoder forward pass (Hugging Face LlamaForCausalLM semantics):
// embed -> L x [x + attn(rmsnorm(x)); x + mlp(rmsnorm(x))] -> rmsnorm -> lm_head,
// with optional adapters (adapters/adapter.h: LoRA, Q-BLoRA, QA-BLoRA, L4Q) on the 7 decoder
// linears.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "adapters/adapter.h"
#include "model/kv_cache.h"
#include "model/llama_config.h"
#include "model/llama_weights.h"
#include "model/rope.h"

namespace qlt::model {

// The linear layers of a decoder layer that an adapter can target, in PEFT's state-dict
// order (self_attn q, k, v, o, then mlp gate, up, down).
inline constexpr int kNumLlamaLinears = 7;
// "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
const std::array<std::string, kNumLlamaLinears>& llama_linear_names();

// The frozen weight of linear `linear` (llama_linear_names() index) of a layer.
const adapters::FrozenWeight& linear_weight(const LlamaLayerWeights& layer, int linear);
adapters::FrozenWeight& linear_weight(LlamaLayerWeights& layer, int linear);

// One optional adapter per targetable linear, indexed as llama_linear_names().
using LayerAdapters = std::array<std::optional<adapters::Adapter>, kNumLlamaLinears>;

struct ForwardOptions {
  bool training = false;  // enables LoRA dropout (the base model has no dropout)
  // Drives LoRA dropout; required when training with dropout > 0. Advanced by every adapted
  // linear in layer order, so a run is reproducible from the generator's state.
  std::optional<at::Generator> dropout_generator;
  // When set, decoder layer i runs as layer_wrapper(i, f, x) instead of f(x), where f(x) is
  // the layer. The trainer passes activation checkpointing here (train/activation_checkpoint.h)
  // so model/ does not depend on train/. f owns copies of what it needs: it may be kept and
  // called again in backward.
  std::function<at::Tensor(int64_t layer, const std::function<at::Tensor(const at::Tensor&)>& f,
                           const at::Tensor& x)>
      layer_wrapper;
};

struct LlamaModel {
  LlamaConfig config;
  LlamaWeights weights;
  at::ScalarType compute_dtype = at::kFloat;  // activations and linear weights
  at::Tensor inv_freq;                        // [head_dim/2] fp32 RoPE frequencies
  // Set with the adapters by attach_adapters; [num_layers] adapters when attached, else empty.
  std::optional<adapters::AdapterOptions> adapter_options;
  std::vector<LayerAdapters> adapters;
  bool has_adapters() const { return !adapters.empty(); }

  at::Device device() const { return weights.embed_tokens.device(); }

  // input_ids [B, T] int64 -> final-normed hidden states [B, T, hidden] (compute dtype).
  // position_ids [B, T] defaults to 0..T-1 per row (for packed rows pass
  // packed_position_ids(segment_ids)). Attention is causal; with segment_ids [B, T] int64
  // (0 = padding, 1..k = the packed examples of a row) it is causal within a segment only.
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& position_ids = {},
                           const at::Tensor& segment_ids = {},
                           const ForwardOptions& options = {}) const;

  // input_ids [B, T] -> logits [B, T, vocab] (compute dtype). Materializes B*T*vocab values;
  // for a loss prefer causal_lm_loss on hidden_states, which works in chunks.
  at::Tensor logits(const at::Tensor& input_ids) const;
};

// Loads a model from `model_path`: a Hugging Face LLaMA directory (config.json + safetensors,
// bitsandbytes 4-bit included) or a GGUF file (model/llama_gguf.h). The decoder's linear
// weights are stored in `format` as they are read (weights already stored that way are used
// as stored). NaN / Inf in a weight is an error naming the tensor unless `allow_non_finite`.
LlamaModel load_llama(const std::filesystem::path& model_path, at::ScalarType compute_dtype,
                      at::Device device, const quant::WeightFormat& format = quant::DenseFormat{},
                      bool allow_non_finite = false);

// Incremental decoding (generate): input_ids [B, t] int64 are the tokens at positions
// [cache.length, cache.length + t) of every row (a prompt, then one token per step). They attend
// causally to each other and to the cached positions; their keys and values are appended to
// `cache` (make_kv_cache(model.config, B, capacity, model.compute_dtype, model.device())), which
// advances by t. Returns final-normed hidden states [B, t, hidden] (compute dtype), equal up to
// rounding to hidden_states() of the whole sequence at these positions. Attached adapters apply
// (never dropout). Inference only: runs under NoGradGuard.
at::Tensor forward_cached(const LlamaModel& model, const at::Tensor& input_ids, KvCache& cache);

// x [..., hidden] -> x / rms(x) * weight, computed in fp32 and returned in x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// segment_ids [B, T] int64 -> bool mask [B, 1, T, T] for SDPA (true = may attend):
// key j <= query i and segment_ids[i] == segment_ids[j]. Padding (0) is a segment of its own,
// so every row keeps at least its diagonal (no all-masked row, no NaN).
at::Tensor segment_attention_mask(const at::Tensor& segment_ids);

// segment_ids [B, T] -> positions [B, T] int64 restarting at 0 wherever the segment id
// changes along a row (each packed example starts at position 0, as if it were alone).
at::Tensor packed_position_ids(const at::Tensor& segment_ids);

// One decoder layer: x [B, T, hidden] (compute dtype) -> the layer's output, same shape.
// attn_mask: undefined for plain causal attention (SDPA is_causal), else the [B, 1, T, T]
// bool mask of segment_attention_mask. Self-contained so that it can be recomputed on its
// own (activation checkpointing); it reads the dropout generator, so a recompute must
// restore the generator's state first to draw the same dropout masks.
at::Tensor decoder_layer(const LlamaModel& model, int64_t layer, const at::Tensor& x,
                         const RopeTables& rope, const at::Tensor& attn_mask,
                         const ForwardOptions& options);

// PEFT's module path of a targetable linear, e.g.
// "base_model.model.model.layers.3.self_attn.q_proj" or "...layers.3.mlp.down_proj".
std::string peft_module_key(int64_t layer, int linear);

// Checks that every target module is one of llama_linear_names() (UserError listing the valid
// names) and each targeted linear's shape (adapters::check_adapter_shape), then attaches freshly
// initialized adapters (adapters::init_adapter, drawn from `generator` in adapter_parameters
// order) to every targeted linear of every layer, on the model's device. Replaces adapters
// attached before; adapter.type none detaches them.
void attach_adapters(LlamaModel& model, const adapters::AdapterOptions& options,
                     at::Generator& generator);

// Every adapter tensor the options call for on this model, by name and shape, in
// adapter_parameters order: "<peft module key>.lora_A.weight", ".lora_B.weight" (native shapes,
// adapters::adapter_tensor_specs), and for l4q ".l4q_scale", ".l4q_offset".
std::vector<ExpectedTensor> expected_adapter_tensors(const LlamaModel& model,
                                                     const adapters::AdapterOptions& options);

// Attaches adapters with the given values (a checkpoint or adapter folder named `source`).
// Missing, unexpected and wrongly shaped tensors (a rank other than the options' shows as a
// wrong shape) are all reported in one UserError naming `source` and each key. Values are
// copied to fp32 leaves with requires_grad on the model's device.
void attach_adapters(LlamaModel& model, const adapters::AdapterOptions& options,
                     const std::map<std::string, at::Tensor>& tensors, const std::string& source,
                     bool l4q_quantizing = true);

// THE accessor of the trainable tensors: the attached adapters' tensors named as
// expected_adapter_tensors says, ordered by layer, then linear (llama_linear_names order), then
// the adapter's own order. The tensors are the model's own leaves (not copies). Empty without
// adapters.
struct TrainableTensor {
  std::string name;
  at::Tensor tensor;
  bool weight_decay = true;  // false for the L4Q quantizer's scale and offset
};
std::vector<TrainableTensor> adapter_parameters(const LlamaModel& model);

// The trainable tensors of decoder layer `layer` (activation checkpointing recomputes a layer
// with them as inputs).
std::vector<at::Tensor> layer_adapter_tensors(const LlamaModel& model, int64_t layer);

// The adapters as one standard PEFT LoRA (adapters::peft_lora_of): PEFT's state-dict keys
// ("<module>.lora_A.weight" [R, in], ".lora_B.weight" [out, R]), in adapter_parameters order.
std::vector<std::pair<std::string, at::Tensor>> peft_lora_tensors(const LlamaModel& model);

// L4Q: whether the quantizer is on (false during the LoRA warm-up), and switching it on
// (adapters::start_l4q_quantization on every adapter). Internal error for other kinds.
bool l4q_quantizing(const LlamaModel& model);
void start_l4q_quantization(LlamaModel& model);

// One decoder linear merged (or converted) into `target`, computed on its own and not kept:
// the model is unchanged, so an export can make, write and drop one linear at a time
// (export/linear_source.h). The adapter's update is added to the model's stored weight, or to
// `original` ([out, in] full precision, --merge-into original) when given (adapters::
// merge_adapter). A linear without an adapter is converted into `target` unless it is already
// stored so (then `weight` is the model's own and `changed` false).
struct MergedLinear {
  quant::StoredWeight weight;
  bool changed = false;  // the weight differs from the model's stored one (merged or converted)
  bool adapted = false;  // an adapter was merged
  bool exact = false;    // ... exactly (adapters::MergedWeight::exact)
  // What storing in `target` changed against the layer the forward used (with `original`: the
  // original plus the update): max |dw|, ||dW||^2 and ||W||^2. Zero when !changed.
  double max_abs = 0, error_sq = 0, weight_sq = 0;
};
MergedLinear merge_linear(const LlamaModel& model, int64_t layer, int linear,
                          const quant::WeightFormat& target, const at::Tensor& original = {});

// What a merge changed, linear by linear (MergeReport::add) and overall.
struct MergeReport {
  int64_t merged = 0;  // linears with an adapter
  int64_t exact = 0;   // ... merged exactly
  // What storing in the target changed, per decoder linear (adapted or converted), against the
  // layer the forward used before (adapters::effective_weight): max |dw| and ||dW||/||W||.
  struct LinearError {
    int64_t layer = 0;
    int linear = 0;  // llama_linear_names() index
    double max_abs = 0;
    double relative = 0;
  };
  std::vector<LinearError> errors;
  double overall_relative = 0;  // sqrt(sum ||dW||^2 / sum ||W||^2) over the linears added

  void add(int64_t layer, int linear, const MergedLinear& m);

 private:
  double error_sq_ = 0, weight_sq_ = 0;
};

// Merges every adapter into its frozen weight, stored in `target` (merge_linear), stores the
// decoder linears without an adapter in `target` too (unless they already are), and detaches the
// adapters: the model is then the deployable merged model. Returns how many linears were merged,
// how many of them exactly, and what storing changed.
MergeReport merge_adapters(LlamaModel& model, const quant::WeightFormat& target);

}  // namespace qlt::model
