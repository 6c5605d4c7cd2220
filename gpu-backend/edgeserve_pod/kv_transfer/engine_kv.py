"""Moving KV blocks out of and into an engine's paged cache. Runs on the engine thread.

Export reads the prompt's full blocks from the sender's prefix cache (where the prefill just put
them). Import writes received blocks into free pages of the receiver and names them in its
prefix cache under the same hashes, unreferenced (evictable): the request that follows is then
admitted like any prefix-cache hit and computes only the prompt's tail. Greedy output therefore
equals the colocated run's, and `cached_tokens` counts the transferred tokens.

What a backend keeps per block beside the cache (the sparse backend's Quest key min/max and
block generation) is not sent: after the copy, import calls the backend's
`rebuild_block_state` for every layer with the written block ids, which recomputes it from the
imported keys. For float caches that equals what the sender's KV write kept (min/max commute
with the rounding to the cache dtype). FP8 caches are refused (`_check_engine`: scales are per
pod); were they allowed, the receiver's bound would come from the dequantized keys it attends
over, not from the unquantized keys the sender's write saw, so the two would differ by the e4m3
rounding (up to 1/16 relative) and the page ranking could differ.

It uses the block manager's internals (`_take`, `_acquire`, `cache`): this is the one place
outside the engine that does, and the alternative was a new public method on BlockManager.
"""

from __future__ import annotations

import torch

from edgeserve_pod.block_hash import ROOT, chain_hash
from edgeserve_pod.kv_transfer.wire import KvPayload, WireError


def _check_engine(engine) -> None:
    if engine.runner.kv is None:  # streaming_kv="ring": per-layer caches of the retrieval heads + rings
        raise WireError("KV transfer is not supported with streaming_kv='ring' (streaming heads' K/V live in "
                        "per-sequence rings, not in the paged blocks)")
    if engine.runner.tp.size > 1:
        raise WireError("KV transfer with tensor parallelism is not supported (each rank holds part of the heads)")
    if engine.runner.kv_dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise WireError(f"KV transfer of {engine.runner.kv_dtype} caches is not supported (FP8 scales are per pod)")


def prompt_hashes(engine, prompt: list[int]) -> list[bytes]:
    """Hashes of the prompt blocks a later admission looks up: every full block but the one
    holding the last prompt token (at least one token is always computed)."""
    B = engine.block_size
    out, parent = [], ROOT
    for i in range((len(prompt) - 1) // B):
        parent = chain_hash(parent, engine.model_id, prompt[i * B:(i + 1) * B])
        out.append(parent)
    return out


def export_kv(engine, prompt: list[int], on_device: bool = False) -> KvPayload:
    """The cached KV of the prompt's leading full blocks (fewer if some were evicted already), as
    a fresh contiguous tensor: on the CPU (TCP), or on the cache's device (CUDA IPC)."""
    _check_engine(engine)
    hashes = prompt_hashes(engine, prompt)
    ids = engine.blocks.cache.lookup(hashes)
    kv = engine.runner.kv  # (L, 2, num_blocks + 1, B, Hkv, d)
    idx = torch.tensor(ids, dtype=torch.long, device=kv.device)
    blocks = kv.index_select(2, idx)  # (L, 2, n, B, Hkv, d), a copy
    if on_device:
        if blocks.is_cuda:
            torch.cuda.synchronize(blocks.device)  # the peer reads it from another process
    else:
        blocks = blocks.to("cpu")
    return KvPayload(engine.model_id, engine.block_size, [h.hex() for h in hashes[:len(ids)]], blocks)


def import_kv(engine, p: KvPayload, prompt: list[int] | None = None) -> int:
    """Puts the payload's blocks in the prefix cache; returns how many blocks were written
    (blocks already cached here are skipped, and the import stops when free pages run out).
    With `prompt`, the payload's hashes must be a prefix of that prompt's lookup blocks: KV named
    for another prompt would be served to every later request that shares those hashes."""
    _check_engine(engine)
    kv = engine.runner.kv
    if p.model != engine.model_id:
        raise WireError(f"KV is for model {p.model!r}; this pod serves {engine.model_id!r}")
    if p.block_size != engine.block_size:
        raise WireError(f"KV block_size {p.block_size} differs from this pod's {engine.block_size}")
    want = (kv.shape[0], 2, len(p.block_hashes), kv.shape[3], kv.shape[4], kv.shape[5])
    if tuple(p.kv.shape) != want:
        raise WireError(f"KV shape {tuple(p.kv.shape)} does not fit this pod's cache; expected {want}")
    hashes = [bytes.fromhex(h) for h in p.block_hashes]
    if prompt is not None:
        mine = prompt_hashes(engine, prompt)
        if hashes != mine[:len(hashes)]:
            bad = next((i for i, (a, b) in enumerate(zip(hashes, mine)) if a != b), len(mine))
            raise WireError(f"KV block {bad} is not block {bad} of this request's prompt "
                            f"({len(hashes)} blocks sent, the prompt has {len(mine)} to look up)")
    bm = engine.blocks
    prefix = bm.cache.lookup(hashes)
    have = len(prefix)
    if have == len(hashes):
        return 0
    # Hold the cached prefix the import chains onto while pages are taken: an evictable prefix
    # block would otherwise be a candidate victim of _take(), leaving the import unreachable.
    for b in prefix:
        bm._acquire(b)
    ids: list[int] = []
    try:
        # Keep the scheduler's watermark free so that running decodes do not preempt for an import.
        room = max(0, bm.num_free_blocks - engine.scheduler.watermark)
        n = min(len(hashes) - have, room)
        if n <= 0:
            return 0
        ids = [bm._take() for _ in range(n)]
        idx = torch.tensor(ids, dtype=torch.long, device=kv.device)
        kv.index_copy_(2, idx, p.kv[:, :, have:have + n].to(kv.device, kv.dtype))
        runner = engine.runner
        for layer, ((k_cache, v_cache), state) in enumerate(zip(runner.kv_caches, runner.states)):
            runner.attn.rebuild_block_state(layer, k_cache, v_cache, state, idx)
        bm.cache.register(ids, hashes[have:have + n], hashes[have - 1] if have else None, hashes[0])
        return n
    finally:
        # Unreferenced and named: reusable by admit(), evictable under pressure (pages of a failed
        # copy are not named: they go back to the free list)
        bm.release(prefix + ids)
