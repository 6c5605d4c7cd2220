"""Start tensor-parallel ranks: rank 0 is the calling process (it runs the engine); ranks
1..N-1 are spawned processes that build the same ModelRunner and follow rank 0's broadcasts.
NCCL on cuda, gloo on cpu (CI tests TP with gloo and 2 processes)."""

from __future__ import annotations

import socket

import torch.distributed as dist
import torch.multiprocessing as mp

from edgeserve_pod.config import EngineConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, config: EngineConfig, init_method: str) -> None:
    from edgeserve_pod.engine.model_runner import ModelRunner
    from edgeserve_pod.models.arch import ModelArch
    from edgeserve_pod.parallel import TPGroup

    backend = "nccl" if config.device == "cuda" else "gloo"
    if config.device == "cuda":
        import torch

        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=config.tensor_parallel_size)
    try:
        runner = ModelRunner(config, ModelArch.from_folder(config.model), TPGroup(rank, config.tensor_parallel_size))
        runner.worker_loop()
    finally:
        dist.destroy_process_group()


def launch_tp(config: EngineConfig) -> list:
    """Spawn ranks 1..N-1 and join the group as rank 0. Returns the worker processes."""
    n = config.tensor_parallel_size
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, config, init_method), daemon=True) for r in range(1, n)]
    for p in procs:
        p.start()
    if config.device == "cuda":
        import torch

        torch.cuda.set_device(0)
    dist.init_process_group("nccl" if config.device == "cuda" else "gloo", init_method=init_method, rank=0, world_size=n)
    return procs
