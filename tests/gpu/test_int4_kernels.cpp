// The INT4 CUDA kernels (kernels/int4_*.cu) against the CPU reference (src/quant/int4.cpp), bit
// for bit, table-driven like test_nf4_kernels.cpp: every case quantizes on the GPU and on the
// CPU and compares the block bytes exactly, then dequantizes on the GPU to fp32 / fp16 / bf16
// (fast aligned path and scalar misaligned path) and compares with the CPU dequantize exactly.
// The gguf Q4_1 fixtures (tests/fixtures/ggml/q4_1_quantize.*) also go through the kernels
// directly. Inputs hold no NaN: a NaN group's d and m are NaN on both sides but the NaN bits
// (payloads) are not specified.
//
// Buffers are plain cudaMalloc memory (no LibTorch CUDA); LibTorch is only the CPU side.
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "gpu_test_paths.h"
#include "int4_layout.h"
#include "io/safetensors.h"
#include "kernels.h"
#include "quant/int4.h"

namespace {

namespace k = qlt::kernels;
namespace int4 = qlt::int4;
using qlt::quant::Int4Options;
using qlt::quant::Int4Tensor;

// ---- device memory ----------------------------------------------------------------------

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    if (bytes > 0) QLT_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T = void>
  T* get(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(ptr_) + byte_offset);
  }

 private:
  void* ptr_ = nullptr;
};

// Copies a CPU tensor's bytes to `dst` and waits for the copy.
void upload_to(void* dst, const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  if (c.nbytes() > 0) {
    QLT_CUDA_CHECK(cudaMemcpy(dst, c.const_data_ptr(), c.nbytes(), cudaMemcpyHostToDevice));
  }
  QLT_CUDA_CHECK(cudaDeviceSynchronize());
}

// Device bytes (after syncing `stream`) as a CPU tensor of the given shape and dtype.
at::Tensor download(const void* src, at::IntArrayRef shape, at::ScalarType dtype,
                    cudaStream_t stream) {
  QLT_CUDA_CHECK(cudaStreamSynchronize(stream));
  at::Tensor t = at::empty(shape, dtype);
  if (t.nbytes() > 0) {
    QLT_CUDA_CHECK(cudaMemcpy(t.mutable_data_ptr(), src, t.nbytes(), cudaMemcpyDeviceToHost));
  }
  return t;
}

k::DType kernel_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat:
      return k::DType::kF32;
    case at::kHalf:
      return k::DType::kF16;
    case at::kBFloat16:
      return k::DType::kBF16;
    default:
      throw std::invalid_argument("no kernel dtype for this scalar type");
  }
}

// "" when `got` and `want` hold the same bits; else how many elements differ and the first.
std::string bit_diff(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  std::ostringstream out;
  if (got.scalar_type() != want.scalar_type() || got.numel() != want.numel()) {
    out << what << ": got " << got.scalar_type() << " x" << got.numel() << ", want "
        << want.scalar_type() << " x" << want.numel();
    return out.str();
  }
  const at::Tensor a = got.contiguous().reshape(-1), b = want.contiguous().reshape(-1);
  if (std::memcmp(a.const_data_ptr(), b.const_data_ptr(), a.nbytes()) == 0) return "";
  const auto* pa = static_cast<const uint8_t*>(a.const_data_ptr());
  const auto* pb = static_cast<const uint8_t*>(b.const_data_ptr());
  const int64_t es = a.element_size();
  int64_t first = -1, count = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (std::memcmp(pa + i * es, pb + i * es, es) != 0) {
      if (first < 0) first = i;
      ++count;
    }
  }
  out << what << ": " << count << " of " << a.numel() << " elements differ; first at " << first
      << ": got " << a[first].item<double>() << ", want " << b[first].item<double>();
  return out.str();
}

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { QLT_CUDA_CHECK(cudaStreamCreate(&s)); }
  ~Stream() { cudaStreamDestroy(s); }
};

