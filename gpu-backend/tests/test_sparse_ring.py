"""streaming_kv='ring' (layers/attention_sparse_ring.py): streaming heads keep a constant-size ring
per running sequence instead of K/V for every token. Both modes read the same logical pages, so
greedy tokens must equal full mode's, through chunked prefill (a later chunk reads the ring), a
ring that wraps many times, slots reused after a sequence finishes, and preemption; plus the
geometry, the memory arithmetic, admission and config refusals, and the slot allocator."""
import json
import os

import pytest
import torch

from conftest import greedy, make_engine, run_all
from edgeserve_pod.config import EngineConfig
from edgeserve_pod.engine.engine import LLMEngine
from edgeserve_pod.engine.model_runner import ModelRunner
from edgeserve_pod.layers.attention_base import OverrideError
from edgeserve_pod.layers.attention_sparse import SparseAttentionConfig
from edgeserve_pod.layers.attention_sparse_ring import RingGeometry, RingSparseAttention
from edgeserve_pod.models.arch import ModelArch
from edgeserve_pod.parallel import current_group
from edgeserve_pod.tools.random_checkpoint import SHAPES

# small sink / window / block size and prefill mask granularity, so that the ring (2 sink pages +
# 13 window pages of 8 tokens at chunk 27) wraps several times in a 300-token prompt; layer 0 has
# one streaming kv head of two, layer 1 has both (no paged cache, no Quest in that layer)
MAP = {"streaming": [[True, False], [True, True]], "sink_tokens": 8, "window_tokens": 16, "token_budget": 48,
       "prefill_block_m": 32, "prefill_block_n": 16}
PROMPTS = {f"r{i}": [(7 * i + 13 * j + 3) % 250 + 3 for j in range(n)] for i, n in enumerate([300, 170, 45, 9, 1, 120])}
MAX_TOKENS = {"r0": 30, "r1": 25, "r2": 3, "r3": 20, "r4": 12, "r5": 18}  # r2 ends early: its slot is reused


@pytest.fixture
def head_map(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps(MAP))
    return str(path)


def engine(model, path, impl="torch", **kw):
    args = dict(block_size=8, attention_backend="sparse", sparse_head_map=path, max_num_seqs=4,
                max_num_batched_tokens=27, enable_prefix_caching=False)  # chunks not aligned to the mask's blocks
    eng = make_engine(model, **{**args, **kw})
    eng.runner.attn.impl = impl
    return eng


def serve(eng, prompts=PROMPTS, max_tokens=MAX_TOKENS):
    for rid, p in prompts.items():
        eng.add_request(rid, p, greedy(max_tokens[rid]))
    out = run_all(eng)
    return {rid: out[rid] for rid in prompts}


def test_ring_equals_full_mode(tiny_model, head_map):
    full = serve(engine(tiny_model, head_map))
    eng = engine(tiny_model, head_map, streaming_kv="ring")
    assert serve(eng) == full
    assert eng.runner.kv is None and eng.runner.attn.geo.window_pages == 13  # the ring is in use, and small
    assert eng.scheduler.ring_slots.num_free == 4  # six requests through four slots, all given back


def test_ring_equals_full_mode_under_preemption(tiny_model, head_map):
    prompts = {k: PROMPTS[k] for k in ("r0", "r1", "r5")}
    kw = dict(kv_cache_blocks=50)  # 400 tokens: the three cannot all run, someone is preempted and recomputed
    full_eng = engine(tiny_model, head_map, **kw)
    full = serve(full_eng, prompts)
    eng = engine(tiny_model, head_map, streaming_kv="ring", **kw)
    assert serve(eng, prompts) == full
    assert eng.scheduler.num_preemptions > 0 and eng.scheduler.num_preemptions == full_eng.scheduler.num_preemptions
    assert eng.scheduler.ring_slots.num_free == 4


