#!/usr/bin/env bash
# Builds the CUDA build on the GPU machine and runs the whole test suite there, tests/gpu
# included, in one call (DESIGN.md §6). Three ways to run it:
#   scripts/gpu-check.sh --prepare   # development machine: download the Debian packages the GPU
#                                    # machine lacks into .gpu-carry/debs (cached), check the carry
#                                    # size, print the call that runs the check there
#   scripts/gpu-check.sh             # GPU machine (no network, no Debian packages): unpack them,
#                                    # configure + build build-gpu/ (-DQLT_CUDA=ON, LibTorch of the
#                                    # machine's python torch), run ctest, print a summary
#   scripts/gpu-check.sh --dry-run   # any machine, CI: everything up to the point a GPU is needed
#                                    # (prepare, unpack, configure build-gpu-dry/ against the carried
#                                    # packages and prove they resolve from there), then exit 0
#
# The GPU machine has python3 with torch 2.11 (CUDA), nvcc, CMake and ninja, but none of the
# project's Debian packages and no network. So the .deb files of CARRY_PACKAGES travel with the
# working tree (a git-ignored folder, named in the device tool's carry) and are unpacked with
# `dpkg-deb -x` (or `ar` + `tar`) into .gpu-carry/prefix, never into /. CMake finds them there
# (CMAKE_PREFIX_PATH, a pkg-config wrapper with that prefix as its sysroot), the binaries through
# their build RPATH. LibTorch is the python torch package's include/ and lib/, seen through
# .gpu-carry/libtorch (symbolic links, without its bundled fmt 12 headers, which would shadow
# the fmt 9 that Debian's spdlog is built against). The dry run makes that folder from
# third_party/libtorch (scripts/setup.sh) instead.
#
# Tests that need the real SmolLM2 model (models/smollm2/, 98 MB: over the 64 MiB the device tool
# carries, and the GPU machine cannot fetch it) are excluded by name when the file is absent, and
# listed with the reason; tests that only skip a SmolLM2 part are listed as partly skipped.
#
# Environment: QLT_GPU_CHECK_BUILD_DIR (default build-gpu, build-gpu-dry for --dry-run),
# QLT_CUDA_ARCHITECTURES (default 90: H100/H200), QLT_GPU_CHECK_OUT (a folder: the logs and the
# JUnit file are copied there), QLT_GPU_CHECK_UNPACK=ar (unpack with ar + tar even where dpkg-deb
# exists; for testing that path).
# Exit status: 0 all passed (or the dry run / prepare succeeded), 1 a failure (build, tests, a
# check; the message says which and how to fix it), 2 a usage error.
set -euo pipefail

# The project's Debian build dependencies (scripts/setup.sh) that the GPU machine lacks: the -dev
# packages, the runtime libraries they depend on, and pkgconf (the GPU machine may have no
# pkg-config). --prepare checks that every dependency of these is listed here or in BASE_PACKAGES.
readonly CARRY_PACKAGES=(
  libsentencepiece-dev libsentencepiece0
  nlohmann-json3-dev libcli11-dev catch2
  libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
  libssl-dev libssl3
  pkgconf pkgconf-bin libpkgconf3
  libgloo-dev
)
# Carried for their headers only, so their dependencies are not: gloo's headers are what LibTorch's
# c10d ProcessGroupGloo.hpp includes (src/dist/); gloo itself is compiled into libtorch_cpu.so.
readonly HEADER_ONLY_PACKAGES=(libgloo-dev)
# What every machine with a C++ compiler has (the GPU machine's own C library and libstdc++).
readonly BASE_PACKAGES=(libc6 libc6-dev libc-dev libgcc-s1 libstdc++6)
readonly CARRY_LIMIT_BYTES=$((64 * 1024 * 1024))  # the device tool's limit for tree + carry
readonly TORCH_SERIES=2.11
readonly TRIPLET=x86_64-linux-gnu
readonly SMOLLM2_GGUF=models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

repo=$(cd "$(dirname "$0")/.." && pwd)
carry="$repo/.gpu-carry"
debs="$carry/debs"
prefix="$carry/prefix"
libdir="$prefix/usr/lib/$TRIPLET"
torch_prefix="$carry/libtorch"
jobs=$(nproc)

