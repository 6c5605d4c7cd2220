"""`edgeserve-pod`: run one pod (one engine, one model) behind the pod protocol.

    edgeserve-pod --model PATH --device cpu|cuda --port N [--host 127.0.0.1] [--model-id ID]
                  [--pod-id ID] [--role prefill|decode|both] [--edge-url URL --pod-secret S]
                  [engine flags: one per EngineConfig field, e.g. --max-num-seqs 64]

The engine flags are generated from EngineConfig's fields, so they never drift from it; both
configs are validated before anything starts and a bad value exits with status 2 and a message.
Exit status: 0 after SIGINT/SIGTERM (in-flight requests get --drain-timeout-s to finish),
1 if the engine fails to start, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
import types
import typing

from aiohttp import web

from edgeserve_pod.server.config import ServerConfig

log = logging.getLogger("edgeserve_pod.cli")

_SERVER_FLAGS = {  # ServerConfig field -> help
    "pod_id": "pod id used with the edge (default pod-0)",
    "host": "interface to listen on (default 127.0.0.1)",
    "port": "port to listen on; 0 picks a free one (default 9001)",
    "role": "prefill, decode or both (default both)",
    "advertise_url": "URL the edge should call this pod on (default http://HOST:PORT)",
    "edge_url": "edge base URL to register with, heartbeat to and push KV events to",
    "pod_secret": "Bearer secret for the edge's /internal endpoints and for KV transfers between pods (default $EDGESERVE_POD_SECRET)",
    "heartbeat_s": "heartbeat period until the edge says otherwise (default 5)",
    "kv_cut_interval_s": "how often pending KV events become a batch and are pushed (default 0.1)",
    "max_waiting": "queue depth beyond which generate answers 503 overloaded (default 1024)",
    "max_body_bytes": "largest request body accepted",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(hint: typing.Any) -> tuple[type, bool]:
    """(scalar type, optional) from `int`, `int | None`, `Optional[str]`..."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _none_or(kind: type):
    def parse(s: str):
        return None if s.lower() in ("none", "null", "") else kind(s)

    parse.__name__ = kind.__name__
    return parse


def _add_dataclass_flags(group: argparse._ArgumentGroup, cls: type, only: dict[str, str] | None = None,
                         skip: tuple[str, ...] = ()) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        kind, optional = _scalar_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        helptext = only[f.name] if only else f"EngineConfig.{f.name} (default {default!r})"
        if kind is bool:
            group.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=helptext)
        else:
            group.add_argument(_flag(f.name), dest=f.name, type=_none_or(kind) if optional else kind,
                               default=argparse.SUPPRESS, help=helptext)


def build_parser() -> argparse.ArgumentParser:
    from edgeserve_pod.config import EngineConfig

    p = argparse.ArgumentParser(prog="edgeserve-pod", description="Serve one model over the EdgeServe pod protocol.")
    p.add_argument("--model", required=True, help="HF-layout model folder (config.json + safetensors)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--model-id", dest="model_id", default=argparse.SUPPRESS,
                   help="model id in the protocol and in block hashes (default: folder name)")
    p.add_argument("--drain-timeout-s", type=float, default=30.0, help="on SIGTERM, time in-flight requests get")
    p.add_argument("--log-level", default="INFO")
    _add_dataclass_flags(p.add_argument_group("server"), ServerConfig, only=_SERVER_FLAGS)
    _add_dataclass_flags(p.add_argument_group("engine (EdgeServe EngineConfig)"), EngineConfig,
                         skip=("model", "device", "model_id"))
    return p


def configs(argv: list[str] | None = None):
    """Parse flags into (EngineConfig, ServerConfig, extra args); bad values exit 2 with a message."""
    from edgeserve_pod.config import EngineConfig

    parser = build_parser()
    args = vars(parser.parse_args(argv))
    server_kw = {k: args.pop(k) for k in list(args) if k in _SERVER_FLAGS}
    server_kw.setdefault("pod_secret", os.environ.get("EDGESERVE_POD_SECRET") or None)
    extra = {k: args.pop(k) for k in ("drain_timeout_s", "log_level")}
    try:
        server = ServerConfig(**server_kw)
        engine = EngineConfig(**args)
        if engine.streaming_kv == "ring" and server.role != "both":  # KV transfer moves the paged cache only
            raise ValueError(f"streaming_kv='ring' cannot serve role {server.role!r} (KV transfer needs streaming_kv='full')")
    except ValueError as e:
        parser.error(str(e))
    return engine, server, extra


async def serve(app: web.Application, cfg: ServerConfig, drain_timeout_s: float) -> int:
    from edgeserve_pod.server.app import STATE

    st = app[STATE]
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    if cfg.port == 0:  # tell the edge (and whoever parses our stdout) the port we got
        cfg.port = runner.addresses[0][1]
    print(f"edgeserve-pod: listening on {cfg.url}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.create_task(st.loop.wait_ready())
    stopping = asyncio.create_task(stop.wait())
    code = 0
    try:
        await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and ready.exception() is not None:
            print(f"edgeserve-pod: engine failed to start: {ready.exception()}", file=sys.stderr)
            code = 1
        else:
            await stopping
            st.draining = True
            deadline = loop.time() + drain_timeout_s
            while st.loop.num_live and loop.time() < deadline:
                await asyncio.sleep(0.05)
    finally:
        for t in (ready, stopping):
            t.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    return code


def main(argv: list[str] | None = None) -> int:
    engine_cfg, server_cfg, extra = configs(argv)
    logging.basicConfig(level=extra["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edgeserve_pod.server.app import create_app

    def build_engine():  # runs on the engine thread; under TP this process is rank 0
        from edgeserve_pod.engine.engine import LLMEngine

        if engine_cfg.tensor_parallel_size > 1:
            from edgeserve_pod.engine.tp_launch import launch_tp

            build_engine.workers = launch_tp(engine_cfg)  # ranks 1..N-1, daemon processes
        return LLMEngine(engine_cfg)

    app = create_app(server_cfg, build_engine, engine_cfg.model_id, engine_cfg.block_size)
    return asyncio.run(serve(app, server_cfg, extra["drain_timeout_s"]))


if __name__ == "__main__":
    sys.exit(main())