// ---- inputs -----------------------------------------------------------------------------

enum class Fill { kNormal, kConstant, kTies, kSignedZeros, kOutliers, kTiny, kSubnormal };

const char* fill_name(Fill f) {
  switch (f) {
    case Fill::kNormal:
      return "normal";
    case Fill::kConstant:
      return "constant-groups";
    case Fill::kTies:
      return "ties";
    case Fill::kSignedZeros:
      return "signed-zeros";
    case Fill::kOutliers:
      return "outliers";
    case Fill::kTiny:
      return "tiny";
    case Fill::kSubnormal:
      return "fp32-subnormal";
  }
  return "?";
}

struct Case {
  int64_t out = 1, in = 32;
  at::ScalarType dtype = at::kFloat;
  int group = 32;
  Fill fill = Fill::kNormal;

  std::string name() const {
    std::ostringstream s;
    s << "[" << out << ", " << in << "] " << dtype << " group " << group << " " << fill_name(fill);
    return s.str();
  }
};

// N(0, 1) (seeded) with the case's edge values written into its groups, cast to its dtype.
at::Tensor make_input(const Case& c, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor x = at::randn({c.out * c.in}, gen, at::kFloat);
  float* p = x.mutable_data_ptr<float>();
  const int64_t g = c.group, n_groups = c.out * c.in / g;
  for (int64_t b = 0; b < n_groups; ++b) {
    float* v = p + b * g;
    switch (c.fill) {
      case Fill::kConstant:  // every third group constant (d == 0): 0, 0.5 or -3.25
        if (b % 3 == 0) std::fill(v, v + g, b % 2 ? 0.5f : (b % 9 == 0 ? 0.0f : -3.25f));
        break;
      case Fill::kTies: {  // min 0, max 15 * s (d = s exact, id = 1/s): values k + 0.5 and one
        const float s = (b % 2) ? 2.0f : 1.0f;  // ulp around them
        v[0] = 0.0f;
        v[1] = 15.0f * s;
        for (int64_t j = 2; j < g; ++j) {
          const float t = (static_cast<float>((j - 2) % 15) + 0.5f) * s;
          const int64_t variant = (j / 15) % 3;
          v[j] = variant == 0 ? t : std::nextafter(t, variant == 1 ? 100.0f : -100.0f);
        }
        break;
      }
      case Fill::kSignedZeros:  // zero groups of mixed signs, and zeros as a group's minimum
        if (b % 2 == 0) {
          for (int64_t j = 0; j < g; ++j) v[j] = (j % 3 == 0) ? -0.0f : 0.0f;
        } else {
          for (int64_t j = 0; j < g; ++j) v[j] = std::fabs(v[j]);
          v[b % g] = -0.0f;
          v[(b + 5) % g] = 0.0f;
        }
        break;
      case Fill::kOutliers:
        v[b % g] = (b % 2 ? -1.0f : 1.0f) * 900.0f;
        break;
      default:
        break;
    }
  }
  if (c.fill == Fill::kTiny) x.mul_(1e-5f);        // d a float16 subnormal
  if (c.fill == Fill::kSubnormal) x.mul_(1e-38f);  // fp32 subnormal d, 1/d may be inf
  return x.reshape({c.out, c.in}).to(c.dtype);
}

// ---- one case ---------------------------------------------------------------------------

