"""Block-wise output reconstruction after rounding: the small version of OmniQuant's learnable
weight clipping (Shao et al. 2023, "OmniQuant: Omnidirectionally Calibrated Quantization for
LLMs", block-wise error minimisation) and of EfficientQAT's Block-AP (Chen et al. 2024), which
train a transformer block's quantization parameters by gradient descent on the block's output
error, one block at a time.

Here the 4-bit codes and the integer zero points stay as rounding (GPTQ or RTN) left them, so the
grid, the checkpoint format and the W4A16 kernel are unchanged; what is learned per block is
    - each group's scale s (N, ng), as s0 * exp(t), t initialised at 0;
    - the block's two RMSNorm weights, as g0 * exp(u) (the norms are stored in float anyway).
Objective per block i (the mean over calibration rows of the relative squared error):
    || block_i^q(x^q_i) - block_i(x_i) ||^2 / || block_i(x_i) ||^2
where x_i is block i's input in the full-precision model and x^q_i its input in the model whose
blocks 0..i-1 are already quantized and tuned (so a block also learns to absorb the error it is
handed, as in GPTQ's and BRECQ's sequential order). Adam on minibatches of rows; the learned
values are kept only if the objective over all rows, with the scales rounded to float16 as
stored, is lower than before: the step never makes a block's objective worse.

Cost: forward + backward of one block per step (about 3x a forward); with the defaults on
SmolLM2-135M (30 blocks, 64 rows x 256, 4 rows a step) about a minute per block on one CPU thread.
Few parameters (one scale per 128 weights), so little room to overfit the calibration text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeserve_pod.kernels.w4a16 import unpack_int4
from edgeserve_pod.quant.llama_torch import PROJ, TorchLlama
from edgeserve_pod.quant.rtn import QuantizedWeight


@dataclass
class ReconConfig:
    steps: int = 200  # Adam steps per block
    lr: float = 2e-3  # on the log-multipliers t and u
    batch_rows: int = 4  # calibration rows per step
    norms: bool = True  # also learn the two RMSNorm weights
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


class _LearnedScales(nn.Module):
    """y = x @ W^T with W = (q - z) * s0 * exp(t): codes and zeros fixed, t learned."""

    def __init__(self, q: QuantizedWeight, bias: torch.Tensor | None):
        super().__init__()
        k = q.in_features
        g = torch.arange(k) // q.group_size  # (K,) group of each column
        codes = unpack_int4(q.qweight, k).to(torch.float32)  # (N, K)
        self.register_buffer("cz", codes - q.zeros.t().to(torch.float32)[:, g])  # (N, K) q - z
        self.register_buffer("s0", q.scales.t().to(torch.float32))  # (N, ng)
        self.register_buffer("g", g)
        self.t = nn.Parameter(torch.zeros_like(self.s0))  # (N, ng)
        self.bias = bias

    def scales(self, fp16: bool = False) -> torch.Tensor:  # (N, ng)
        s = self.s0 * torch.exp(self.t)
        return s.to(torch.float16).to(torch.float32) if fp16 else s

    def weight(self, fp16: bool = False) -> torch.Tensor:  # (N, K)
        return self.cz * self.scales(fp16)[:, self.g]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


NORMS = ("input_layernorm", "post_attention_layernorm")


def _set_norm(L, name: str, v: torch.Tensor, parameter: bool = False) -> None:
    """Put a norm weight on the layer: a plain tensor (part of the autograd graph) while it is
    learned, a frozen Parameter once it is final."""
    L._parameters.pop(name, None)
    L.__dict__.pop(name, None)
    if parameter:
        L.register_parameter(name, nn.Parameter(v.detach().clone(), requires_grad=False))
    else:
        object.__setattr__(L, name, v)


def _block(model: TorchLlama, L, x: torch.Tensor, rot) -> torch.Tensor:
    x = x + model.attn_block(L, x, rot)
    return x + model.mlp_block(L, x)


def _objective(model, L, xs: torch.Tensor, ys: torch.Tensor, rot, chunk: int = 8) -> float:
    """Mean over rows of ||block(x) - y||^2 / ||y||^2 (no grad)."""
    tot = 0.0
    with torch.no_grad():
        for r in range(0, xs.shape[0], chunk):
            out = _block(model, L, xs[r:r + chunk], rot)
            y = ys[r:r + chunk]
            tot += float(((out - y).pow(2).sum((1, 2)) / y.pow(2).sum((1, 2))).sum())
    return tot / xs.shape[0]


def _run(model, L, xs, chunk: int = 8) -> torch.Tensor:
    rot = model.rotary(xs.shape[1])
    with torch.no_grad():
        return torch.cat([_block(model, L, xs[r:r + chunk], rot) for r in range(0, xs.shape[0], chunk)])


def reconstruct(model: TorchLlama, quantized: dict[str, QuantizedWeight], rows: torch.Tensor,
                cfg: ReconConfig = ReconConfig(), teacher: TorchLlama | None = None, log=print) -> dict:
    """model: the (smoothed) model, changed in place: on return each block's
    projections hold the dequantized tuned weights and its norms the tuned norms.
    quantized: 'model.layers.i.<proj>' -> QuantizedWeight for every projection; the scales of
    each are replaced by the tuned float16 scales (codes and zeros untouched).
    teacher: the full-precision model whose block outputs are the targets (any model equivalent
    to it, e.g. the unsmoothed source); None: `model` itself, each block taken before its weights
    are replaced. rows: (R, T) int64 calibration tokens. Returns {layer: {objective_before, objective_after, kept}}."""
    missing = [f"model.layers.{i}.{p}" for i in range(len(model.layers)) for p in PROJ
               if f"model.layers.{i}.{p}" not in quantized]
    if missing:
        raise ValueError(f"reconstruct needs every projection quantized; missing {missing[:3]}...")
    gen = torch.Generator().manual_seed(cfg.seed)
    R, T = rows.shape
    rot = model.rotary(T)
    with torch.no_grad():
        x_fp = F.embedding(rows, model.embed)  # (R, T, D) input of block i, full precision
    x_q = x_fp.clone()  # (R, T, D) input of block i, blocks before i quantized
    report = {}
    for i, L in enumerate(model.layers):
        y_fp = _run(teacher or model, (teacher or model).layers[i], x_fp)  # (R, T, D) target: the full-precision block on its own input
        fp_lin = {}
        for p in PROJ:
            parent, leaf = p.split(".")
            lin = getattr(getattr(L, parent), leaf)
            fp_lin[p] = lin
            setattr(getattr(L, parent), leaf, _LearnedScales(quantized[f"model.layers.{i}.{p}"], lin.bias))
        norms0 = {n: getattr(L, n).detach().clone() for n in NORMS}  # (D,) each
        u = {n: nn.Parameter(torch.zeros_like(v)) for n, v in norms0.items()}
        lins = [getattr(getattr(L, p.split(".")[0]), p.split(".")[1]) for p in PROJ]
        params = [m.t for m in lins] + (list(u.values()) if cfg.norms else [])
        before = _objective(model, L, x_q, y_fp, rot)
        opt = torch.optim.Adam(params, lr=cfg.lr)
        for _ in range(cfg.steps):
            b = torch.randperm(R, generator=gen)[:cfg.batch_rows]
            if cfg.norms:
                for n, v in norms0.items():
                    _set_norm(L, n, v * torch.exp(u[n]))
            out = _block(model, L, x_q[b], rot)
            y = y_fp[b]
            loss = ((out - y).pow(2).sum((1, 2)) / y.pow(2).sum((1, 2))).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():  # the stored form: float16 scales, float32 norms
            for m in lins:
                m.t.copy_(torch.log(m.scales(fp16=True) / m.s0))
            tuned = {n: (v * torch.exp(u[n])) if cfg.norms else v for n, v in norms0.items()}
            for n, v in tuned.items():
                _set_norm(L, n, v)
        after = _objective(model, L, x_q, y_fp, rot)
        kept = after < before
        for p, m in zip(PROJ, lins):
            q = quantized[f"model.layers.{i}.{p}"]
            if kept:
                q.scales = m.scales(fp16=True).to(torch.float16).t().contiguous()  # (ng, N)
            lin = fp_lin[p]
            lin.weight = nn.Parameter(q.dequantize(), requires_grad=False)
            setattr(getattr(L, p.split(".")[0]), p.split(".")[1], lin)
        for n in NORMS:
            _set_norm(L, n, tuned[n] if kept else norms0[n], parameter=True)
        if not kept:
            after = _objective(model, L, x_q, y_fp, rot)
        report[f"layers.{i}"] = {"objective_before": before, "objective_after": after, "kept": kept}
        log(f"block {i}: objective {before:.5f} -> {after:.5f}{'' if kept else ' (not kept)'}")
        x_q = _run(model, L, x_q)
        x_fp = y_fp
    return report
