"""Tensor-parallel group: rank/size and the all-reduce that row-parallel layers need.

One process per GPU rank (torch.distributed; NCCL on GPU, gloo on CPU for tests). Column-
parallel projections (q|k|v, gate|up) hold a slice of the output features; row-parallel ones
(o, down) a slice of the input features and all-reduce their output. Embedding and lm_head are
replicated (simple; costs vocab x hidden per rank)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TPGroup:
    rank: int = 0
    size: int = 1

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            dist.all_reduce(x)
        return x

    def shard(self, n: int, what: str) -> tuple[int, int]:
        """[start, stop) of this rank's slice of n units."""
        if n % self.size:
            raise ValueError(f"{what} ({n}) is not divisible by tensor_parallel_size ({self.size})")
        per = n // self.size
        return self.rank * per, (self.rank + 1) * per


def current_group(tp_size: int) -> TPGroup:
    if tp_size == 1:
        return TPGroup()
    if not dist.is_initialized():
        raise RuntimeError(f"tensor_parallel_size={tp_size} needs torch.distributed initialised "
                           "(one process per rank; see edgeserve_pod.engine.tp_launch)")
    if dist.get_world_size() != tp_size:
        raise RuntimeError(f"tensor_parallel_size={tp_size} but the process group has {dist.get_world_size()} ranks")
    return TPGroup(dist.get_rank(), tp_size)
