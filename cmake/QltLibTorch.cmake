# Defines the imported target qlt::torch.
#
# CPU build (default): the headers and CPU libraries that scripts/setup.sh unpacked from the
# torch==2.11.0 wheel into QLT_LIBTORCH_DIR. We link libtorch_cpu + libc10 directly instead of
# going through TorchConfig.cmake, which would pull in libtorch_cuda and all of CUDA.
# CUDA build (QLT_CUDA=ON, GPU machine): find_package(Torch) from the machine's torch install;
# pass -DCMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)').
set(QLT_TORCH_VERSION_REQUIRED 2.11.0)

if(QLT_CUDA)
  enable_language(CUDA)
  find_package(Torch REQUIRED)
  if(NOT Torch_VERSION VERSION_EQUAL QLT_TORCH_VERSION_REQUIRED)
    message(FATAL_ERROR "QLT_CUDA: found LibTorch ${Torch_VERSION}, need ${QLT_TORCH_VERSION_REQUIRED}")
  endif()
  add_library(qlt::torch INTERFACE IMPORTED)
  target_link_libraries(qlt::torch INTERFACE ${TORCH_LIBRARIES})
  target_compile_definitions(qlt::torch INTERFACE QLT_WITH_CUDA=1)
  return()
endif()

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
message(STATUS "LibTorch ${_ver} (CPU libraries) from ${QLT_LIBTORCH_DIR}")

add_library(qlt::torch INTERFACE IMPORTED)
# SYSTEM: LibTorch's own headers are not ours to warn about.
target_include_directories(qlt::torch SYSTEM INTERFACE "${_inc}" "${_inc}/torch/csrc/api/include")
target_link_libraries(qlt::torch INTERFACE "${_lib}/libtorch_cpu.so" "${_lib}/libc10.so"
                      "-Wl,-rpath,${_lib}" "-Wl,--no-as-needed")
target_compile_definitions(qlt::torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
