# Defines the imported target qlt::torch.
#
# LibTorch is the torch==2.11.0 wheel's include/ and lib/, linked directly (TorchConfig.cmake
# would want a whole CUDA installation laid out as its CMake expects, and pulls in more than we
# use). QLT_LIBTORCH_DIR is a prefix with those two folders:
# - on development machines and CI, what scripts/setup.sh unpacked into third_party/libtorch
#   (the CPU libraries always, the CUDA ones when nvcc is installed);
# - on the GPU machine, a prefix made from its python torch install (scripts/gpu-check.sh).
# CPU build: libtorch_cpu + libc10. QLT_CUDA=ON adds libtorch_cuda + libc10_cuda and the CUDA
# runtime, and defines QLT_WITH_CUDA (src/quant/*_cuda.cpp, the paged optimizer, metrics).
set(QLT_TORCH_VERSION_REQUIRED 2.11.0)

set(_inc "${QLT_LIBTORCH_DIR}/include")
set(_lib "${QLT_LIBTORCH_DIR}/lib")
set(_version_h "${_inc}/torch/headeronly/version.h")
if(NOT EXISTS "${_version_h}" OR NOT EXISTS "${_lib}/libtorch_cpu.so")
  message(FATAL_ERROR "LibTorch not found in ${QLT_LIBTORCH_DIR}. Run scripts/setup.sh first "
                      "(or pass -DQLT_LIBTORCH_DIR=<prefix with include/ and lib/>).")
endif()
file(STRINGS "${_version_h}" _ver REGEX "#define TORCH_VERSION_(MAJOR|MINOR|PATCH) ")
string(REGEX REPLACE "[^;]* ([0-9]+);[^;]* ([0-9]+);[^;]* ([0-9]+)" "\\1.\\2.\\3" _ver "${_ver}")
if(NOT _ver VERSION_EQUAL QLT_TORCH_VERSION_REQUIRED)
  message(FATAL_ERROR "LibTorch in ${QLT_LIBTORCH_DIR} is ${_ver}, need ${QLT_TORCH_VERSION_REQUIRED}: "
                      "rerun scripts/setup.sh")
endif()
set(_libs "${_lib}/libtorch_cpu.so" "${_lib}/libc10.so")
if(QLT_CUDA)
  foreach(_name libtorch_cuda.so libc10_cuda.so)
    if(NOT EXISTS "${_lib}/${_name}")
      message(FATAL_ERROR "QLT_CUDA=ON but ${_lib}/${_name} does not exist: LibTorch in "
                          "${QLT_LIBTORCH_DIR} has only the CPU libraries. Install the CUDA toolkit "
                          "(nvcc) and rerun scripts/setup.sh, or configure without -DQLT_CUDA=ON.")
    endif()
  endforeach()
  # libtorch_cuda before libtorch_cpu: --no-as-needed keeps it even though the CPU-only code
  # calls nothing in it, so its static initialisers register the CUDA kernels and allocator.
  set(_libs "${_lib}/libtorch_cuda.so" "${_lib}/libc10_cuda.so" ${_libs})
  message(STATUS "LibTorch ${_ver} (CPU + CUDA libraries) from ${QLT_LIBTORCH_DIR}")
else()
  message(STATUS "LibTorch ${_ver} (CPU libraries) from ${QLT_LIBTORCH_DIR}")
endif()

add_library(qlt::torch INTERFACE IMPORTED)
# SYSTEM: LibTorch's own headers are not ours to warn about.
target_include_directories(qlt::torch SYSTEM INTERFACE "${_inc}" "${_inc}/torch/csrc/api/include")
target_link_libraries(qlt::torch INTERFACE "-Wl,--no-as-needed" ${_libs} "-Wl,-rpath,${_lib}")
target_compile_definitions(qlt::torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
if(QLT_CUDA)
  find_package(CUDAToolkit REQUIRED)
  target_link_libraries(qlt::torch INTERFACE CUDA::cudart)
  target_compile_definitions(qlt::torch INTERFACE QLT_WITH_CUDA=1)
endif()
