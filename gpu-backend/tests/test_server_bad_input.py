"""Bad protocol input never crashes the pod: a corpus of bad requests, each answered with the
right status and an ErrorRecord (param = JSON path), while a real stream runs beside them; the
pod serves normally afterwards."""

from __future__ import annotations

import asyncio
import json

import pytest

from edgeserve_pod import protocol
from _server_util import MODEL_ID, gen_body, health, pod, read_stream, real_engine_factory, tokens_of, write_tiny

G = gen_body("bad")
J = {"Content-Type": "application/json"}


def body(**over):
    b = dict(G)
    for k, v in over.items():
        if v is ...:
            b.pop(k)
        else:
            b[k] = v
    return json.dumps(b).encode()


def raw(s: str) -> bytes:
    return s.encode()


# (name, method, path, data, headers, status, code, param); param ... = don't check
CASES = [
    # not JSON at all
    ("truncated", "POST", "/v1/generate", b'{"request_id":', J, 400, "invalid_request", None),
    ("open brace", "POST", "/v1/generate", b"{", J, 400, "invalid_request", None),
    ("trailing garbage", "POST", "/v1/generate", body() + b" x", J, 400, "invalid_request", None),
    ("empty body", "POST", "/v1/generate", b"", J, 400, "invalid_request", None),
    ("NaN", "POST", "/v1/generate", raw('{"request_id":"r","model":"m","prompt_token_ids":[NaN],"max_tokens":1}'), J, 400, "invalid_request", None),
    ("5000-digit integer", "POST", "/v1/generate", raw('{"request_id":"r","model":"m","prompt_token_ids":[' + "9" * 5000 + '],"max_tokens":1}'), J, 400, "invalid_request", None),
    ("deep nesting", "POST", "/v1/generate", b"[" * 50000 + b"]" * 50000, J, 400, "invalid_request", None),
    ("single quotes", "POST", "/v1/generate", raw("{'request_id': 'r'}"), J, 400, "invalid_request", None),
    # bytes that are not UTF-8
    ("latin-1 byte in string", "POST", "/v1/generate", b'{"request_id":"r","model":"caf\xe9","prompt_token_ids":[1],"max_tokens":1}', J, 400, "invalid_request", None),
    ("lone 0xff", "POST", "/v1/generate", b"\xff", J, 400, "invalid_request", None),
    ("utf-16 with BOM", "POST", "/v1/generate", "\ufeff{}".encode("utf-16"), J, 400, "invalid_request", None),
    ("overlong utf-8", "POST", "/v1/generate", b'{"request_id":"\xc0\xaf"}', J, 400, "invalid_request", None),
    # JSON, wrong shape
    ("array body", "POST", "/v1/generate", b"[]", J, 400, "invalid_request", None),
    ("string body", "POST", "/v1/generate", b'"hello"', J, 400, "invalid_request", None),
    ("null body", "POST", "/v1/generate", b"null", J, 400, "invalid_request", None),
    ("number body", "POST", "/v1/generate", b"42", J, 400, "invalid_request", None),
    ("missing request_id", "POST", "/v1/generate", body(request_id=...), J, 400, "invalid_request", "request_id"),
    ("missing model", "POST", "/v1/generate", body(model=...), J, 400, "invalid_request", "model"),
    ("missing prompt", "POST", "/v1/generate", body(prompt_token_ids=...), J, 400, "invalid_request", "prompt_token_ids"),
    ("missing max_tokens", "POST", "/v1/generate", body(max_tokens=...), J, 400, "invalid_request", "max_tokens"),
    ("unknown field", "POST", "/v1/generate", body(prompt="hi"), J, 400, "invalid_request", "prompt"),
    ("request_id number", "POST", "/v1/generate", body(request_id=5), J, 400, "invalid_request", "request_id"),
    ("request_id spaces", "POST", "/v1/generate", body(request_id="a b"), J, 400, "invalid_request", "request_id"),
    ("request_id too long", "POST", "/v1/generate", body(request_id="r" * 129), J, 400, "invalid_request", "request_id"),
    ("request_id empty", "POST", "/v1/generate", body(request_id=""), J, 400, "invalid_request", "request_id"),
    ("model list", "POST", "/v1/generate", body(model=[MODEL_ID]), J, 400, "invalid_request", "model"),
    ("prompt string", "POST", "/v1/generate", body(prompt_token_ids="1 2 3"), J, 400, "invalid_request", "prompt_token_ids"),
    ("prompt empty", "POST", "/v1/generate", body(prompt_token_ids=[]), J, 400, "invalid_request", "prompt_token_ids"),
    ("prompt string items", "POST", "/v1/generate", body(prompt_token_ids=[1, "2"]), J, 400, "invalid_request", "prompt_token_ids[1]"),
    ("prompt negative", "POST", "/v1/generate", body(prompt_token_ids=[1, 2, -3]), J, 400, "invalid_request", "prompt_token_ids[2]"),
    ("prompt float", "POST", "/v1/generate", body(prompt_token_ids=[1.5]), J, 400, "invalid_request", "prompt_token_ids[0]"),
    ("prompt bool", "POST", "/v1/generate", body(prompt_token_ids=[True]), J, 400, "invalid_request", "prompt_token_ids[0]"),
    ("prompt null item", "POST", "/v1/generate", body(prompt_token_ids=[None]), J, 400, "invalid_request", "prompt_token_ids[0]"),
    ("prompt nested", "POST", "/v1/generate", body(prompt_token_ids=[[1]]), J, 400, "invalid_request", "prompt_token_ids[0]"),
    ("prompt 2^32", "POST", "/v1/generate", body(prompt_token_ids=[2**32]), J, 400, "invalid_request", "prompt_token_ids[0]"),
    ("prompt 1e400", "POST", "/v1/generate", raw('{"request_id":"r","model":"m","prompt_token_ids":[1e400],"max_tokens":1}'), J, 400, "invalid_request", "prompt_token_ids[0]"),
    ("max_tokens string", "POST", "/v1/generate", body(max_tokens="8"), J, 400, "invalid_request", "max_tokens"),
    ("max_tokens zero", "POST", "/v1/generate", body(max_tokens=0), J, 400, "invalid_request", "max_tokens"),
    ("max_tokens fraction", "POST", "/v1/generate", body(max_tokens=1.5), J, 400, "invalid_request", "max_tokens"),
    ("max_tokens huge", "POST", "/v1/generate", body(max_tokens=10**12), J, 400, "invalid_request", "max_tokens"),
    ("sampling string", "POST", "/v1/generate", body(sampling="greedy"), J, 400, "invalid_request", "sampling"),
    ("temperature string", "POST", "/v1/generate", body(sampling={"temperature": "hot"}), J, 400, "invalid_request", "sampling.temperature"),
    ("temperature negative", "POST", "/v1/generate", body(sampling={"temperature": -0.1}), J, 400, "invalid_request", "sampling.temperature"),
    ("top_p zero", "POST", "/v1/generate", body(sampling={"top_p": 0}), J, 400, "invalid_request", "sampling.top_p"),
    ("top_p above one", "POST", "/v1/generate", body(sampling={"top_p": 1.01}), J, 400, "invalid_request", "sampling.top_p"),
    ("top_k negative", "POST", "/v1/generate", body(sampling={"top_k": -1}), J, 400, "invalid_request", "sampling.top_k"),
    ("top_k 2^31", "POST", "/v1/generate", body(sampling={"temperature": 1.0, "top_k": 2**31}), J, 400, "invalid_request", "sampling.top_k"),
    ("top_k 2^63", "POST", "/v1/generate", body(sampling={"temperature": 1.0, "top_k": 2**63}), J, 400, "invalid_request", "sampling.top_k"),
    ("top_k 1e20", "POST", "/v1/generate", raw('{"request_id":"r","model":"m","prompt_token_ids":[1],"max_tokens":1,"sampling":{"temperature":1.0,"top_k":1e20}}'), J, 400, "invalid_request", "sampling.top_k"),
    ("seed negative", "POST", "/v1/generate", body(sampling={"seed": -1}), J, 400, "invalid_request", "sampling.seed"),
    ("seed 2^53", "POST", "/v1/generate", body(sampling={"seed": 2**53}), J, 400, "invalid_request", "sampling.seed"),
    ("unknown sampling field", "POST", "/v1/generate", body(sampling={"min_p": 0.1}), J, 400, "invalid_request", "sampling.min_p"),
    ("stop ids duplicate", "POST", "/v1/generate", body(stop_token_ids=[2, 2]), J, 400, "invalid_request", "stop_token_ids"),
    ("stop ids too many", "POST", "/v1/generate", body(stop_token_ids=list(range(65))), J, 400, "invalid_request", "stop_token_ids"),
    ("ignore_eos string", "POST", "/v1/generate", body(ignore_eos="yes"), J, 400, "invalid_request", "ignore_eos"),
    ("slo unknown class", "POST", "/v1/generate", body(slo={"class": "urgent"}), J, 400, "invalid_request", "slo.class"),
    ("slo no class", "POST", "/v1/generate", body(slo={"ttft_ms": 100}), J, 400, "invalid_request", "slo.class"),
    ("slo priority 10", "POST", "/v1/generate", body(slo={"class": "batch", "priority": 10}), J, 400, "invalid_request", "slo.priority"),
    ("cached_prefix bad hash", "POST", "/v1/generate", body(cached_prefix={"block_size": 16, "matched_blocks": 1, "block_hashes": ["XYZ"]}), J, 400, "invalid_request", "cached_prefix.block_hashes[0]"),
    ("kv_transfer bad role", "POST", "/v1/generate", body(kv_transfer={"role": "steal", "transfer_id": "t"}), J, 400, "invalid_request", "kv_transfer.role"),
    ("attention budget 1", "POST", "/v1/generate", body(attention={"token_budget": 1}), J, 400, "invalid_request", "attention.token_budget"),
    ("attention window 0", "POST", "/v1/generate", body(attention={"sink_tokens": 0, "window_tokens": 0}), J, 400, "invalid_request", "attention.window_tokens"),
    ("attention window 2^40", "POST", "/v1/generate", body(attention={"window_tokens": 2**40}), J, 400, "invalid_request", "attention.window_tokens"),
    ("attention sparse string", "POST", "/v1/generate", body(attention={"sparse": "false"}), J, 400, "invalid_request", "attention.sparse"),
    ("attention sink bool", "POST", "/v1/generate", body(attention={"sink_tokens": True}), J, 400, "invalid_request", "attention.sink_tokens"),
    ("huge array 2^20+1", "POST", "/v1/generate", body(prompt_token_ids=[1] * (2**20 + 1)), J, 400, "invalid_request", "prompt_token_ids"),
    # valid per schema, refused by this pod
    ("huge valid prompt", "POST", "/v1/generate", body(model=MODEL_ID, prompt_token_ids=[1] * 2**20), J, 400, "prompt_too_long", "prompt_token_ids"),
    ("unknown model", "POST", "/v1/generate", body(model="gpt-5"), J, 404, "unknown_model", "model"),
    ("kv transfer over nccl", "POST", "/v1/generate", body(model=MODEL_ID, kv_transfer={"role": "receive", "transfer_id": "t", "transport": "nccl"}), J, 501, "kv_transfer_failed", ...),
    # transport-level mistakes
    ("text/plain", "POST", "/v1/generate", body(), {"Content-Type": "text/plain"}, 415, "invalid_request", None),
    ("form encoded", "POST", "/v1/generate", b"request_id=r", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "invalid_request", None),
    ("no content type", "POST", "/v1/generate", body(), {}, 415, "invalid_request", None),
    ("too large", "POST", "/v1/generate", b"[" + b"1," * (7 * 2**20) + b"1]", J, 413, "invalid_request", None),
    ("GET generate", "GET", "/v1/generate", None, {}, 405, "invalid_request", None),
    ("PUT health", "PUT", "/health", b"{}", J, 405, "invalid_request", None),
    ("unknown path", "POST", "/v2/generate", body(), J, 404, "invalid_request", None),
    ("path traversal", "GET", "/../../etc/passwd", None, {}, 404, "invalid_request", None),
    # cancel
    ("cancel empty object", "POST", "/v1/cancel", b"{}", J, 400, "invalid_request", "request_id"),
    ("cancel number id", "POST", "/v1/cancel", b'{"request_id": 7}', J, 400, "invalid_request", "request_id"),
    ("cancel extra field", "POST", "/v1/cancel", b'{"request_id": "r", "why": "x"}', J, 400, "invalid_request", "why"),
    ("cancel not json", "POST", "/v1/cancel", b"r1", J, 400, "invalid_request", None),
    ("cancel text/plain", "POST", "/v1/cancel", b'{"request_id": "r"}', {"Content-Type": "text/plain"}, 415, "invalid_request", None),
    # kv events
    ("after negative", "GET", "/v1/kv_events?after=-1", None, {}, 400, "invalid_request", "after"),
    ("after text", "GET", "/v1/kv_events?after=abc", None, {}, 400, "invalid_request", "after"),
    ("after float", "GET", "/v1/kv_events?after=1.5", None, {}, 400, "invalid_request", "after"),
    ("after huge", "GET", "/v1/kv_events?after=" + "9" * 40, None, {}, 400, "invalid_request", "after"),
    ("after unicode digits", "GET", "/v1/kv_events?after=%D9%A3", None, {}, 400, "invalid_request", "after"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(str(tmp_path_factory.mktemp("tiny")))


def test_corpus_is_broad():
    assert len(CASES) >= 70 and len({c[0] for c in CASES}) == len(CASES)


async def test_bad_input_corpus(tiny):
    async with pod(real_engine_factory(tiny)) as (client, st):
        total = (await health(client))["load"]["total_blocks"]
        # a real request streams while the bad ones arrive, and must finish normally
        live = await client.post("/v1/generate", json=gen_body("live", list(range(40)), max_tokens=30, ignore_eos=True))
        failures = []
        for name, method, path, data, headers, status, code, param in CASES:
            resp = await client.request(method, path, data=data, headers=headers)
            text = await resp.text()
            try:
                rec = json.loads(text)
                protocol.validate("ErrorRecord", rec)
                assert resp.status == status, f"status {resp.status}, expected {status}"
                assert rec["error"]["code"] == code, rec
                if param is not ...:
                    assert rec["error"]["param"] == param, rec
                assert len(text) < 2000  # never echoes a huge body back
            except Exception as e:  # noqa: BLE001 - collect them all, fail once with the list
                failures.append(f"{name}: {e} | {resp.status} {text[:200]}")
        assert not failures, "\n".join(failures)

        recs = await read_stream(live)
        assert recs[-1]["type"] == "final" and recs[-1]["usage"]["completion_tokens"] == 30
        h = await client.get("/health")
        assert h.status == 200 and (await h.json())["load"]["free_blocks"] == total
        assert st.loop.num_live == 0
        ok = await read_stream(await client.post("/v1/generate", json=gen_body("after-corpus", max_tokens=4)))
        assert ok[-1]["type"] == "final" and len(tokens_of(ok)) >= 1


# valid per schema and extreme: each is answered with its tokens, and a stream beside them is not failed
EXTREME_SAMPLING = [
    {"temperature": 1.0, "top_k": 2**31 - 1},  # far above the vocabulary: keeps every token
    {"temperature": 1.0, "top_k": 1e9},  # the schema's integer 1e9, as a JSON float
    {"temperature": 1e-39},  # below float32's normal range
    {"temperature": 1.0, "top_p": 1e-300},  # 0.0 in float32
    {"temperature": 2.0, "top_p": 5e-324, "top_k": 1},
]


async def test_extreme_valid_sampling_values_are_answered(tiny):
    from edgeserve_pod.server.app import _submission

    async with pod(real_engine_factory(tiny)) as (client, st):
        vocab = st.loop.info.vocab_size
        assert vocab and _submission(st, gen_body("k", sampling={"top_k": vocab}), 0.0).params.top_k == 0
        assert _submission(st, gen_body("k", sampling={"top_k": vocab - 1}), 0.0).params.top_k == vocab - 1
        live = await client.post("/v1/generate", json=gen_body("live", list(range(40)), max_tokens=30, ignore_eos=True))
        answers = await asyncio.gather(*(
            client.post("/v1/generate", json=gen_body(f"x{i}", max_tokens=6, ignore_eos=True, sampling={**s, "seed": i}))
            for i, s in enumerate(EXTREME_SAMPLING)))
        for s, resp in zip(EXTREME_SAMPLING, answers):
            recs = await read_stream(resp)
            assert recs[-1]["type"] == "final" and recs[-1]["finish_reason"] == "length", (s, recs[-1])
            toks = tokens_of(recs)
            assert len(toks) == 6 and all(0 <= t < vocab for t in toks), (s, toks)
        recs = await read_stream(live)
        assert recs[-1]["type"] == "final" and recs[-1]["usage"]["completion_tokens"] == 30, recs[-1]
        assert st.loop.num_live == 0


async def test_garbage_on_the_socket_does_not_stop_the_pod(tiny):
    async with pod(real_engine_factory(tiny)) as (client, st):
        host, port = client.server.host, client.server.port
        for junk in (b"\x00\x01\x02\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /v1/generate HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                     b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"request_id\""):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(junk)
            await writer.drain()
            writer.close()  # half a request, then gone
            await writer.wait_closed()
        assert (await client.get("/health")).status == 200
        ok = await read_stream(await client.post("/v1/generate", json=gen_body("still-here", max_tokens=2)))
        assert ok[-1]["type"] == "final"


async def test_a_bad_request_with_a_kv_receive_directive_is_refused_without_waiting_for_kv(tiny):
    async with pod(real_engine_factory(tiny)) as (client, st):
        body = gen_body("kv-bad", kv_transfer={"role": "receive", "transfer_id": "never-sent"})
        # the pod would wait up to a minute for KV that never comes; the refusal must come first
        r = await asyncio.wait_for(client.post("/v1/generate", json={**body, "model": "gpt-5"}), 10)
        assert r.status == 404 and (await r.json())["error"]["code"] == "unknown_model"
        r = await asyncio.wait_for(client.post("/v1/generate", json={**body, "prompt_token_ids": [1] * 300}), 10)
        assert r.status == 400 and (await r.json())["error"]["code"] == "prompt_too_long"


async def test_attention_overrides_on_a_sparse_pod_never_fail_the_stream_beside_them(tiny):
    """A sparse pod serves an override the schema calls an integer (4096.0) as 4096, and answers a
    bad one with a 400 naming its field, while a request without overrides streams to its end
    (a bad override used to fail the engine step, and with it every request in flight)."""
    async with pod(real_engine_factory(tiny, attention_backend="sparse")) as (client, st):
        live = await client.post("/v1/generate", json=gen_body("live", list(range(10, 90)), max_tokens=40, ignore_eos=True))
        r = await client.post("/v1/generate", json=gen_body("bad", attention={"window_tokens": 2**40}))
        assert r.status == 400 and (await r.json())["error"]["param"] == "attention.window_tokens"
        ok = await read_stream(await client.post("/v1/generate", json=gen_body(
            "float", list(range(10, 90)), max_tokens=4, attention={"token_budget": 4096.0, "sink_tokens": 16.0})))
        assert ok[-1]["type"] == "final" and len(tokens_of(ok)) == 4, ok[-1]
        recs = await read_stream(live)
        assert recs[-1]["type"] == "final" and recs[-1]["usage"]["completion_tokens"] == 40, recs[-1]