// Dequantizes `blocks` (device, ref's bytes) into each output dtype on the GPU and compares
// with the CPU reference, through the aligned fast path and with misaligned blocks / out.
void check_dequantize(const Int4Tensor& ref, const void* d_blocks, const std::string& name,
                      cudaStream_t stream) {
  const int64_t n = ref.numel(), n_groups = ref.num_groups();
  const size_t block_bytes = static_cast<size_t>(ref.blocks.nbytes());
  DeviceBuffer shifted(block_bytes + 1);
  QLT_CUDA_CHECK(cudaMemcpy(shifted.get(1), d_blocks, block_bytes, cudaMemcpyDeviceToDevice));
  for (at::ScalarType out_dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const at::Tensor want = qlt::quant::dequantize_int4(ref, out_dtype).reshape({-1});
    const size_t es = at::elementSize(out_dtype);
    DeviceBuffer out(static_cast<size_t>(n) * es + 16);
    k::int4_dequantize(static_cast<const uint8_t*>(d_blocks), n_groups, ref.group_size, out.get(),
                       kernel_dtype(out_dtype), stream);
    CHECK(bit_diff(download(out.get(), {n}, out_dtype, stream), want,
                   name + " dequantize aligned") == "");
    k::int4_dequantize(shifted.get<uint8_t>(1), n_groups, ref.group_size, out.get(es),
                       kernel_dtype(out_dtype), stream);
    CHECK(bit_diff(download(out.get(es), {n}, out_dtype, stream), want,
                   name + " dequantize misaligned") == "");
  }
}

void run_case(const Case& c, uint64_t seed, cudaStream_t stream) {
  const std::string name = c.name();
  INFO(name);
  const at::Tensor x = make_input(c, seed);
  const Int4Tensor ref = qlt::quant::quantize_int4(x, Int4Options{c.group});
  const int64_t n_groups = ref.num_groups();

  DeviceBuffer d_x(x.nbytes());
  upload_to(d_x.get(), x);
  DeviceBuffer d_blocks(ref.blocks.nbytes());
  k::int4_quantize(d_x.get(), kernel_dtype(c.dtype), n_groups, c.group, d_blocks.get<uint8_t>(),
                   stream);
  CHECK(bit_diff(download(d_blocks.get(), ref.blocks.sizes(), at::kByte, stream), ref.blocks,
                 name + " blocks") == "");
  check_dequantize(ref, d_blocks.get(), name, stream);
}

constexpr at::ScalarType kDtypes[] = {at::kFloat, at::kBFloat16, at::kHalf};

}  // namespace

TEST_CASE("GPU INT4 = CPU reference: shapes x group sizes x dtypes", "[gpu][int4]") {
  // One group, one row of many groups, many rows, odd row counts, > 65535 groups (grid-stride).
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 32}, {1, 128}, {3, 64}, {7, 384}, {64, 256}, {5, 4096}, {257, 640}, {1, 11008}};
  Stream stream;
  uint64_t seed = 1;
  for (const auto& [out, in] : shapes) {
    for (int g : int4::kGroupSizes) {
      if (in % g != 0) continue;
      for (at::ScalarType dtype : kDtypes)
        run_case({out, in, dtype, g, Fill::kNormal}, seed++, stream.s);
    }
  }
}

TEST_CASE("GPU INT4 = CPU reference: edge values", "[gpu][int4]") {
  // Constant groups (d == 0), values on / one ulp off the rounding points, zeros of both signs
  // (the total order), outliers, tiny values, an fp32 subnormal range (1/d overflows).
  Stream stream;
  uint64_t seed = 1000;
  for (Fill fill : {Fill::kConstant, Fill::kTies, Fill::kSignedZeros, Fill::kOutliers, Fill::kTiny,
                    Fill::kSubnormal}) {
    for (int g : int4::kGroupSizes) {
      for (at::ScalarType dtype : kDtypes) {
        // Ties need the exact values; bf16 / fp16 cannot hold k + 0.5 +- 1 fp32 ulp.
        if (fill == Fill::kTies && dtype != at::kFloat) continue;
        run_case({9, 4 * 128, dtype, g, fill}, seed++, stream.s);
      }
    }
  }
}

TEST_CASE("GPU INT4 = CPU reference: a 4096x11008 bf16 weight", "[gpu][int4][large]") {
  Stream stream;
  run_case({4096, 11008, at::kBFloat16, 32, Fill::kNormal}, 7, stream.s);
  run_case({4096, 11008, at::kFloat, 128, Fill::kNormal}, 8, stream.s);
}