log() { printf '[gpu-check] %s\n' "$*"; }
die() {
  printf '[gpu-check] error: %s\n' "$*" >&2
  exit 1
}
usage() { sed -n '2,/^set -euo pipefail$/{/^#/s/^# \{0,1\}//p}' "$0"; }
quoted() { printf '%q ' "$@"; }  # a command line as one copy-pasteable string
elapsed() { printf '%ds' $(($(date +%s) - $1)); }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
show_tail() {  # show_tail FILE N: the end of a log, for a failed step
  printf -- '----- last %s lines of %s\n' "$2" "$1" >&2
  tail -n "$2" "$1" >&2
  printf -- '-----\n' >&2
}

mode=gpu
if (($# > 1)); then
  printf '[gpu-check] one argument at most, got %d\n\n' "$#" >&2
  usage >&2
  exit 2
fi
case ${1:-} in
  "") ;;
  --prepare) mode=prepare ;;
  --dry-run) mode=dry ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    printf '[gpu-check] unknown argument %q (expected --prepare, --dry-run or nothing)\n\n' "$1" >&2
    usage >&2
    exit 2
    ;;
esac
if [[ $mode == dry ]]; then
  build="${QLT_GPU_CHECK_BUILD_DIR:-$repo/build-gpu-dry}"
else
  build="${QLT_GPU_CHECK_BUILD_DIR:-$repo/build-gpu}"
