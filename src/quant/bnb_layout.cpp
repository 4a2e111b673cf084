#include "quant/bnb_layout.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string_view>

#include "core/errors.h"
#include "core/json_reader.h"
#include "nf4_layout.h"

namespace qlt::quant {
namespace {

using nlohmann::json;

// Every key bnb's QuantState.from_dict accepts in the packed JSON (valid_qs_keys minus the
// tensor ones); it asserts on anything else, and so do we.
const std::set<std::string, std::less<>> kQuantStateKeys = {
    "quant_type",       "blocksize",    "dtype",        "shape",
    "nested_blocksize", "nested_dtype", "nested_offset"};

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Reads one weight's tensors and quant state; `weight_` is the weight name, every message
// names the offending tensor.
class Nf4Reader {
 public:
  Nf4Reader(const io::SafetensorsCheckpoint& checkpoint, const std::string& weight)
      : ckpt_(checkpoint), weight_(weight), qs_name_(weight + "." + kBnbNf4QuantStateKey) {}

  Nf4Tensor read() {
    const json state = parse_quant_state();
    Nf4Tensor q;
    parse_fields(state, q);
    read_tensors(q);
    return q;
  }

 private:
  const io::SafetensorsCheckpoint& ckpt_;
  const std::string weight_;
  const std::string qs_name_;
  bool nested_ = false;
  double nested_offset_ = 0.0;

  std::string key(const char* suffix) const { return weight_ + "." + suffix; }

  json parse_quant_state() const {
    if (!ckpt_.contains(qs_name_)) {
      if (ckpt_.contains(key(kBnbFp4QuantStateKey)))
        user_error(
            "{}: bitsandbytes fp4 weights are not supported, only nf4 (quantize the model "
            "with bnb_4bit_quant_type=\"nf4\")",
            key(kBnbFp4QuantStateKey));
      user_error(
          "{}: missing tensor {} (the bitsandbytes 4-bit quant state of this weight); the "
          "checkpoint is incomplete or not an nf4 checkpoint",
          weight_, qs_name_);
    }
    const io::TensorInfo& info = ckpt_.info(qs_name_);
    if (info.dtype != "U8" || info.shape.size() != 1)
      user_error("{}: expected U8 bytes of a JSON object, found {} {}", qs_name_, info.dtype,
                 shape_string(info.shape));
    const at::Tensor bytes = ckpt_.tensor(qs_name_).contiguous();
    const std::string text(static_cast<const char*>(bytes.data_ptr()),
                           static_cast<size_t>(bytes.numel()));
    const json state = parse_json(text, fmt::format("{} (the quant state)", qs_name_));
    if (!state.is_object())
      user_error("{}: the quant state is not a JSON object: {}", qs_name_, text);
    for (const auto& item : state.items())
      if (kQuantStateKeys.find(item.key()) == kQuantStateKeys.end())
        user_error("{}: unknown quant-state key \"{}\" (bitsandbytes refuses it too)", qs_name_,
                   item.key());
    return state;
  }

  const json& field(const json& state, const char* name, bool ok_type(const json&),
                    const char* type) const {
    const auto it = state.find(name);
    if (it == state.end()) user_error("{}: the quant state has no \"{}\"", qs_name_, name);
    if (!ok_type(*it))
      user_error("{}: quant-state \"{}\" must be {}, found {}", qs_name_, name, type, it->dump());
    return *it;
  }
  static bool is_string(const json& j) { return j.is_string(); }
  static bool is_integer(const json& j) { return j.is_number_integer(); }
  static bool is_number(const json& j) { return j.is_number(); }
  static bool is_array(const json& j) { return j.is_array(); }

