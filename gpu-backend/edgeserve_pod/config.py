"""EngineConfig: the one typed object that configures a pod engine, validated at the boundary."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from edgeserve_pod.block_hash import DEFAULT_BLOCK_SIZE

_DEVICES = ("cpu", "cuda")
_DTYPES = ("auto", "bfloat16", "float16", "float32")
_KV_DTYPES = ("auto", "fp8")
_QUANT = (None, "w4a16")
_STREAMING_KV = ("full", "ring")

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    model: str  # HF-layout folder: config.json + *.safetensors
    device: str = "cpu"
    model_id: str | None = None  # name used in block hashes and the protocol; default: folder name
    dtype: str = "auto"  # activations/weights; auto = bfloat16 on cuda, float32 on cpu
    block_size: int = DEFAULT_BLOCK_SIZE  # KV page size = shared hashing block size
    max_num_batched_tokens: int = 2048  # token budget of one step (Sarathi chunk size)
    max_num_seqs: int = 64  # running sequences at most
    max_model_len: int | None = None  # default: the model's max_position_embeddings, capped at 8192
    kv_cache_blocks: int | None = None  # None: from free GPU memory (cuda) or 1024 blocks (cpu)
    gpu_memory_utilization: float = 0.90
    kv_dtype: str = "auto"  # auto = the activation dtype; fp8 = e4m3 with per-head scales
    attention_backend: str = "torch"  # "torch" (reference, CPU), "triton" (GPU kernels) or "sparse" (Quest + streaming heads)
    # attention_backend="sparse": head map from tools/calibrate_heads.py (None: every head is a retrieval head)
    sparse_head_map: str | None = None
    # streaming heads' K/V: "full" = stored for every token in the paged cache (read: sink + window);
    # "ring" = a constant-size ring per running sequence (sink + window + one chunk), the paged
    # cache holds only retrieval heads (layers/attention_sparse_ring.py). Ring: sparse backend with
    # a head map, one rank, no prefix caching, no KV transfer.
    streaming_kv: str = "full"
    quantization: str | None = None  # None (bf16 linears) or "w4a16"
    tensor_parallel_size: int = 1
    enforce_eager: bool = False  # True: no CUDA graphs for decode
    cuda_graph_max_batch: int = 64  # largest decode batch bucket captured in a graph
    cuda_graph_max_prefill_tokens: int = 512  # prefill-only steps up to this many tokens replay a graph (0: never)
    # decode steps run back to back when only decodes run and nothing waits (multi-step
    # scheduling: tokens fed back on the GPU, one host sync per round, host work hidden); a new
    # request waits up to this many steps. 1 = off. CUDA graphs and tensor_parallel_size 1 only.
    # None = 8 on cuda with CUDA graphs (greedy rounds replay one graph k times), 1 otherwise.
    num_decode_steps: int | None = None
    enable_prefix_caching: bool = True
    scheduling_policy: str = "fcfs"  # name registered in engine/policy.py
    seed: int = 0  # default sampling RNG seed (requests with their own seed use their own generator)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not os.path.isdir(self.model):
            raise ValueError(f"model must be an HF-layout folder (config.json + safetensors), got {self.model!r}")
        if not os.path.isfile(os.path.join(self.model, "config.json")):
            raise ValueError(f"model folder {self.model!r} has no config.json")
        if self.device not in _DEVICES:
            raise ValueError(f"device must be one of {_DEVICES}, got {self.device!r}")
        if self.model_id is None:
            self.model_id = os.path.basename(os.path.normpath(self.model))
        if not self.model_id:
            raise ValueError("model_id must be a non-empty string")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.kv_dtype not in _KV_DTYPES:
            raise ValueError(f"kv_dtype must be one of {_KV_DTYPES}, got {self.kv_dtype!r}")
        if self.quantization not in _QUANT:
            raise ValueError(f"quantization must be one of {_QUANT}, got {self.quantization!r}")
        if self.num_decode_steps is None:
            self.num_decode_steps = 8 if self.device == "cuda" and not self.enforce_eager else 1
        for name in ("block_size", "max_num_batched_tokens", "max_num_seqs", "tensor_parallel_size", "cuda_graph_max_batch",
                     "num_decode_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        v = self.cuda_graph_max_prefill_tokens
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"cuda_graph_max_prefill_tokens must be an integer >= 0, got {v!r}")
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int) or self.max_model_len < 1):
            raise ValueError(f"max_model_len must be a positive integer or None, got {self.max_model_len!r}")
        if self.kv_cache_blocks is not None and (not isinstance(self.kv_cache_blocks, int) or self.kv_cache_blocks < 2):
            raise ValueError(f"kv_cache_blocks must be an integer >= 2 or None, got {self.kv_cache_blocks!r}")
        if not 0.05 <= self.gpu_memory_utilization <= 0.99:
            raise ValueError(f"gpu_memory_utilization must be in [0.05, 0.99], got {self.gpu_memory_utilization}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}) so that every running sequence can decode in one step")
        if self.sparse_head_map is not None:
            if self.attention_backend != "sparse":
                raise ValueError(f"sparse_head_map needs attention_backend='sparse', got {self.attention_backend!r}")
            if not os.path.isfile(self.sparse_head_map):
                raise ValueError(f"sparse_head_map {self.sparse_head_map!r} is not a file")
        if self.streaming_kv not in _STREAMING_KV:
            raise ValueError(f"streaming_kv must be one of {_STREAMING_KV}, got {self.streaming_kv!r}")
        if self.streaming_kv == "ring":
            if self.attention_backend != "sparse" or self.sparse_head_map is None:
                raise ValueError("streaming_kv='ring' needs attention_backend='sparse' and a sparse_head_map with "
                                 f"streaming heads, got attention_backend={self.attention_backend!r}, "
                                 f"sparse_head_map={self.sparse_head_map!r}")
            if self.tensor_parallel_size > 1:
                raise ValueError(f"streaming_kv='ring' runs on one rank, got tensor_parallel_size={self.tensor_parallel_size}")
            if self.enable_prefix_caching:
                # a cached block would hold only the retrieval heads, and the ring's window for that
                # prefix is not kept: a hit could not be served
                log.warning("streaming_kv='ring': prefix caching is switched off")
                self.enable_prefix_caching = False
        if self.device == "cpu" and self.attention_backend == "triton":  # sparse runs its torch path on cpu
            raise ValueError(f"attention_backend {self.attention_backend!r} needs device='cuda'; on cpu use 'torch' or 'sparse'")

    @property
    def torch_dtype(self):
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if self.device == "cuda" else torch.float32
        return getattr(torch, self.dtype)