TEST_CASE("GPU INT4 = gguf Q4_1 fixtures (tests/fixtures/ggml)", "[gpu][int4][ggml]") {
  const std::filesystem::path dir =
      std::filesystem::path(QLT_GPU_TEST_SOURCE_DIR) / "tests/fixtures/ggml";
  const auto file = qlt::io::SafetensorsFile::open(dir / "q4_1_quantize.safetensors");
  std::ifstream in(dir / "q4_1_quantize.json");
  const auto cases = nlohmann::json::parse(in)["cases"];
  REQUIRE(cases.size() >= 12);
  Stream stream;
  for (const auto& [name, c] : cases.items()) {
    INFO("fixture case " << name);
    const at::Tensor input = file.tensor(name + ".input").contiguous();
    const at::Tensor want_blocks = file.tensor(name + ".blocks");
    const int64_t n_groups = input.numel() / 32;
    DeviceBuffer d_x(input.nbytes());
    upload_to(d_x.get(), input);
    DeviceBuffer d_blocks(want_blocks.nbytes());
    k::int4_quantize(d_x.get(), kernel_dtype(input.scalar_type()), n_groups, 32,
                     d_blocks.get<uint8_t>(), stream.s);
    CHECK(bit_diff(download(d_blocks.get(), want_blocks.sizes(), at::kByte, stream.s), want_blocks,
                   name + ".blocks") == "");
    DeviceBuffer out(input.numel() * sizeof(float));
    upload_to(d_blocks.get(), want_blocks);  // dequantize gguf's own bytes
    k::int4_dequantize(d_blocks.get<uint8_t>(), n_groups, 32, out.get(), k::DType::kF32, stream.s);
    CHECK(bit_diff(download(out.get(), {input.numel()}, at::kFloat, stream.s),
                   file.tensor(name + ".dequantized"), name + ".dequantized") == "");
  }
}

TEST_CASE("GPU INT4 launchers validate their arguments", "[gpu][int4]") {
  Stream stream;
  DeviceBuffer buf(1 << 16);
  uint8_t* bytes = buf.get<uint8_t>();
  float* floats = buf.get<float>();
  for (int bad : {0, 16, 48, 96, 256}) {
    INFO("group size " << bad);
    CHECK_THROWS_AS(k::int4_quantize(floats, k::DType::kF32, 4, bad, bytes, stream.s),
                    std::invalid_argument);
    CHECK_THROWS_AS(k::int4_dequantize(bytes, 4, bad, floats, k::DType::kF32, stream.s),
                    std::invalid_argument);
  }
  CHECK_THROWS_AS(k::int4_quantize(floats, k::DType::kF32, -1, 32, bytes, stream.s),
                  std::invalid_argument);
  CHECK_THROWS_AS(k::int4_quantize(nullptr, k::DType::kF32, 4, 32, bytes, stream.s),
                  std::invalid_argument);
  CHECK_THROWS_AS(k::int4_quantize(floats, k::DType::kF32, 4, 32, nullptr, stream.s),
                  std::invalid_argument);
  CHECK_THROWS_AS(k::int4_dequantize(bytes, -4, 32, floats, k::DType::kF32, stream.s),
                  std::invalid_argument);
  CHECK_THROWS_AS(k::int4_dequantize(nullptr, 4, 32, floats, k::DType::kF32, stream.s),
                  std::invalid_argument);
  CHECK_THROWS_AS(k::int4_dequantize(bytes, 4, 32, nullptr, k::DType::kF32, stream.s),
                  std::invalid_argument);
  // n_groups == 0 is a no-op, null pointers included.
  CHECK_NOTHROW(k::int4_quantize(nullptr, k::DType::kBF16, 0, 64, nullptr, stream.s));
  CHECK_NOTHROW(k::int4_dequantize(nullptr, 0, 128, nullptr, k::DType::kF16, stream.s));
  QLT_CUDA_CHECK(cudaStreamSynchronize(stream.s));
}