  void parse_fields(const json& state, Nf4Tensor& q) {
    const auto quant_type = field(state, "quant_type", is_string, "a string").get<std::string>();
    if (quant_type == "fp4")
      user_error(
          "{}: quant_type \"fp4\" is not supported, only \"nf4\" (quantize the model with "
          "bnb_4bit_quant_type=\"nf4\")",
          qs_name_);
    if (quant_type != "nf4")
      user_error("{}: quant_type \"{}\" is not a bitsandbytes 4-bit type; expected \"nf4\"",
                 qs_name_, quant_type);

    const json& block = field(state, "blocksize", is_integer, "an integer");
    const bool block_ok = block.is_number_unsigned() &&
                          block.get<uint64_t>() >= nf4::kMinBlockSize &&
                          block.get<uint64_t>() <= nf4::kMaxBlockSize &&
                          (block.get<uint64_t>() & (block.get<uint64_t>() - 1)) == 0;
    if (!block_ok)
      user_error("{}: blocksize {} is not a power of two in [{}, {}]", qs_name_, block.dump(),
                 nf4::kMinBlockSize, nf4::kMaxBlockSize);
    q.block_size = block.get<int64_t>();

    q.dtype = bnb_dtype_from_name(field(state, "dtype", is_string, "a string").get<std::string>(),
                                  qs_name_ + " \"dtype\"");

    const json& shape = field(state, "shape", is_array, "a list of sizes");
    if (shape.empty()) user_error("{}: quant-state \"shape\" is empty", qs_name_);
    int64_t n = 1;
    for (const json& d : shape) {
      // Sizes fit int64 and their product must too (a hostile file must not overflow it).
      if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t{INT64_MAX} ||
          __builtin_mul_overflow(n, d.get<int64_t>(), &n))
        user_error(
            "{}: quant-state \"shape\" {} must hold non-negative integer sizes whose "
            "product fits 64 bits",
            qs_name_, shape.dump());
      q.shape.push_back(d.get<int64_t>());
    }
    if (n == 0) user_error("{}: quant-state \"shape\" {} has no elements", qs_name_, shape.dump());

    // Double quant: bnb decides by the presence of nested_absmax; the JSON keys and the two
    // nested tensors must then all be there.
    const bool json_nested = state.contains("nested_blocksize") || state.contains("nested_dtype") ||
                             state.contains("nested_offset");
    const bool tensors_nested =
        ckpt_.contains(key("nested_absmax")) || ckpt_.contains(key("nested_quant_map"));
    nested_ = json_nested || tensors_nested;
    if (!nested_) return;
    if (!tensors_nested)
      user_error(
          "{}: the quant state has nested_* keys (double quantization) but the tensors "
          "{} and {} are missing",
          qs_name_, key("nested_absmax"), key("nested_quant_map"));
    const json& nested_block = field(state, "nested_blocksize", is_integer, "an integer");
    if (!nested_block.is_number_unsigned() || nested_block.get<uint64_t>() != nf4::kNestedBlockSize)
      user_error(
          "{}: nested_blocksize {} is not supported; bitsandbytes double quantization "
          "uses {}",
          qs_name_, nested_block.dump(), nf4::kNestedBlockSize);
    const auto nested_dtype =
        field(state, "nested_dtype", is_string, "a string").get<std::string>();
    if (nested_dtype != "float32")
      user_error("{}: nested_dtype \"{}\" is not supported; expected \"float32\"", qs_name_,
                 nested_dtype);
    nested_offset_ = field(state, "nested_offset", is_number, "a number").get<double>();
    if (!std::isfinite(static_cast<float>(nested_offset_)))
      user_error("{}: nested_offset {} is not a finite fp32 value", qs_name_, nested_offset_);
    q.offset = static_cast<float>(nested_offset_);  // exact: bnb writes an fp32 value
  }

  const io::TensorInfo& tensor_info(const std::string& name) const {
    if (!ckpt_.contains(name))
      user_error("{}: missing tensor {} (part of the bitsandbytes 4-bit weight)", weight_, name);
    return ckpt_.info(name);
  }

