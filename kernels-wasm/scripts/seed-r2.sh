#!/usr/bin/env bash
# Puts what the WASM runtime and the edge tokenizer need into the LOCAL R2 bucket of
# `wrangler dev` (bucket: the MODELS binding in the root wrangler.toml):
#   models/smollm2-135m-instruct-q4_1.gguf    the weights (from scripts/fetch-models.sh)
#   tokenizers/smollm2-135m-instruct.json     Tokenizer JSON exported from the GGUF
# Idempotent: an object already there with the same bytes is skipped.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
wrangler=(node_modules/.bin/wrangler)

bucket=$(awk '/^\[\[r2_buckets\]\]/{inb=1; b=""; n=""; next} /^\[/{inb=0}
  inb && /^binding *=/{gsub(/.*= *"|".*/,""); b=$0}
  inb && /^bucket_name *=/{gsub(/.*= *"|".*/,""); n=$0}
  inb && b=="MODELS" && n!=""{print n; exit}' wrangler.toml)
[ -n "$bucket" ] || { echo "seed-r2: no R2 bucket with binding MODELS in wrangler.toml" >&2; exit 1; }

gguf=models/smollm2-135m-instruct-q4_1.gguf
[ -s "$gguf" ] || ./scripts/fetch-models.sh
tok=.cache/tokenizers/smollm2-135m-instruct.json
node kernels-wasm/scripts/export-tokenizer.mjs "$gguf" "$tok" >/dev/null

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
put() { # put KEY FILE
  local key=$1 file=$2
  if "${wrangler[@]}" r2 object get "$bucket/$key" --local --file "$tmp" >/dev/null 2>&1 && cmp -s "$tmp" "$file"; then
    echo "seed-r2: $bucket/$key is up to date"
    return
  fi
  "${wrangler[@]}" r2 object put "$bucket/$key" --local --file "$file" >/dev/null
  echo "seed-r2: put $bucket/$key ($(du -h "$file" | cut -f1))"
}
put models/smollm2-135m-instruct-q4_1.gguf "$gguf"
put tokenizers/smollm2-135m-instruct.json "$tok"
