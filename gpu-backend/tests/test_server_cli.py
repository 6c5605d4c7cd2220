"""`edgeserve-pod`: flags from the config dataclasses, validation, and a real process end to end."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from edgeserve_pod.config import EngineConfig
from edgeserve_pod.server import cli
from _server_util import write_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(str(tmp_path_factory.mktemp("tiny")))


def test_every_engine_config_field_has_a_flag():
    flags = {a.dest for a in cli.build_parser()._actions}
    assert {f.name for f in dataclasses.fields(EngineConfig)} <= flags


def test_flags_become_validated_configs(tiny):
    model = tiny
    eng, srv, extra = cli.configs(["--model", model, "--port", "0", "--model-id", "tiny", "--pod-id", "p-1",
                                   "--role", "prefill", "--kv-cache-blocks", "32", "--max-model-len", "none",
                                   "--enforce-eager", "--no-enable-prefix-caching", "--edge-url", "http://127.0.0.1:8787",
                                   "--pod-secret", "x", "--heartbeat-s", "2.5"])
    assert (eng.model_id, eng.kv_cache_blocks, eng.max_model_len, eng.enforce_eager, eng.enable_prefix_caching) == \
        ("tiny", 32, None, True, False)
    assert (srv.pod_id, srv.role, srv.port, srv.edge_url, srv.pod_secret, srv.heartbeat_s) == \
        ("p-1", "prefill", 0, "http://127.0.0.1:8787", "x", 2.5)


def test_secret_from_the_environment(tiny, monkeypatch):
    model = tiny
    monkeypatch.setenv("EDGESERVE_POD_SECRET", "from-env")
    _, srv, _ = cli.configs(["--model", model, "--edge-url", "http://127.0.0.1:8787"])
    assert srv.pod_secret == "from-env"


@pytest.mark.parametrize("args, says", [
    (["--device", "tpu"], "invalid choice"),
    (["--role", "router"], "role must be one of"),
    (["--pod-id", "has space"], "pod_id must match"),
    (["--block-size", "0"], "block_size must be a positive integer"),
    (["--block-size", "sixteen"], "invalid int value"),
    (["--edge-url", "ftp://edge"], "edge_url must be an http(s) URL"),
    (["--edge-url", "http://127.0.0.1:8787"], "edge_url needs pod_secret"),
    (["--port", "70000"], "port must be in"),
])
def test_bad_flags_exit_2_with_a_message(tiny, capsys, monkeypatch, args, says):
    monkeypatch.delenv("EDGESERVE_POD_SECRET", raising=False)
    model = tiny
    with pytest.raises(SystemExit) as e:
        cli.configs(["--model", model, *args])
    assert e.value.code == 2 and says in capsys.readouterr().err


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "edgeserve_pod.server.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


async def test_the_pod_process_serves_then_drains_on_sigterm(tiny):
    # room for 16 whole 1024-token sequences (the engine caps max_model_len at the KV cache's tokens,
    # so a smaller cache would end the long streams early with "length")
    proc = _start(["--model", tiny, "--port", "0", "--model-id", "tiny", "--kv-cache-blocks", "1100",
                   "--max-model-len", "1024", "--drain-timeout-s", "1", "--log-level", "WARNING"])
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert line.startswith("edgeserve-pod: listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.05)
            assert r.status == 200
            body = {"request_id": "cli-1", "model": "tiny", "prompt_token_ids": [1, 2, 3], "max_tokens": 4, "ignore_eos": True}
            async with s.post(url + "/v1/generate", json=body) as r:
                recs = [json.loads(x) for x in (await r.text()).splitlines()]
            assert recs[-1]["type"] == "final" and recs[-1]["usage"]["completion_tokens"] == 4

            # long streams are open when SIGTERM comes: the pod drains, then ends them and exits 0.
            # 16 of them at once take ~6 s to finish on an idle 2-core host (one alone ~2 s), far
            # past the 1 s drain, so they are still running when it ends
            longs = [await s.post(url + "/v1/generate", json={**body, "request_id": f"cli-long-{i}", "max_tokens": 1000})
                     for i in range(16)]
            for r in longs:
                await r.content.readline()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with s.get(url + "/health") as r:
                assert r.status == 503 and (await r.json())["status"] == "draining"
            async with s.post(url + "/v1/generate", json={**body, "request_id": "cli-late"}) as r:
                assert r.status == 503 and (await r.json())["error"]["code"] == "overloaded"
            for r in longs:
                tail = [json.loads(x) for x in (await r.text()).splitlines()]
                assert tail[-1]["type"] == "error" and tail[-1]["error"]["code"] == "cancelled"
        assert await asyncio.wait_for(asyncio.to_thread(proc.wait), 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_serve_returns_1_when_the_engine_cannot_start(tmp_path, capsys):
    from edgeserve_pod.server.app import create_app
    from edgeserve_pod.server.config import ServerConfig

    def broken():
        raise FileNotFoundError("model.safetensors missing")

    cfg = ServerConfig(port=0)
    code = await asyncio.wait_for(cli.serve(create_app(cfg, broken, "m", 16), cfg, 1.0), 30)
    assert code == 1
    err = capsys.readouterr().err
    assert "engine failed to start" in err and "model.safetensors missing" in err