  void check_vector(const io::TensorInfo& info, const char* dtype, int64_t length,
                    const char* what) const {
    if (info.dtype != dtype || info.shape.size() != 1 || info.shape[0] != length)
      user_error("{}: expected {} [{}] ({}), found {} {}", info.name, dtype, length, what,
                 info.dtype, shape_string(info.shape));
  }

  // `name` must be F32 [size] equal to `table` (value equality: +0 == -0, NaN never equal).
  void check_table(const std::string& name, const float* table, int64_t size, const char* what,
                   const char* why) const {
    const io::TensorInfo& info = tensor_info(name);
    check_vector(info, "F32", size, what);
    const at::Tensor t = ckpt_.tensor(name).contiguous();
    const float* v = t.data_ptr<float>();
    for (int64_t i = 0; i < size; ++i)
      if (!(v[i] == table[i]))
        user_error("{}: entry {} is {:.9g}, but {} has {:.9g} there; {}", name, i, v[i], what,
                   table[i], why);
  }

  void read_tensors(Nf4Tensor& q) {
    int64_t n = 1;
    for (int64_t d : q.shape) n *= d;
    const int64_t packed_bytes = nf4::nf4_packed_bytes(n);
    const int64_t n_blocks = nf4::num_blocks(n, q.block_size);

    const io::TensorInfo& packed = tensor_info(weight_);
    if (packed.dtype != "U8")
      user_error(
          "{}: packed 4-bit data must be U8 (bnb_4bit_quant_storage=\"uint8\"), found {}; "
          "other quant storage dtypes are not supported",
          weight_, packed.dtype);
    const bool packed_shape_ok =
        (packed.shape.size() == 2 && packed.shape[1] == 1) || packed.shape.size() == 1;
    if (!packed_shape_ok || packed.shape[0] != packed_bytes)
      user_error(
          "{}: the quant-state shape {} has {} elements, which pack into U8 [{}, 1], but "
          "the tensor is U8 {}",
          weight_, shape_string(q.shape), n, packed_bytes, shape_string(packed.shape));
    q.packed = ckpt_.tensor(weight_).contiguous().view({packed_bytes, 1});

    const io::TensorInfo& absmax = tensor_info(key("absmax"));
    check_vector(absmax, nested_ ? "U8" : "F32", n_blocks,
                 nested_ ? "one 8-bit code per block of the double-quantized absmax"
                         : "one fp32 absmax per block without double quantization");
    q.absmax = ckpt_.tensor(absmax.name).contiguous();

    check_table(key("quant_map"), nf4::kCodebook, nf4::kNumCodes, "the NF4 codebook",
                "a different quant_map is a different 4-bit format, not nf4");

    if (nested_) {
      const io::TensorInfo& nested_absmax = tensor_info(key("nested_absmax"));
      check_vector(nested_absmax, "F32", nf4::num_blocks(n_blocks, nf4::kNestedBlockSize),
                   "one fp32 scale per 256 absmax codes");
      q.nested_absmax = ckpt_.tensor(nested_absmax.name).contiguous();
      check_table(key("nested_quant_map"), nf4::kDynamicMap, nf4::kDynamicMapSize,
                  "bitsandbytes' signed dynamic map",
                  "only the dynamic map of bitsandbytes >= 0.45 (create_dynamic_map(signed=True), "
                  "entry 0 = -0.99296874) is supported; re-quantize the model with a current "
                  "bitsandbytes or with `qlora-train quantize`");
    }
  }
};

// The fields of `value`'s shortest round-trip scientific form: digits without the dot, the
// decimal exponent of the first digit, and the sign.
struct Decimal {
  bool negative = false;
  std::string digits;
  int exponent = 0;
};

Decimal shortest_decimal(double value) {
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  TORCH_CHECK(result.ec == std::errc(), "to_chars failed");
  const std::string_view text(buf, static_cast<size_t>(result.ptr - buf));
  Decimal d;
  size_t i = 0;
  if (text[i] == '-') {
    d.negative = true;
    ++i;
  }
  const size_t e = text.find('e');
  for (; i < e; ++i)
    if (text[i] != '.') d.digits += text[i];
  d.exponent = std::atoi(std::string(text.substr(e + 1)).c_str());
  return d;
}

}  // namespace

