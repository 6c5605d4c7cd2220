"""The engine's step loop, on its own thread, bridged to asyncio.

The engine is not thread-safe, so every engine call (construction included) happens on this
thread; the asyncio side talks to it through a command queue and gets answers back as
concurrent futures (commands) or as items pushed into a per-request `RequestStream`
(tokens, final, error) with `loop.call_soon_threadsafe`.

While any request is unfinished the thread steps the engine as fast as it can, taking commands
between steps (so an abort frees its blocks before the next step runs); when idle it blocks on
the command queue.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from edgeserve_pod.protocol import ProtocolError
from edgeserve_pod.server.kv_log import KvEventLog
from edgeserve_pod.server.metrics import PodMetrics
from edgeserve_pod.server.stream import RequestStream

log = logging.getLogger("edgeserve_pod.engine_loop")

_IDLE_WAKE_S = 0.5  # idle thread still refreshes load/metrics and drains KV events this often
_RATE_WINDOW_S = 10.0  # decode/prefill tok/s are averaged over this much recent time
_STEP_WINDOW_S = 3.0  # decode_step_ms: the mean over the steps of this much recent time (load moves fast)


@dataclass
class EngineInfo:
    """What the server needs to know about the engine, read once after it is built."""

    model_id: str
    block_size: int
    max_model_len: int
    eos_token_ids: list[int]
    vocab_size: int | None = None  # None: the engine does not say (test doubles)


@dataclass
class _Live:
    """Engine-thread bookkeeping of one admitted request."""

    stream: RequestStream
    t_recv: float  # time.monotonic() when the HTTP request arrived
    num_prompt_tokens: int
    num_cached_tokens: int = 0
    num_output_tokens: int = 0
    t_first: float | None = None


@dataclass
class Submission:
    request_id: str
    prompt_token_ids: list[int]
    params: Any  # edgeserve_pod.engine.sequence.SamplingParams
    t_recv: float
    slo: dict | None = None
    attention: dict | None = None


@dataclass
class LoadSnapshot:
    """The latest engine stats plus server-side rates; replaced whole, so readers need no lock."""

    running: int = 0
    waiting: int = 0
    free_blocks: int = 0
    total_blocks: int = 0
    kv_usage: float = 0.0
    waiting_prefill_tokens: int = 0
    prefix_hit_tokens: int = 0
    prefix_query_tokens: int = 0
    num_preemptions: int = 0
    decode_tok_s: float = 0.0
    prefill_tok_s: float = 0.0
    decode_step_ms: float = 0.0
    extra: dict = field(default_factory=dict)

    def pod_load(self) -> dict:
        """A PodLoad record (schema $defs/PodLoad)."""
        return {
            "running": self.running, "waiting": self.waiting,
            "free_blocks": self.free_blocks, "total_blocks": self.total_blocks,
            "kv_usage": min(1.0, max(0.0, float(self.kv_usage))),
            "waiting_prefill_tokens": self.waiting_prefill_tokens,
            "decode_tok_s": round(self.decode_tok_s, 3), "prefill_tok_s": round(self.prefill_tok_s, 3),
            "decode_step_ms": round(self.decode_step_ms, 3),
        }


class EngineLoop:
    """Owns the engine and its thread. `engine_factory` runs on the thread (model loading included)."""

    def __init__(self, engine_factory: Callable[[], Any], metrics: PodMetrics, kv_log: KvEventLog | None = None,
                 max_waiting: int | None = None):
        self._factory = engine_factory
        self.metrics = metrics
        self.kv_log = kv_log
        self.max_waiting = max_waiting
        self._cmds: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self.info: EngineInfo | None = None
        self.start_error: BaseException | None = None
        self.load = LoadSnapshot()
        self.engine: Any = None  # only the engine thread may call it
        self._live: dict[str, _Live] = {}
        # (time, decode tokens, prefill tokens, step seconds): rates are per second of engine work
        self._rates: deque[tuple[float, int, int, float]] = deque()

    # ---- asyncio side -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.info is not None and not self._stopped.is_set()

    @property
    def num_live(self) -> int:
        """Requests admitted and not yet finished."""
        return len(self._live)

    @property
    def failed(self) -> bool:
        return self.start_error is not None

    def start(self, aloop: asyncio.AbstractEventLoop | None = None) -> None:
        self._aloop = aloop or asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the engine is built; re-raise its construction error."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._ready.is_set():  # polled: a thread blocked in Event.wait would outlive shutdown
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"engine not ready after {timeout} s")
            await asyncio.sleep(0.02)
        if self.start_error is not None:
            raise self.start_error

    async def submit(self, sub: Submission, stream: RequestStream) -> None:
        """Queue a request whose items go to `stream`. ProtocolError for refusals (duplicate id,
        overloaded, engine ValueError). If the caller is cancelled meanwhile, it must
        `abort_nowait(request_id, stream)`: the add may already have happened."""
        await self._call("add", sub, stream)

    async def abort(self, request_id: str) -> bool:
        """Cancel a request; True if it was running or waiting here."""
        return await self._call("abort", request_id)

    async def update_slo(self, request_id: str, changes: dict) -> bool:
        """Refined SLO targets for a request in flight; False when it is not (any more) here."""
        return await self._call("update_slo", request_id, changes)

    def abort_nowait(self, request_id: str, stream: RequestStream | None = None) -> None:
        """Cancel without waiting (used when a client has gone away). With `stream`, only the
        request feeding that stream is cancelled, not a later one that reuses the id."""
        self._cmds.put(("abort", (request_id, stream), None))

    async def call(self, fn: Callable[[Any], Any]) -> Any:
        """Run fn(engine) on the engine thread (tests and diagnostics)."""
        return await self._call("call", fn)

    async def stop(self) -> None:
        """Cancel everything in flight and end the thread."""
        if self._thread is None:
            return
        self._cmds.put(("stop", (), None))
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)
        self._thread = None
        self._fail_queued(RuntimeError("pod is shutting down"))  # commands that raced the thread's exit

    async def _call(self, name: str, *args: Any) -> Any:
        if self._stopped.is_set() or self._thread is None:
            raise ProtocolError("engine loop is not running", code="overloaded", status=503)
        fut: Future = Future()
        self._cmds.put((name, args, fut))
        return await asyncio.wrap_future(fut)

    # ---- engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.engine = self._factory()
            eng = self.engine
            self.info = EngineInfo(model_id=eng.model_id, block_size=int(eng.block_size),
                                   max_model_len=int(eng.max_model_len), eos_token_ids=list(eng.eos_token_ids),
                                   vocab_size=getattr(getattr(eng, "arch", None), "vocab_size", None))
            self._refresh(time.monotonic(), 0, 0)
        except BaseException as e:  # noqa: BLE001 - reported through wait_ready/health
            log.exception("engine failed to start")
            self.start_error = e
            self._stopped.set()
            self._ready.set()
            self._fail_queued(e)
            return
        self._ready.set()
        try:
            while True:
                try:
                    if not self._take_commands(block=not self.engine.has_unfinished()):
                        break
                    self._step()
                except Exception as e:  # noqa: BLE001 - e.g. stats() or has_unfinished() broke: keep serving
                    log.exception("engine loop iteration failed")
                    self._fail_all("internal_error", f"engine loop failed: {type(e).__name__}: {e}")
                    time.sleep(0.01)  # don't spin if the engine keeps failing
        finally:
            self._stopped.set()
            self._shutdown()

    def _take_commands(self, block: bool) -> bool:
        """Run queued commands; False when told to stop."""
        try:
            cmd = self._cmds.get(timeout=_IDLE_WAKE_S) if block else self._cmds.get_nowait()
        except queue.Empty:
            return True
        while True:
            name, args, fut = cmd
            if name == "stop":
                return False
            # A caller cancelled before we got here (e.g. its client went away): skip the command.
            if fut is not None and not fut.set_running_or_notify_cancel():
                try:
                    cmd = self._cmds.get_nowait()
                except queue.Empty:
                    return True
                continue
            try:
                result = getattr(self, "_cmd_" + name)(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                if fut is not None:
                    fut.set_exception(e)
                else:
                    log.exception("command %s failed", name)
            else:
                if fut is not None:
                    fut.set_result(result)
            try:
                cmd = self._cmds.get_nowait()
            except queue.Empty:
                return True

    def _cmd_add(self, sub: Submission, stream: RequestStream) -> None:
        rid = sub.request_id
        if rid in self._live:
            raise ProtocolError(f"request_id {rid!r} is already in flight on this pod", param="request_id",
                                status=409, request_id=rid)
        if self.max_waiting is not None and self.load.waiting >= self.max_waiting:
            raise ProtocolError(f"pod queue is full ({self.load.waiting} waiting)", code="overloaded",
                                status=503, request_id=rid)
        try:
            self.engine.add_request(rid, sub.prompt_token_ids, sub.params, slo=sub.slo, attention=sub.attention)
        except ValueError as e:
            capacity = self.load.total_blocks * self.info.block_size
            if len(sub.prompt_token_ids) + 1 > capacity:  # bigger than the whole KV cache
                raise ProtocolError(str(e), param="prompt_token_ids", code="prompt_too_long",
                                    request_id=rid) from None
            raise ProtocolError(str(e), param=getattr(e, "param", None), request_id=rid) from None
        self._live[rid] = _Live(stream=stream, t_recv=sub.t_recv, num_prompt_tokens=len(sub.prompt_token_ids))
        self.load.waiting += 1  # so back-to-back adds see each other before the next refresh

    def _cmd_abort(self, request_id: str, stream: RequestStream | None = None) -> bool:
        live = self._live.get(request_id)
        if live is None or (stream is not None and live.stream is not stream):
            return False
        del self._live[request_id]
        self.engine.abort_request(request_id)  # frees its KV blocks now
        now = time.monotonic()
        self._refresh(now, 0, 0)
        self._push(live.stream, self._final(request_id, live, "cancelled", now))
        return True

    def _cmd_update_slo(self, request_id: str, changes: dict) -> bool:
        if request_id not in self._live:
            return False
        return bool(self.engine.update_slo(request_id, changes))

    def _cmd_call(self, fn: Callable[[Any], Any]) -> Any:
        return fn(self.engine)

    def _step(self) -> None:
        if not self.engine.has_unfinished():
            if self._live:  # the engine dropped requests it was given: don't leave their streams hanging
                self._fail_all("internal_error", "the engine finished without a final output for this request")
            self._refresh(time.monotonic(), 0, 0)
            return
        t_step = time.monotonic()
        try:
            outputs = self.engine.step()
        except Exception as e:  # noqa: BLE001 - the pod keeps serving; the requests in flight fail
            log.exception("engine step failed; failing %d requests", len(self._live))
            self._fail_all("internal_error", f"engine step failed: {type(e).__name__}: {e}")
            self._refresh(time.monotonic(), 0, 0)
            return
        now = time.monotonic()
        n_decode = 0
        # Prefill tokens this step computed (chunks included); an engine without the counter: at first token.
        step_prefill = getattr(self.engine, "last_step", None)
        n_prefill = step_prefill[0] if step_prefill else 0
        pushes: list[tuple[RequestStream, tuple]] = []
        for out in outputs:
            if out.finish_reason == "cancelled":
                # Only this loop aborts requests, and it sent their final then. Matching this late
                # output by id would end a new request that reuses the id in the same command batch.
                continue
            live = self._live.get(out.request_id)
            if live is None:  # aborted between schedule and output
                continue
            live.num_cached_tokens = out.num_cached_tokens
            if out.new_token_ids:
                if live.t_first is None:
                    live.t_first = now
                    if step_prefill is None:
                        n_prefill += max(0, out.num_prompt_tokens - out.num_cached_tokens)
                    self.metrics.observe_first_token(now - live.t_recv)
                n_decode += len(out.new_token_ids)
                live.num_output_tokens += len(out.new_token_ids)
                t_ms = round((now - live.t_recv) * 1000.0, 3)
                pushes.append((live.stream, ("tokens", list(out.new_token_ids), [t_ms] * len(out.new_token_ids))))
            if out.finished:
                del self._live[out.request_id]
                pushes.append((live.stream, self._final(out.request_id, live, out.finish_reason or "stop", now)))
        # Load first, then records: a client that has seen a final also sees its blocks freed in /health.
        self._refresh(now, n_decode, n_prefill, now - t_step)
        if pushes:
            self._push_many(pushes)

    def _final(self, request_id: str, live: _Live, reason: str, now: float) -> tuple:
        """The ("final", FinalRecord) item for a request leaving the engine; counts it in the metrics."""
        timing = {"total_ms": round((now - live.t_recv) * 1000.0, 3)}
        if live.t_first is not None:
            timing["ttft_ms"] = round((live.t_first - live.t_recv) * 1000.0, 3)
        record = {
            "type": "final", "request_id": request_id, "finish_reason": reason,
            "usage": {"prompt_tokens": live.num_prompt_tokens, "completion_tokens": live.num_output_tokens,
                      "cached_tokens": live.num_cached_tokens},
            "timing": timing,
        }
        self.metrics.observe_finish(reason, live.num_prompt_tokens, live.num_cached_tokens, live.num_output_tokens,
                                    now - live.t_recv, None if live.t_first is None else now - live.t_first)
        return ("final", record)

    def _fail_all(self, code: str, message: str) -> None:
        for rid, live in list(self._live.items()):
            try:
                self.engine.abort_request(rid)
            except Exception:  # noqa: BLE001 - the engine may be in a bad state; keep going
                log.exception("abort of %s after a failed step also failed", rid)
            self.metrics.observe_error(code)
        failed, self._live = self._live, {}
        try:
            self._refresh(time.monotonic(), 0, 0)
        except Exception:  # noqa: BLE001 - the streams must end even if stats() is what broke
            log.exception("load refresh after a failure also failed")
        if failed:
            self._push_many([(live.stream, ("error", code, message)) for live in failed.values()])

    def _fail_queued(self, error: BaseException) -> None:
        while True:
            try:
                _, _, fut = self._cmds.get_nowait()
            except queue.Empty:
                return
            if fut is not None and fut.set_running_or_notify_cancel():
                fut.set_exception(ProtocolError(f"engine failed to start: {error}", code="internal_error", status=503))

    def _shutdown(self) -> None:
        if self.engine is not None:
            self._fail_all("cancelled", "pod is shutting down")
            shutdown = getattr(self.engine, "shutdown", None)
            if shutdown is not None:
                try:
                    shutdown()
                except Exception:  # noqa: BLE001 - best effort at exit
                    log.exception("engine shutdown failed")
        self._fail_queued(RuntimeError("pod is shutting down"))

    def _push(self, stream: RequestStream, item: tuple) -> None:
        self._push_many([(stream, item)])

    def _push_many(self, pushes: list[tuple[RequestStream, tuple]]) -> None:
        """Hand items to their streams with one event-loop wake-up (not one per request per step)."""
        try:
            self._aloop.call_soon_threadsafe(_deliver, pushes)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    def _refresh(self, now: float, n_decode: int, n_prefill: int, step_s: float = 0.0) -> None:
        """Load snapshot, rates, metrics gauges and KV events, after every step."""
        eng = self.engine
        s = eng.stats()
        self._rates.append((now, n_decode, n_prefill, step_s))
        while self._rates and now - self._rates[0][0] > _RATE_WINDOW_S:
            self._rates.popleft()
        # What the pod does per second of work, not per second of wall time: an idle stretch does
        # not make a pod look slow to the router (workers/src/routing/cost.ts uses these as capacity).
        # Decode capacity from decode-only steps when there are some (a step carrying prefill
        # chunks says more about the prefill than about decoding); else from every decode step.
        pure = [r for r in self._rates if r[1] and not r[2]]
        decode_rows = pure if pure else [r for r in self._rates if r[1]]
        busy_decode = sum(r[3] for r in decode_rows)
        busy_prefill = sum(r[3] for r in self._rates if r[2])
        # Time per output token as a decoding request sees it now: every recent step that produced
        # tokens, prefill chunks riding along included (the router's TPOT estimate).
        token_steps = [r[3] for r in self._rates if r[1] and now - r[0] <= _STEP_WINDOW_S]
        self.load = LoadSnapshot(
            running=s.running, waiting=s.waiting, free_blocks=s.free_blocks, total_blocks=s.total_blocks,
            kv_usage=s.kv_usage, waiting_prefill_tokens=getattr(s, "waiting_prefill_tokens", 0),
            prefix_hit_tokens=getattr(s, "prefix_hit_tokens", 0), prefix_query_tokens=getattr(s, "prefix_query_tokens", 0),
            num_preemptions=getattr(s, "num_preemptions", 0),
            decode_tok_s=sum(r[1] for r in decode_rows) / busy_decode if busy_decode > 0 else 0.0,
            prefill_tok_s=sum(r[2] for r in self._rates) / busy_prefill if busy_prefill > 0 else 0.0,
            decode_step_ms=1000.0 * sum(token_steps) / len(token_steps) if token_steps else 0.0,
        )
        self.metrics.update_load(self.load)
        if self.kv_log is not None:
            events = eng.drain_kv_events()
            if events:
                self.kv_log.add(events)


def _deliver(pushes: list[tuple[RequestStream, tuple]]) -> None:
    for stream, item in pushes:
        stream.push(item)
