"""Writes shared/vectors/block-hash.json from the Python reference (run once per spec version)."""
import json
import random
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(root / "gpu-backend"))
from edgeserve_pod.block_hash import block_hashes  # noqa: E402

rng = random.Random(20261122)
cases = [
    {"name": "empty prompt", "model": "smollm2-135m-instruct", "block_size": 16, "tokens": []},
    {"name": "shorter than one block", "model": "smollm2-135m-instruct", "block_size": 16, "tokens": list(range(15))},
    {"name": "exactly one block", "model": "smollm2-135m-instruct", "block_size": 16, "tokens": list(range(16))},
    {"name": "two blocks and a tail", "model": "smollm2-135m-instruct", "block_size": 16, "tokens": list(range(100, 140))},
    {"name": "same tokens, other model", "model": "llama-3.2-1b", "block_size": 16, "tokens": list(range(100, 140))},
    {"name": "same tokens, other block size", "model": "smollm2-135m-instruct", "block_size": 8, "tokens": list(range(100, 140))},
    {"name": "large token ids", "model": "m", "block_size": 4, "tokens": [0, 1, 65535, 65536, 4294967295, 2**31, 128000, 151643]},
    {"name": "non-ascii model id", "model": "modèle-é/v1", "block_size": 4, "tokens": [5, 6, 7, 8, 9]},
    {"name": "random 300 tokens", "model": "qwen2.5-7b", "block_size": 16, "tokens": [rng.randrange(152064) for _ in range(300)]},
    {"name": "block size 1", "model": "m", "block_size": 1, "tokens": [3, 1, 4, 1, 5]},
]
for c in cases:
    c["hashes"] = block_hashes(c["model"], c["tokens"], c["block_size"])
out = {"spec": "shared/spec/block-hash.md", "version": 1, "cases": cases}
# One case per line keeps diffs readable.
body = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases)
text = '{"spec": "' + out["spec"] + '", "version": 1, "cases": [\n' + body + '\n]}\n'
(root / "shared" / "vectors" / "block-hash.json").write_text(text, encoding="utf-8")
print(f"wrote {len(cases)} cases")