at::ScalarType bnb_dtype_from_name(const std::string& name, const std::string& what) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  user_error("{}: dtype \"{}\" is not supported; use \"float32\", \"bfloat16\" or \"float16\"",
             what, name);
}

std::string bnb_dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      user_error("dtype {} has no bitsandbytes 4-bit equivalent; use float32, bfloat16 or float16",
                 c10::toString(type));
  }
}

bool is_bnb_nf4_module(const io::SafetensorsCheckpoint& checkpoint,
                       const std::string& weight_name) {
  return checkpoint.contains(weight_name + "." + kBnbNf4QuantStateKey);
}

std::vector<std::string> bnb_4bit_companion_names(const std::string& weight_name) {
  std::vector<std::string> names;
  for (const char* suffix : {"absmax", "quant_map", "nested_absmax", "nested_quant_map",
                             kBnbNf4QuantStateKey, kBnbFp4QuantStateKey}) {
    names.push_back(weight_name + "." + suffix);
  }
  return names;
}

bool claims_bnb_4bit_layout(const io::SafetensorsCheckpoint& checkpoint,
                            const std::string& weight_name) {
  for (const auto& name : bnb_4bit_companion_names(weight_name)) {
    if (checkpoint.contains(name)) return true;
  }
  return false;
}

Nf4Tensor read_bnb_nf4(const io::SafetensorsCheckpoint& checkpoint,
                       const std::string& weight_name) {
  return Nf4Reader(checkpoint, weight_name).read();
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  const Decimal d = shortest_decimal(value);
  std::string out = d.negative ? "-" : "";
  // CPython float_repr_style 'short' (PyOS_double_to_string, mode 'r'): decpt = exponent + 1;
  // exponent form when decpt <= -4 or decpt > 16.
  if (d.exponent < -4 || d.exponent >= 16) {
    out += d.digits[0];
    if (d.digits.size() > 1) out += "." + d.digits.substr(1);
    const int e = std::abs(d.exponent);
    out += d.exponent < 0 ? "e-" : "e+";
    if (e < 10) out += '0';
    out += std::to_string(e);
  } else if (d.exponent >= 0) {
    const size_t int_digits = static_cast<size_t>(d.exponent) + 1;
    std::string digits = d.digits;
    if (digits.size() < int_digits) digits.append(int_digits - digits.size(), '0');
    out += digits.substr(0, int_digits) + ".";
    out += digits.size() > int_digits ? digits.substr(int_digits) : "0";
  } else {
    out += "0." + std::string(static_cast<size_t>(-d.exponent - 1), '0') + d.digits;
  }
  return out;
}