fi
[[ $build == /* ]] || build="$repo/$build"

# ---- prepare (development machine) ------------------------------------------------------------

deb_of() { compgen -G "$debs/${1}_*.deb" | head -n 1; }  # the cached .deb of a package, if any

download_debs() {
  local missing=() p
  for p in "${CARRY_PACKAGES[@]}"; do [[ -n $(deb_of "$p") ]] || missing+=("$p"); done
  if ((${#missing[@]} == 0)); then
    log "packages: all ${#CARRY_PACKAGES[@]} .deb files cached in ${debs#"$repo"/}"
    return
  fi
  command -v apt-get >/dev/null ||
    die "${#missing[@]} packages to download (${missing[*]}) but apt-get is missing: --prepare runs on the Debian 12 development machine"
  log "packages: downloading ${missing[*]}"
  local tmp="$debs/.partial" apt=(apt-get -q download)
  # As root, apt downloads as its _apt user, which cannot write here (a warning); so not that.
  [[ $(id -u) -ne 0 ]] || apt+=(-o APT::Sandbox::User=root)
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! (cd "$tmp" && "${apt[@]}" "${missing[@]}" >"$tmp.log" 2>&1); then
    if grep -q 'Unable to locate package\|has no installation candidate' "$tmp.log" &&
      { [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null; }; then
      log "apt-get knows no such package yet: apt-get update, then again"
      if [[ $(id -u) -eq 0 ]]; then apt-get update -qq; else sudo -n apt-get update -qq; fi
      (cd "$tmp" && "${apt[@]}" "${missing[@]}" >"$tmp.log" 2>&1) || {
        show_tail "$tmp.log" 20
        die "apt-get download failed (above). Needs Debian 12's package lists and network."
      }
    else
      show_tail "$tmp.log" 20
      die "apt-get download failed (above). Needs network and Debian 12's package lists (sudo apt-get update), and every name of CARRY_PACKAGES in this script must exist there."
    fi
  fi
  mv "$tmp"/*.deb "$debs/"
  rm -rf "$tmp" "$tmp.log"
}

check_deb_dependencies() {  # every dependency of a carried package is carried or in every image
  local known=" ${CARRY_PACKAGES[*]} ${BASE_PACKAGES[*]} " p deb field alt ok name bad=()
  for p in "${CARRY_PACKAGES[@]}"; do
    [[ " ${HEADER_ONLY_PACKAGES[*]} " == *" $p "* ]] && continue
    deb=$(deb_of "$p")
    for field in Pre-Depends Depends; do
      while IFS= read -r alt; do
        [[ -n ${alt// /} ]] || continue
        ok=0
        while IFS= read -r name; do
          name=${name%%[ (:]*}
          [[ $known == *" $name "* ]] && ok=1
        done < <(tr '|' '\n' <<<"$alt" | sed 's/^ *//')
        ((ok)) || bad+=("$p needs '${alt# }'")
      done < <(dpkg-deb -f "$deb" "$field" | tr ',' '\n')
    done
  done
  if ((${#bad[@]})); then
    printf '  %s\n' "${bad[@]}" >&2
    die "carried packages depend on packages that are not carried (above): add them to CARRY_PACKAGES in $0, then run --prepare again"
  fi
}

remove_stale_debs() {  # .deb files of packages no longer in CARRY_PACKAGES would travel for nothing
  local f name wanted=" ${CARRY_PACKAGES[*]} "
  for f in "$debs"/*.deb; do
    [[ -e $f ]] || continue
    name=$(basename "$f")
    name=${name%%_*}
    if [[ $wanted != *" $name "* ]]; then
      log "removing $(basename "$f") (no longer carried)"
      rm -f "$f"
    fi
  done
}

prepare() {
  mkdir -p "$debs"
  download_debs
  remove_stale_debs
  if command -v dpkg-deb >/dev/null; then check_deb_dependencies; fi
  local carry_bytes tree_bytes=0 total tree_note
  carry_bytes=$(du -cb "$debs"/*.deb | tail -n 1 | cut -f1)
  if command -v git >/dev/null && git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    # What the device tool sends: tracked and untracked-but-not-ignored files, plus the carry.
    tree_bytes=$(cd "$repo" && git ls-files -co --exclude-standard -z |
      du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
    tree_note="working tree $(mib "$tree_bytes") MiB"
  else
    tree_note="working tree not counted (not a git checkout)"
  fi
  total=$((carry_bytes + tree_bytes))
  log "carry: .gpu-carry/debs $(mib "$carry_bytes") MiB ($(compgen -G "$debs/*.deb" | wc -l) .deb files) + $tree_note = $(mib "$total") MiB of the device tool's 64 MiB"
  ((total <= CARRY_LIMIT_BYTES)) ||
    die "the working tree plus .gpu-carry/debs is over the device tool's 64 MiB: drop packages from CARRY_PACKAGES or untracked files from the tree"
}

print_run_call() {
  cat <<'EOF'
[gpu-check] on the GPU machine, one call of the device tool (build + tests; 600 s is the tool's most):
  run(command="scripts/gpu-check.sh", carry=[".gpu-carry/debs"], timeout_s=600)
  (with QLT_GPU_CHECK_OUT=$OUT in front of the command, the logs and the JUnit file come back too)
EOF
}

# ---- unpack + prefixes (GPU machine, and the dry run) ------------------------------------------

extract_deb() {  # extract_deb FILE DEST: the package's files, as dpkg -x would put them
  local deb=$1 dest=$2 member
  if [[ ${QLT_GPU_CHECK_UNPACK:-} != ar ]] && command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$deb" "$dest"
    return
  fi
  command -v ar >/dev/null || die "cannot unpack $deb: neither dpkg-deb nor ar (binutils) is installed"
  member=$(ar t "$deb" | grep '^data\.tar' | head -n 1) || true
  case $member in
    data.tar.xz) ar p "$deb" "$member" | tar -xJ -C "$dest" ;;
    data.tar.zst) ar p "$deb" "$member" | tar --zstd -x -C "$dest" ;;
    data.tar.gz) ar p "$deb" "$member" | tar -xz -C "$dest" ;;
    data.tar) ar p "$deb" "$member" | tar -x -C "$dest" ;;
    *) die "$deb holds no data.tar.{xz,zst,gz} (ar t says: $(ar t "$deb" | tr '\n' ' ')); download it again with --prepare" ;;
  esac
}

unpack_debs() {
  local files=() want f t
  if [[ -d $debs ]]; then mapfile -t files < <(compgen -G "$debs/*.deb" | sort); fi
  ((${#files[@]})) || die "no .deb files in .gpu-carry/debs. On the development machine run scripts/gpu-check.sh --prepare, and name .gpu-carry/debs in the device tool's carry"
  for f in "${CARRY_PACKAGES[@]}"; do
    [[ -n $(deb_of "$f") ]] || die ".gpu-carry/debs has no $f package: run scripts/gpu-check.sh --prepare on the development machine and carry .gpu-carry/debs again"
  done
  want=$(for f in "${files[@]}"; do printf '%s %s\n' "$(basename "$f")" "$(stat -c %s "$f")"; done)
  if [[ -f $prefix/.unpacked && $(cat "$prefix/.unpacked") == "$want" ]]; then
    log "packages: unpacked in ${prefix#"$repo"/} already"
    return
  fi
  local start
  start=$(date +%s)
  rm -rf "$prefix.new"
  mkdir -p "$prefix.new"
  for f in "${files[@]}"; do extract_deb "$f" "$prefix.new"; done
  # An absolute link would point into this machine's /usr: point it into the prefix instead.
  while IFS= read -r f; do
    t=$(readlink "$f")
    ln -sfn "$prefix$t" "$f"
  done < <(find "$prefix.new" -type l -lname '/*')
  # pkg-config: the carried pkgconf, with the prefix as its sysroot (the .pc files say /usr).
  mkdir -p "$prefix.new/bin"
  cat >"$prefix.new/bin/pkg-config" <<EOF
#!/bin/sh
# Written by scripts/gpu-check.sh: the carried pkgconf, reading only the carried .pc files.
export PKG_CONFIG_SYSROOT_DIR='$prefix'
export PKG_CONFIG_LIBDIR='$libdir/pkgconfig:$prefix/usr/share/pkgconfig'
LD_LIBRARY_PATH='$libdir'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec '$prefix/usr/bin/pkgconf' "\$@"
EOF
  chmod +x "$prefix.new/bin/pkg-config"
  printf '%s\n' "$want" >"$prefix.new/.unpacked"
  rm -rf "$prefix"
  mv "$prefix.new" "$prefix"
  "$prefix/bin/pkg-config" --exists sentencepiece libpcre2-8 libcrypto ||
    die "the carried pkg-config does not find sentencepiece / libpcre2-8 / libcrypto in $prefix"
  log "packages: ${#files[@]} .deb files unpacked into ${prefix#"$repo"/} ($(elapsed "$start"))"
}

make_torch_prefix() {  # make_torch_prefix DIR: .gpu-carry/libtorch = DIR's include/ (no fmt) + lib/
  local src=$1 entry
  [[ -f $src/include/torch/headeronly/version.h && -f $src/lib/libtorch_cpu.so ]] ||
    die "$src has no include/torch/headeronly/version.h or lib/libtorch_cpu.so: not a LibTorch (torch package) folder"
  rm -rf "$torch_prefix"
  mkdir -p "$torch_prefix/include"
  for entry in "$src"/include/*; do
    [[ $(basename "$entry") == fmt ]] && continue  # fmt 12: would shadow Debian's fmt 9 (spdlog's)
    ln -s "$entry" "$torch_prefix/include/"
  done
  # lib/ as one link: libtorch_cuda.so finds the CUDA libraries through $ORIGIN/../../nvidia/...
  # in its RPATH, which the kernel resolves from the real folder.
  ln -s "$src/lib" "$torch_prefix/lib"
  log "LibTorch prefix: ${torch_prefix#"$repo"/} -> $src (include/ without fmt, lib/)"
}

find_nvcc() {  # the CUDA compiler: PATH, /usr/local/cuda, the pip CUDA 13 packages beside torch
  local c
  for c in "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc "${1:-}/nvidia/cu13/bin/nvcc"; do
    [[ -n $c && -x $c ]] && {
      echo "$c"
      return
    }
  done
  return 1
}

cmake_args() {  # cmake_args CUDA(ON|OFF) NVCC [LINK_DIRS]: the configure command, one word a line
  local cuda=$1 nvcc=$2 link_dirs=${3:-}
  printf '%s\n' cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DQLT_BUILD_TESTS=ON "-DQLT_CUDA=$cuda" "-DQLT_LIBTORCH_DIR=$torch_prefix" \
    "-DCMAKE_PREFIX_PATH=$prefix/usr" "-DOPENSSL_ROOT_DIR=$prefix/usr" \
    "-DPKG_CONFIG_EXECUTABLE=$prefix/bin/pkg-config" \
    "-DCMAKE_CXX_STANDARD_INCLUDE_DIRECTORIES=$prefix/usr/include/$TRIPLET" \
    "-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$libdir${link_dirs:+:$link_dirs}"
  # ^ the multiarch include folder (openssl/configuration.h), which the compiler searches only
  #   under /usr; -rpath-link: where the linker finds the libraries' own dependencies.
  if [[ -n $nvcc ]]; then
    printf '%s\n' "-DCMAKE_CUDA_COMPILER=$nvcc" "-DCMAKE_CUDA_ARCHITECTURES=${QLT_CUDA_ARCHITECTURES:-90}"
  fi
}

configure() {  # configure ARGS...: run cmake, its output into a log; show the end on failure
  local start
  start=$(date +%s)
  mkdir -p "$build"
  if ! "$@" >"$build/gpu-check-configure.log" 2>&1; then
    show_tail "$build/gpu-check-configure.log" 40
    die "configuring ${build#"$repo"/} failed (above; whole log: $build/gpu-check-configure.log)"
  fi
  configure_time=$(elapsed "$start")
  log "configured ${build#"$repo"/} ($configure_time)"
}

verify_carried_resolution() {  # every dependency CMake found lies in the carried prefix
  local cache="$build/CMakeCache.txt" entry value bad=() required=(
    nlohmann_json_DIR CLI11_DIR fmt_DIR spdlog_DIR Catch2_DIR PKG_CONFIG_EXECUTABLE
    pkgcfg_lib_SENTENCEPIECE_sentencepiece pkgcfg_lib_PCRE2_pcre2-8)
  # OpenSSL: once cmake/QltDependencies.cmake asks for it.
  if grep -q '^OPENSSL_CRYPTO_LIBRARY:' "$cache"; then required+=(OPENSSL_CRYPTO_LIBRARY OPENSSL_INCLUDE_DIR); fi
  for entry in "${required[@]}"; do
    value=$(sed -n "s/^${entry}:[A-Z]*=//p" "$cache")
    [[ $value == "$prefix"/* ]] || bad+=("$entry=${value:-<not in the cache>}")
  done
  # And nothing else from the system's library folders: compilers, tools, CUDA and the C
  # library itself (librt.a of FindCUDAToolkit) are what the GPU machine has too.
  while IFS= read -r entry; do
    bad+=("$entry")
  done < <(grep -E '^[A-Za-z0-9_.+-]+:(FILEPATH|PATH)=/usr/(include|lib|share)/' "$cache" |
    grep -vE "=/usr/lib/($TRIPLET/)?lib(c|m|dl|rt|pthread)\.(a|so)\$" || true)
  if ((${#bad[@]})); then
    printf '  %s\n' "${bad[@]}" >&2
    die "CMake resolved dependencies outside the carried prefix $prefix (above); the GPU machine has none there. Check CARRY_PACKAGES and cmake_args in $0"
  fi
  log "CMakeCache: ${#required[@]} dependencies resolve into ${prefix#"$repo"/} (${required[*]})"
}

# ---- dry run only: a probe compiled with the real flags of qlt_tests ------------------------------

probe_carried_headers_and_libs() {
  local dir="$build/gpu-check-probe" start flags_file cxx
  start=$(date +%s)
  command -v python3 >/dev/null || die "python3 is needed to read compile_commands.json (apt-get install python3)"
  rm -rf "$dir"
  mkdir -p "$dir"
  cat >"$dir/probe.cpp" <<'EOF'
// Written by scripts/gpu-check.sh --dry-run: every carried library, through qlt_tests' flags.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <openssl/evp.h>
#include <pcre2.h>
#include <sentencepiece_processor.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <catch2/catch.hpp>
#include <gloo/rendezvous/store.h>
#include <nlohmann/json.hpp>

int main() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest("abc", 3, md, &n, EVP_sha1(), nullptr);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>("a+"), PCRE2_ZERO_TERMINATED, 0, &err, &off, nullptr);
  pcre2_code_free(re);
  sentencepiece::SentencePieceProcessor sp;
  CLI::App app{"probe"};
  const nlohmann::json j = {{"sha1_bytes", n}};
  spdlog::info("{} {}", fmt::format("probe: {}", j.dump()), sp.GetPieceSize());
  return n == 20 ? 0 : 1;
}
EOF
  # The include flags, definitions and standard of a real target, without its PCH and output.
  flags_file="$dir/flags"
  python3 - "$build/compile_commands.json" "$flags_file" <<'EOF' || die "no compile command of qlt_tests in $build/compile_commands.json"
import json, shlex, sys
entries = [e for e in json.load(open(sys.argv[1])) if "/qlt_tests.dir/" in e.get("output", e["command"])]
args = shlex.split(entries[0]["command"])
keep, skip = [], False
for a in args[1:]:
    if skip:
        skip = False
    elif a in ("-o", "-c", "-MF", "-MT", "-include", "-x"):
        skip = True
    elif a.startswith(("-I", "-isystem", "-D", "-std=", "-idirafter")) or (keep and keep[-1] in ("-isystem", "-idirafter")):
        keep.append(a)
with open(sys.argv[2], "w") as f:
    f.write("\n".join([args[0]] + keep) + "\n")
EOF
  local flags=()
  mapfile -t flags <"$flags_file"
  cxx=${flags[0]}
  if [[ $(basename "$cxx") == ccache ]]; then flags=("${flags[@]:1}"); fi
  if ! "${flags[@]}" -O0 -MD -MF "$dir/probe.d" "$dir/probe.cpp" -o "$dir/probe" \
    "$libdir/libspdlog.so" "$libdir/libfmt.so" "$libdir/libsentencepiece.so" \
    "$libdir/libpcre2-8.so" "$libdir/libcrypto.so" "-Wl,-rpath,$libdir" >"$dir/log" 2>&1; then
    show_tail "$dir/log" 30
    die "the probe did not compile or link against the carried packages (above)"
  fi
  local header path bad=()
  for header in openssl/evp.h openssl/configuration.h pcre2.h sentencepiece_processor.h \
    spdlog/spdlog.h fmt/core.h CLI/CLI.hpp catch2/catch.hpp nlohmann/json.hpp \
    gloo/rendezvous/store.h; do
    path=$(tr -s '[:space:]' '\n' <"$dir/probe.d" | grep -m 1 "/$header\$" || true)
    [[ $path == "$prefix"/* ]] || bad+=("$header -> ${path:-<not included>}")
  done
  local lib
  while read -r lib path; do
    [[ $path == "$prefix"/* ]] || bad+=("$lib -> $path")
  done < <(ldd "$dir/probe" | awk '/lib(spdlog|fmt|sentencepiece|pcre2-8|crypto)\.so/ { print $1, $3 }')
  if ((${#bad[@]})); then
    printf '  %s\n' "${bad[@]}" >&2
    die "headers or libraries of the probe come from outside the carried prefix (above)"
  fi
  "$dir/probe" >"$dir/run.log" 2>&1 || {
    show_tail "$dir/run.log" 10
    die "the probe linked against the carried libraries does not run (above)"
  }
  log "probe: 10 headers and 5 libraries resolve into ${prefix#"$repo"/}; compiled with qlt_tests' flags, linked, ran ($(elapsed "$start"))"
}

# ---- GPU machine -------------------------------------------------------------------------------

gpu_preflight() {  # sets device, torch_version, torch_cuda, torch_dir
  command -v nvidia-smi >/dev/null || die "nvidia-smi is missing: this is not the GPU machine (use --dry-run elsewhere)"
  device=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 1) ||
    die "nvidia-smi sees no GPU ($device): run on the GPU machine, or use --dry-run"
  local info
  command -v python3 >/dev/null || die "python3 is missing: the GPU machine's LibTorch is its python torch package"
  info=$(python3 -c 'import os, torch
print("QLT", torch.__version__, torch.version.cuda or "none", torch.cuda.is_available(), os.path.dirname(torch.__file__), sep="\t")' 2>&1) ||
    die "python3 cannot import torch: $info"
  IFS=$'\t' read -r _ torch_version torch_cuda torch_sees_gpu torch_dir < <(grep '^QLT'$'\t' <<<"$info") ||
    die "unexpected answer from python3's torch: $info"
  [[ $torch_version == "$TORCH_SERIES".* ]] ||
    die "python3's torch is $torch_version, the project needs $TORCH_SERIES (DESIGN.md §6: one LibTorch version everywhere)"
  [[ $torch_cuda != none ]] || die "python3's torch $torch_version is a CPU build (torch.version.cuda is None); the check needs a CUDA build"
  [[ -f $torch_dir/lib/libtorch_cuda.so ]] || die "$torch_dir/lib has no libtorch_cuda.so"
  [[ $torch_sees_gpu == True ]] || log "warning: torch.cuda.is_available() is False although nvidia-smi sees $device"
  log "GPU: $device; torch $torch_version (CUDA $torch_cuda) at $torch_dir"
}

smollm2_tests() {  # the ctest names of the tests tagged [smollm2] (the binary lists them)
  local out rc=0
  out=$("${test_env[@]}" "$build/tests/qlt_tests" --list-test-names-only '[smollm2]' 2>&1) || rc=$?
  # Catch2 2 returns the number of tests listed; 126+ is a binary that did not start.
  ((rc < 126)) || die "qlt_tests does not start: $out"
  grep -v '^$' <<<"$out" || true
}

# shellcheck disable=SC2001  # a character class, which ${var//} cannot replace with a reference
regex_escape() { sed 's/[][\.^$|()*+?{}]/\\&/g' <<<"$1"; }

summarize() {  # summarize JUNIT: counts, failing tests with the end of their output, partial skips
  python3 - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = root.iter("testcase")
passed, failed, skipped, partly = [], [], [], []
for c in cases:
    name, status = c.get("name"), c.get("status")
    out = (c.findtext("system-out") or "")
    if c.find("failure") is not None or status == "fail":
        failed.append((name, out))
    elif c.find("skipped") is not None or status in ("notrun", "disabled"):
        skipped.append(name)
    else:
        passed.append(name)
        notes = [l.strip() for l in out.splitlines() if "SKIPPED" in l or "skipped:" in l]
        if notes:
            partly.append((name, notes[0]))
        if name == "qlt_gpu_tests":
            summary = [l for l in out.splitlines() if "test cases" in l or "All tests passed" in l]
            print(f"[gpu-check] tests/gpu: {summary[-1].strip() if summary else 'passed'}")
print(f"[gpu-check] ctest: {len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped by ctest")
for name, note in partly:
    print(f"[gpu-check]   partly skipped: {name} ({note})")
for name in skipped:
    print(f"[gpu-check]   skipped by ctest: {name}")
for name, out in failed:
    tail = out.strip().splitlines()[-25:]
    print(f"[gpu-check]   FAILED: {name}")
    for l in tail:
        print(f"      {l}")
if failed:
    print("[gpu-check] failing tests: " + "; ".join(n for n, _ in failed))
EOF
}

copy_out() {  # the logs and the JUnit file into QLT_GPU_CHECK_OUT, when set
  [[ -n ${QLT_GPU_CHECK_OUT:-} ]] || return 0
  mkdir -p "$QLT_GPU_CHECK_OUT"
  local f
  for f in "$build"/gpu-check-*.log "$build/gpu-check-junit.xml"; do
    [[ -f $f ]] && cp "$f" "$QLT_GPU_CHECK_OUT/"
  done
  return 0
}

run_gpu_check() {
  local t0 start nvcc site link_dirs d args=()
  t0=$(date +%s)
  [[ $(uname -m) == x86_64 ]] || die "this machine is $(uname -m); the carried packages are x86-64"
  gpu_preflight
  site=$(dirname "$torch_dir")
  nvcc=$(find_nvcc "$site") || die "no nvcc (PATH, /usr/local/cuda/bin, $site/nvidia/cu13/bin): the CUDA build needs the CUDA compiler"
  command -v cmake >/dev/null || die "cmake is missing (pip install cmake, or the image's)"
  command -v ninja >/dev/null || die "ninja is missing (pip install ninja, or the image's)"
  log "tools: $(cmake --version | head -n 1), ninja $(ninja --version), nvcc $("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') ($nvcc), $(c++ --version | head -n 1)"
  unpack_debs
  make_torch_prefix "$torch_dir"
  # Where the linker finds libtorch_cuda.so's own CUDA libraries (its RPATH says $ORIGIN/../../nvidia).
  link_dirs=""
  for d in "$site"/nvidia/*/lib; do [[ -d $d ]] && link_dirs+="${link_dirs:+:}$d"; done
  # NCCL's header, for the nccl backend of data-parallel training (src/dist/data_parallel.cpp
  # compiles it in when <nccl.h> is found): the toolkit may lack it, torch's nvidia-nccl has it.
  if [[ -f $site/nvidia/nccl/include/nccl.h ]]; then
    export CPATH="$site/nvidia/nccl/include${CPATH:+:$CPATH}"
  fi
  mapfile -t args < <(cmake_args ON "$nvcc" "$link_dirs")
  log "configure: $(quoted "${args[@]}")"
  configure "${args[@]}"
  verify_carried_resolution

  start=$(date +%s)
  log "build: cmake --build ${build#"$repo"/} -j $jobs"
  if ! cmake --build "$build" -j "$jobs" >"$build/gpu-check-build.log" 2>&1; then
    show_tail "$build/gpu-check-build.log" 60
    copy_out
    die "the build failed (above; whole log: $build/gpu-check-build.log)"
  fi
  build_time=$(elapsed "$start")
  log "built in $build_time"

  test_env=(env -u CI "LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
  local missing
  missing=$("${test_env[@]}" ldd "$build/qlora-train" "$build/tests/qlt_tests" "$build/tests/gpu/qlt_gpu_tests" 2>&1 |
    grep 'not found' | sort -u || true)
  [[ -z $missing ]] || log "warning: the dynamic loader does not find some libraries of the binaries (the tests that load them will fail):"$'\n'"$missing"

  local exclude=() names=() name regex=""
  if [[ ! -f $repo/$SMOLLM2_GGUF ]]; then
    mapfile -t names < <(smollm2_tests)
    for name in "${names[@]}"; do regex+="${regex:+|}^$(regex_escape "$name")\$"; done
    if [[ -n $regex ]]; then exclude=(-E "$regex"); fi
  fi
  start=$(date +%s)
  # --timeout: a hanging test fails alone, and the summary still comes within the device call.
  local ctest_cmd=(ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 300
    --output-junit "$build/gpu-check-junit.xml")
  log "tests: $(quoted "${test_env[@]}" "${ctest_cmd[@]}")${regex:+-E <the ${#names[@]} [smollm2] tests, by name>} (the whole suite, label gpu included)"
  ctest_cmd+=("${exclude[@]}")
  local rc=0
  "${test_env[@]}" "${ctest_cmd[@]}" >"$build/gpu-check-ctest.log" 2>&1 || rc=$?
  test_time=$(elapsed "$start")
  copy_out

  echo
  log "==== summary"
  log "device: $device"
  log "torch: $torch_version (CUDA $torch_cuda), LibTorch from $torch_dir"
  log "time: configure $configure_time, build $build_time (-j $jobs), tests $test_time, all $(elapsed "$t0")"
  if ((${#names[@]})); then
    log "skipped: ${#names[@]} tests need the real SmolLM2 model ($SMOLLM2_GGUF: 98 MB, over the device tool's 64 MiB carry, and the GPU machine has no network to fetch it):"
    printf '[gpu-check]   - %s\n' "${names[@]}"
  fi
  if [[ ! -f $build/gpu-check-junit.xml ]]; then
    show_tail "$build/gpu-check-ctest.log" 40
    die "ctest wrote no results (exit $rc; above)"
  fi
  summarize "$build/gpu-check-junit.xml"
  if ((rc != 0)); then
    log "RESULT: FAILED (ctest exit $rc; log $build/gpu-check-ctest.log)"
    exit 1
  fi
  log "RESULT: all run tests passed"
}

# ---- dry run -----------------------------------------------------------------------------------

run_dry() {
  local t0 nvcc="" cuda=OFF args=()
  t0=$(date +%s)
  log "dry run: everything up to the point a GPU is needed (no GPU, no python torch used)"
  prepare
  unpack_debs
  [[ -f $repo/third_party/libtorch/lib/libtorch_cpu.so ]] ||
    die "third_party/libtorch is missing: run scripts/setup.sh first (the dry run uses it in place of the GPU machine's python torch)"
  log "LibTorch: third_party/libtorch stands in for the GPU machine's python torch package"
  make_torch_prefix "$repo/third_party/libtorch"
  if nvcc=$(find_nvcc) && [[ -f $repo/third_party/libtorch/lib/libtorch_cuda.so ]]; then
    cuda=ON
  else
    nvcc=""
    log "no nvcc or no CUDA LibTorch here: configuring with -DQLT_CUDA=OFF (the GPU machine uses ON)"
  fi
  mapfile -t args < <(cmake_args "$cuda" "$nvcc")
  log "configure: $(quoted "${args[@]}")"
  configure "${args[@]}"
  verify_carried_resolution
  probe_carried_headers_and_libs
  log "the GPU machine would now run (after checking nvidia-smi and python3's torch $TORCH_SERIES + CUDA):"
  log "  the configure above with -DQLT_CUDA=ON, QLT_LIBTORCH_DIR made from the torch package, -rpath-link to its nvidia/*/lib, into build-gpu/"
  log "  cmake --build build-gpu -j <all cores>"
  log "  env -u CI LD_LIBRARY_PATH=${libdir#"$repo"/} ctest --test-dir build-gpu --output-on-failure -j <all cores> --timeout 300 --output-junit build-gpu/gpu-check-junit.xml [-E <the [smollm2] tests when $SMOLLM2_GGUF is absent>]"
  log "dry run passed ($(elapsed "$t0"))"
}

case $mode in
  prepare)
    prepare
    print_run_call
    ;;
  dry) run_dry ;;
  gpu) run_gpu_check ;;
esac