def test_ring_triton_kernels(tiny_model, head_map):
    """The decode / prefill kernels read the ring through the virtual block table, a later chunk
    included. CPU: the Triton interpreter. GPU: natively, with the decode CUDA graphs (ring slots as
    static inputs) and multi-step greedy replay."""
    prompts = {"r1": PROMPTS["r1"][:90], "r3": PROMPTS["r3"]}
    max_tokens = {"r1": 4, "r3": 6}
    gpu = dict(device="cuda", dtype="float32") if torch.cuda.is_available() else {}
    if gpu:
        max_tokens = {"r1": 24, "r3": 30}
    full = serve(engine(tiny_model, head_map, impl="triton", **gpu), prompts, max_tokens)
    eng = engine(tiny_model, head_map, impl="triton", streaming_kv="ring", **gpu)
    assert serve(eng, prompts, max_tokens) == full
    assert (eng.runner.graphs is not None) == bool(gpu)


def _stream_lo(p, sink_end, window, bm, bn):  # paged_attention.StreamingMask's lo(p)
    return max(max(p // bm * bm - window, 0) // bn * bn, sink_end)


@pytest.mark.parametrize("sink,window,bm,bn,bs,chunk", [(8, 16, 32, 16, 8, 27), (4, 40, 64, 16, 16, 33),
                                                        (0, 24, 16, 16, 8, 8), (128, 200, 128, 64, 16, 100)])
def test_ring_geometry_keeps_every_page_a_step_reads(sink, window, bm, bn, bs, chunk):
    """For every chunk start p0 and length c <= chunk, the pages that chunk reads (sink pages, and
    from its first query's window start to its last token) map to distinct ring pages; so do a
    decode's sink + window pages. Then no page a step reads was overwritten by a newer one."""
    g = RingGeometry.for_config(sink, window, bm, bn, bs, chunk, slots=2)
    vt = g.virtual_tables(torch.tensor([1], dtype=torch.int32), 4096 // bs)[0].tolist()
    assert min(vt) >= g.pages_per_slot and max(vt) < 2 * g.pages_per_slot  # slot 1's own pages
    sink_end = -(-sink // bn) * bn
    sink_pages = list(range(-(-sink_end // bs)))
    for p0 in range(0, 1500):
        for c in range(1, chunk + 1):
            lo = _stream_lo(p0, sink_end, window, bm, bn)
            pages = sink_pages + list(range(lo // bs, (p0 + c - 1) // bs + 1))
            pages = sorted(set(pages))
            assert len({vt[j] for j in pages}) == len(pages), (p0, c)
        ctx = p0 + 1  # decode: sink pages, then the pages of the last `window` tokens
        first = max((ctx - window) // bs, -(-sink // bs))
        pages = sorted(set(range(-(-sink // bs))) | set(range(first, (ctx - 1) // bs + 1)))
        assert len({vt[j] for j in pages}) == len(pages), ctx


def test_ring_memory_arithmetic_8b(tmp_path):
    """8B shape, half the kv heads streaming, bf16: a block costs half, so the same memory holds
    about twice the blocks after the rings; the rings do not grow with max_model_len."""
    (tmp_path / "config.json").write_text(json.dumps(SHAPES["llama-3.1-8b"]))
    arch = ModelArch.from_folder(str(tmp_path))
    half = [[h % 2 == 0 for h in range(8)] for _ in range(32)]
    cfg = SparseAttentionConfig(streaming=half, sink_tokens=128, window_tokens=4096)

    def runner(ring: bool) -> ModelRunner:
        r = ModelRunner.__new__(ModelRunner)  # the arithmetic only: no weights, no device
        r.arch, r.block_size, r.kv_dtype, r.tp, r.ring = arch, 16, torch.bfloat16, current_group(1), ring
        r.attn = RingSparseAttention(32, 8, 128, kv_dtype=torch.bfloat16, config=cfg, num_layers=32, block_size=16,
                                     ring_slots=8, ring_chunk=2048)
        return r

    full, ring = runner(False), runner(True)
    assert full.block_bytes() == 32 * 2 * 16 * 8 * 128 * 2 and ring.block_bytes() == full.block_bytes() // 2
    geo = ring.attn.geo
    assert (geo.sink_pages, geo.window_pages) == (8, (4096 + 2048 + 128 + 64) // 16 + 2)
    assert ring.ring_bytes() == 2 * 9 * geo.pages_per_slot * 16 * (32 * 4) * 128 * 2  # 8 slots + scratch
    budget = 60 * 2**30
    assert full.blocks_for_budget(budget) == budget // full.block_bytes()
    assert ring.blocks_for_budget(budget) == (budget - ring.ring_bytes()) // ring.block_bytes()
    assert ring.blocks_for_budget(budget) > 1.8 * full.blocks_for_budget(budget)


def test_ring_size_does_not_depend_on_max_model_len(tiny_model, head_map):
    a = engine(tiny_model, head_map, streaming_kv="ring", max_model_len=256)
    b = engine(tiny_model, head_map, streaming_kv="ring", max_model_len=1024)
    assert a.runner.ring_bytes() == b.runner.ring_bytes() > 0
    assert [st["ring_k"].shape for st in a.runner.states] == [st["ring_k"].shape for st in b.runner.states]
    full = engine(tiny_model, head_map)
    assert a.runner.block_bytes() * 4 == full.runner.block_bytes()  # 1 of 4 kv head-layers is a retrieval head


def test_ring_admission_refuses_what_the_ring_lost(tiny_model, head_map):
    eng = engine(tiny_model, head_map, streaming_kv="ring")
    for bad, param in (({"sparse": False}, "attention.sparse"), ({"window_tokens": 17}, "attention.window_tokens"),
                       ({"sink_tokens": 9}, "attention.sink_tokens")):
        with pytest.raises(OverrideError) as e:
            eng.add_request("x", [5, 6, 7], greedy(2), attention=bad)
        assert e.value.param == param
    # smaller sink / window read a subset of the ring: served
    eng.add_request("ok", PROMPTS["r0"][:60], greedy(3), attention={"sink_tokens": 4, "window_tokens": 8})
    assert len(run_all(eng)["ok"]) == 3


def test_ring_config_refusals(tiny_model, head_map, tmp_path, capsys):
    base = dict(model=tiny_model, attention_backend="sparse", sparse_head_map=head_map, streaming_kv="ring")
    with pytest.raises(ValueError, match="one rank"):
        EngineConfig(**{**base, "tensor_parallel_size": 2})
    with pytest.raises(ValueError, match="needs attention_backend='sparse'"):
        EngineConfig(**{**base, "attention_backend": "torch", "sparse_head_map": None})
    with pytest.raises(ValueError, match="streaming_kv must be"):
        EngineConfig(**{**base, "streaming_kv": "rings"})
    assert EngineConfig(**base).enable_prefix_caching is False
    no_stream = tmp_path / "none.json"
    no_stream.write_text(json.dumps({**MAP, "streaming": [[False, False], [False, False]]}))
    with pytest.raises(ValueError, match="at least one streaming head"):
        LLMEngine(EngineConfig(**{**base, "sparse_head_map": str(no_stream)}))
    from edgeserve_pod.server.cli import configs

    with pytest.raises(SystemExit):  # KV transfer roles: the CLI refuses (argparse error, exit 2)
        configs(["--model", tiny_model, "--attention-backend", "sparse", "--sparse-head-map", head_map,
                 "--streaming-kv", "ring", "--role", "prefill"])
    assert "cannot serve role 'prefill'" in capsys.readouterr().err


def test_ring_kv_transfer_refused(tiny_model, head_map):
    from edgeserve_pod.kv_transfer.engine_kv import export_kv
    from edgeserve_pod.kv_transfer.wire import WireError

    eng = engine(tiny_model, head_map, streaming_kv="ring")
    with pytest.raises(WireError, match="streaming_kv='ring'"):
        export_kv(eng, PROMPTS["r0"][:40])


def test_ring_slots_come_back_after_finish_abort_and_preempt(tiny_model, head_map):
    eng = engine(tiny_model, head_map, streaming_kv="ring", kv_cache_blocks=50)
    slots = eng.scheduler.ring_slots
    for rid in ("a", "b", "c", "d"):  # 4 x 190 tokens in a 400-token cache: preemptions
        eng.add_request(rid, PROMPTS["r0"][:150], greedy(40))

    def check():
        running = eng.scheduler.running
        assert slots.num_free == 4 - len(running)
        assert len({s.ring_slot for s in running}) == len(running) and None not in {s.ring_slot for s in running}
        assert all(s.ring_slot is None for s in eng.scheduler.waiting)

    for _ in range(500):
        eng.step()
        check()
        if eng.scheduler.num_preemptions:
            break
    assert eng.scheduler.num_preemptions > 0
    eng.abort_request(eng.scheduler.running[0].request_id)
    eng.abort_request(eng.scheduler.waiting[0].request_id)
    check()
    out = run_all(eng)
    assert slots.num_free == 4 and sum(len(v) == 40 for k, v in out.items() if isinstance(k, str)) >= 1


def test_ring_decode_graph_body_with_padding_and_multi_step(tiny_model, head_map):
    """The decode graphs' static inputs carry the ring slots (padded rows: the scratch slot) and the
    greedy advance grows the contexts with the slots fixed: the graph body, run eagerly on CPU for
    k steps of a 3-row batch padded to 4, gives the tokens of eager serving."""
    from edgeserve_pod.engine.cuda_graphs import DecodeGraphs, pick
    from edgeserve_pod.engine.step_inputs import build_step_inputs

    prompts = {k: PROMPTS[k] for k in ("r0", "r1", "r5")}
    k, n = 8, 30
    want = serve(engine(tiny_model, head_map, streaming_kv="ring"), prompts, {r: n for r in prompts})
    eng = engine(tiny_model, head_map, streaming_kv="ring")
    for rid, p in prompts.items():
        eng.add_request(rid, p, greedy(n))
    for _ in range(100):  # until all three decode (r0's 300-token prompt takes the longest)
        eng.step()
        if len(eng.scheduler.running) == 3 and all(s.num_uncomputed == 1 for s in eng.scheduler.running):
            break
    batch = eng.scheduler.schedule()
    assert batch.num_prefill_seqs == 0 and len(batch.items) == 3
    for seq, _ in batch.items:
        assert eng.blocks.grow(seq, len(seq) + k - 1)
    inp, _ = build_step_inputs(batch, 8)
    ru = eng.runner
    g = DecodeGraphs(ru.model, ru.kv_caches, ru.states, 4, ru.max_blocks_per_seq, ru.num_blocks, 8, ru.device,
                     width_buckets=True, scratch_ring_slot=ru.scratch_ring_slot)
    key = (pick(g.bs_buckets, 3), pick(g.w_buckets, inp.decode_block_tables.shape[1]))
    assert key[0] == 4  # one padded row, on the scratch ring slot
    g.graphs[key] = None  # no capture on CPU: the body runs eagerly below
    g.stage(inp)
    assert g.dev[5 * 4:6 * 4].tolist() == inp.seq_slots.tolist() + [ru.scratch_ring_slot]
    with torch.inference_mode():
        for _ in range(k):
            g._body(*key)
    got = g.ring[:3, :k].tolist()
    done = {seq.request_id: seq.num_output_tokens for seq, _ in batch.items}
    assert min(done.values()) >= 1 and max(done.values()) + k <= n
    assert {seq.request_id: got[i] for i, (seq, _) in enumerate(batch.items)} == \
        {r: want[r][done[r]:done[r] + k] for r in prompts}


def test_ring_equals_full_mode_fp8(tiny_model, head_map):
    """FP8 KV: the rings get their per-head scales from the same calibration tokens as full mode."""
    prompts = {k: PROMPTS[k] for k in ("r0", "r3", "r5")}
    full = serve(engine(tiny_model, head_map, kv_dtype="fp8"), prompts)
    eng = engine(tiny_model, head_map, kv_dtype="fp8", streaming_kv="ring")
    assert serve(eng, prompts) == full
    assert all(float(st["ring_k_scale"].min()) > 0 for st in eng.runner.states)


def test_ring_equals_full_mode_with_quest_reselection(tiny_model, tmp_path):
    """Quest keeps page lists for 4 steps (LServe): its per-layer state is the retrieval heads' only."""
    path = tmp_path / "map4.json"
    path.write_text(json.dumps({**MAP, "streaming": [[True, False], [False, True]], "reselect_every": 4}))
    prompts = {k: PROMPTS[k] for k in ("r0", "r1", "r4")}
    full = serve(engine(tiny_model, str(path)), prompts)
    assert serve(engine(tiny_model, str(path), streaming_kv="ring"), prompts) == full
