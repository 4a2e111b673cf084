// Entry point of qlt_gpu_tests: Catch2 with our own main, which refuses to run without a CUDA
// device (these tests are only registered with ctest in QLT_CUDA builds, on GPU machines).
#define CATCH_CONFIG_RUNNER
#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>
#include <cstdio>

int main(int argc, char** argv) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::fprintf(stderr,
                 "qlt_gpu_tests: no CUDA device (%s); the GPU tests need a machine with a GPU "
                 "(build with -DQLT_CUDA=ON there)\n",
                 err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount returned 0");
    return 1;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    std::printf("qlt_gpu_tests: %d CUDA device(s); device 0: %s (sm_%d%d)\n", count, prop.name,
                prop.major, prop.minor);
  }
  return Catch::Session().run(argc, argv);
}
