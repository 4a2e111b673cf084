#!/usr/bin/env bash
# Installs every dependency of qlora-train on Debian 12, idempotently.
#   scripts/setup.sh            # Debian packages + LibTorch 2.11.0 into third_party/libtorch
# A second run on a ready machine only checks and takes seconds.
#
# LibTorch comes from the PyPI wheel torch==2.11.0 (the version of the GPU machine, built for
# CUDA 13.0), fetched with pip by name; its headers and libraries are unpacked, not installed.
# - CPU libraries (libtorch_cpu, libc10): always. libtorch_cpu.so links libcudart.so.13 and
#   libcupti.so.13, which come from their own small PyPI wheels, so the CPU build needs no CUDA
#   installation.
# - CUDA libraries (libtorch_cuda, libc10_cuda, ...): when the CUDA toolkit is installed
#   (nvcc), for the QLT_CUDA=ON build that scripts/test.sh compiles, links and runs on every
#   CI machine (DESIGN.md §6). libtorch_cuda.so finds cuBLAS, cuDNN, NCCL, cuFFT, ... in the
#   toolkit (the dynamic loader's cache); the three it needs that the toolkit lacks
#   (libcufile.so.0, libcusparseLt.so.0, libnvshmem_host.so.3) come from the PyPI wheels that
#   torch 2.11.0 pins, next to libtorch_cuda.so (its RPATH has $ORIGIN).
# Downloads are cached in ~/.cache/qlora-train/wheels (about 0.8 GB with the CUDA part).
set -euo pipefail

readonly TORCH_VERSION=2.11.0
readonly CUDART_VERSION=13.0.96   # nvidia-cuda-runtime, as pinned by torch 2.11.0's cuda-toolkit 13.0.2
readonly CUPTI_VERSION=13.0.85    # nvidia-cuda-cupti, idem
# The CUDA build's runtime libraries that the CUDA toolkit does not ship, as torch 2.11.0 pins them.
readonly CUDA_EXTRA_WHEELS=(nvidia-cufile==1.15.1.6 nvidia-cusparselt-cu13==0.8.0 nvidia-nvshmem-cu13==3.4.5)
readonly CUDA_EXTRA_LIBS=('*/libcufile.so.0' '*/libcusparseLt.so.0' '*/libnvshmem_host.so.3')
readonly TORCH_CUDA_LIBS=(libtorch_cuda.so libc10_cuda.so libtorch_nvshmem.so libtorch_cuda_linalg.so)
readonly APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config unzip git python3 python3-pip python3-venv
  clang-format
  clang libclang-rt-14-dev llvm  # the sanitizer + fuzz build: clang 14, libFuzzer, llvm-symbolizer
  libsentencepiece-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev catch2 libpcre2-dev
  libssl-dev  # libcrypto: streamed SHA-1 of checkpoint files
  libgloo-dev  # gloo's headers, which LibTorch's c10d ProcessGroupGloo.hpp includes (dist/)
  bible-kjv  # corpus of the bundled demo model (scripts/tiny_model)
)

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix="$repo/third_party/libtorch"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/qlora-train/wheels"
log() { printf '[setup] %s\n' "$*"; }

sudo_if_needed() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install_debian_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "Debian packages: all ${#APT_PACKAGES[@]} present"
    return
  fi
  log "Debian packages: installing ${missing[*]}"
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

pip_download() {  # pip_download NAME==VERSION: a manylinux x86_64 wheel into $cache, no dependencies
  local spec=$1 name=${1%%==*}
  if compgen -G "$cache/${name//-/_}-${spec##*==}-*.whl" >/dev/null; then return; fi
  log "downloading $spec"
  local pip=(python3 -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || pip=(/usr/bin/python3 -m pip)
  "${pip[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$cache" "$spec"
}

have_cuda_toolkit() { command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; }

install_libtorch() {
  local stamp="$prefix/.installed"
  local want="layout-2 torch-$TORCH_VERSION cudart-$CUDART_VERSION cupti-$CUPTI_VERSION"
  local with_cuda=0
  if have_cuda_toolkit; then
    with_cuda=1
    want+=" cuda ${CUDA_EXTRA_WHEELS[*]}"
  fi
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    log "LibTorch $TORCH_VERSION: present in $prefix"
    return
  fi
  mkdir -p "$cache"
  pip_download "torch==$TORCH_VERSION"
  pip_download "nvidia-cuda-runtime==$CUDART_VERSION"
  pip_download "nvidia-cuda-cupti==$CUPTI_VERSION"
  log "unpacking LibTorch $TORCH_VERSION into $prefix"
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  unzip -q "$cache"/torch-"$TORCH_VERSION"-*.whl 'torch/include/*' 'torch/lib/libc10.so' \
    'torch/lib/libtorch_cpu.so' 'torch/lib/libgomp.so.1' -d "$tmp"
  unzip -q -j "$cache"/nvidia_cuda_runtime-"$CUDART_VERSION"-*.whl '*/libcudart.so.13' -d "$tmp/lib"
  unzip -q -j "$cache"/nvidia_cuda_cupti-"$CUPTI_VERSION"-*.whl '*/libcupti.so.13' -d "$tmp/lib"
  if ((with_cuda)); then
    local spec name lib
    for spec in "${CUDA_EXTRA_WHEELS[@]}"; do pip_download "$spec"; done
    unzip -q "$cache"/torch-"$TORCH_VERSION"-*.whl "${TORCH_CUDA_LIBS[@]/#/torch/lib/}" -d "$tmp"
    for spec in "${CUDA_EXTRA_WHEELS[@]}"; do
      name=${spec%%==*}
      unzip -q -j "$cache/${name//-/_}-${spec##*==}"-*.whl "${CUDA_EXTRA_LIBS[@]}" -d "$tmp/lib" 2>/dev/null ||
        [[ $? -eq 11 ]]  # 11: this wheel holds only some of the patterns
    done
    for lib in "${CUDA_EXTRA_LIBS[@]}"; do
      [[ -f $tmp/lib/${lib#*/} ]] || { log "error: no ${lib#*/} in ${CUDA_EXTRA_WHEELS[*]}"; exit 1; }
    done
  fi
  rm -rf "$prefix.new"
  mkdir -p "$prefix.new/lib"
  mv "$tmp/torch/include" "$prefix.new/include"
  # The wheel bundles fmt 12 headers, which would shadow Debian's fmt 9 that libspdlog is built
  # against (an ABI mismatch). No LibTorch header the CPU build uses includes them.
  rm -rf "$prefix.new/include/fmt"
  mv "$tmp"/torch/lib/* "$tmp"/lib/* "$prefix.new/lib/"
  echo "$want" >"$prefix.new/.installed"
  rm -rf "$prefix"
  mv "$prefix.new" "$prefix"  # appears whole or not at all
}

install_debian_packages
install_libtorch
if have_cuda_toolkit; then
  log "ready: cmake -S . -B build -G Ninja -DQLT_CUDA=ON   (LibTorch CPU + CUDA in third_party/libtorch)"
else
  log "ready: cmake -S . -B build -G Ninja   (LibTorch CPU in third_party/libtorch; no nvcc, so no CUDA build)"
fi