std::string bnb_nf4_quant_state_json(const Nf4Tensor& q, const std::string& dtype_name) {
  std::string shape = "[";
  for (size_t i = 0; i < q.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(q.shape[i]);
  shape += "]";
  std::string out = "{\"quant_type\": \"nf4\", \"blocksize\": " + std::to_string(q.block_size) +
                    ", \"dtype\": \"" + dtype_name + "\", \"shape\": " + shape;
  if (q.double_quant()) {
    // json.dumps(allow_nan=True) spells the non-finite floats as JavaScript does.
    std::string offset = python_float_repr(static_cast<double>(q.offset));
    if (offset == "nan") offset = "NaN";
    if (offset == "inf") offset = "Infinity";
    if (offset == "-inf") offset = "-Infinity";
    out += ", \"nested_blocksize\": " + std::to_string(nf4::kNestedBlockSize) +
           ", \"nested_dtype\": \"float32\", \"nested_offset\": " + offset;
  }
  return out + "}";
}

std::vector<std::string> bnb_nf4_tensor_names(const std::string& weight_name, bool double_quant) {
  const std::string w = weight_name + ".";
  std::vector<std::string> names = {weight_name, w + "absmax", w + "quant_map"};
  if (double_quant) {
    names.push_back(w + "nested_absmax");
    names.push_back(w + "nested_quant_map");
  }
  names.push_back(w + kBnbNf4QuantStateKey);
  return names;
}

std::vector<std::pair<std::string, at::Tensor>> bnb_nf4_tensors(const std::string& weight_name,
                                                                const Nf4Tensor& q,
                                                                const std::string& dtype_name) {
  const std::string dtype = dtype_name.empty()
                                ? bnb_dtype_name(q.dtype)
                                : bnb_dtype_name(bnb_dtype_from_name(dtype_name, weight_name));
  int64_t n = 1;
  for (int64_t d : q.shape) n *= d;
  const int64_t n_blocks = nf4::num_blocks(n, q.block_size);
  const at::Device cpu(at::kCPU);
  TORCH_CHECK(q.packed.scalar_type() == at::kByte && q.packed.numel() == nf4::nf4_packed_bytes(n),
              weight_name, ": packed NF4 data does not match its shape");
  TORCH_CHECK(q.absmax.numel() == n_blocks &&
                  q.absmax.scalar_type() == (q.double_quant() ? at::kByte : at::kFloat),
              weight_name, ": absmax does not match the NF4 tensor");

  std::vector<std::pair<std::string, at::Tensor>> out;
  const std::string w = weight_name + ".";
  out.emplace_back(weight_name, q.packed.to(cpu).contiguous().view({nf4::nf4_packed_bytes(n), 1}));
  out.emplace_back(w + "absmax", q.absmax.to(cpu).contiguous().view({n_blocks}));
  out.emplace_back(
      w + "quant_map",
      at::from_blob(const_cast<float*>(nf4::kCodebook), {nf4::kNumCodes}, at::kFloat).clone());
  if (q.double_quant()) {
    TORCH_CHECK(q.nested_absmax.scalar_type() == at::kFloat &&
                    q.nested_absmax.numel() == nf4::num_blocks(n_blocks, nf4::kNestedBlockSize),
                weight_name, ": nested_absmax does not match the NF4 tensor");
    out.emplace_back(w + "nested_absmax", q.nested_absmax.to(cpu).contiguous().view({-1}));
    out.emplace_back(w + "nested_quant_map", at::from_blob(const_cast<float*>(nf4::kDynamicMap),
                                                           {nf4::kDynamicMapSize}, at::kFloat)
                                                 .clone());
  }
  const std::string state = bnb_nf4_quant_state_json(q, dtype);
  at::Tensor bytes = at::empty({static_cast<int64_t>(state.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), state.data(), state.size());
  out.emplace_back(w + kBnbNf4QuantStateKey, bytes);
  return out;
}

nlohmann::json bnb_quantization_config(const Nf4Options& options,
                                       const std::string& compute_dtype) {
  bnb_dtype_from_name(compute_dtype, "bnb_4bit_compute_dtype");
  // transformers' BitsAndBytesConfig.to_dict() for load_in_4bit nf4 with its defaults
  // (transformers 4.57.6; tests/fixtures/bnb_llama_gqa/config.json). nlohmann::json sorts
  // keys, as transformers' to_json_string(sort_keys=True) does.
  return nlohmann::json{
      {"_load_in_4bit", true},
      {"_load_in_8bit", false},
      {"bnb_4bit_compute_dtype", compute_dtype},
      {"bnb_4bit_quant_storage", "uint8"},
      {"bnb_4bit_quant_type", "nf4"},
      {"bnb_4bit_use_double_quant", options.double_quant},
      {"llm_int8_enable_fp32_cpu_offload", false},
      {"llm_int8_has_fp16_weight", false},
      {"llm_int8_skip_modules", nullptr},
      {"llm_int8_threshold", 6.0},
      {"load_in_4bit", true},
      {"load_in_8bit", false},
      {"quant_method", "bitsandbytes"},
  };
}

}  // namespace qlt::quant
