"""Block-wise output reconstruction after rounding: the small version of OmniQuant's learnable
weight clipping (Shao et al. 2023, "OmniQuant: Omnidirectionally Calibrated Quantization for
LLMs", block-wise error minimisation) and of EfficientQAT's Block-AP (Chen et al. 2024), which
train a transformer block's quantization parameters by gradient descent on the block's output
error, one block at a time.

The integer zero points stay as rounding (GPTQ or RTN) left them, so the grid, the checkpoint
format and the W4A16 kernel are unchanged; what is learned per block is
    - each group's scale s (N, ng), as s0 * exp(t), t initialised at 0;
    - the block's two RMSNorm weights, as g0 * exp(u) (the norms are stored in float anyway);
    - with `codes`, in a second stage that starts from the first's result, the 4-bit codes too
      (Block-AP's weight training, on the fixed grid), with the scales and norms: a float offset
      v per weight (code units, initialised at 0), the code used being round(clamp(q0 + v, 0, 15))
      with the straight-through gradient of the rounding, so a code moves once its offset passes
      +-0.5 and every weight stays on its group's 16 levels. Otherwise the codes stay as rounding
      left them.
Objective per block i (the mean over calibration rows, `loss="row"`, of the relative squared error):
    || block_i^q(x^q_i) - block_i(x_i) ||^2 / || block_i(x_i) ||^2
or, with `loss="token"`, the same ratio per token, averaged over tokens: the residual stream of
SmolLM2 has a few tokens with activations 100x the others, which dominate the per-row ratio,
while the next block sees each token divided by its own RMS.
where x_i is block i's input in the full-precision model and x^q_i its input in the model whose
blocks 0..i-1 are already quantized and tuned (so a block also learns to absorb the error it is
handed, as in GPTQ's and BRECQ's sequential order). Adam on minibatches of rows; a stage's
learned values are kept only if the objective over all rows, with the scales rounded to float16
and the codes to integers as stored, is lower than before the stage: no stage makes a block's
objective worse. With `val_rows` (calibration rows not trained on), a stage is also dropped
unless their objective drops: the codes stage has one parameter per weight and can fit the 64
training rows at the expense of other text (measured on SmolLM2's block 0: the training
objective fell 2% while the held-aside rows' rose 10%).

Cost: forward + backward of one block per step (about 3x a forward), per stage; on SmolLM2-135M
(30 blocks, 64 rows x 256, 4 rows a step, 80 steps) about 30 s per block and stage on one CPU
thread. The scales stage has few parameters (one scale per 128 weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeserve_pod.kernels.w4a16 import pack_int4, unpack_int4
from edgeserve_pod.quant.llama_torch import PROJ, TorchLlama
from edgeserve_pod.quant.rtn import QMAX, QuantizedWeight


LOSSES = ("row", "token")


@dataclass
class ReconConfig:
    steps: int = 200  # Adam steps per block
    lr: float = 2e-3  # on the log-multipliers t and u
    batch_rows: int = 4  # calibration rows per step
    norms: bool = True  # also learn the two RMSNorm weights
    seed: int = 0
    codes: bool = False  # also move the 4-bit codes (straight-through rounding on the fixed grid)
    codes_lr: float = 2e-2  # Adam lr on the code offsets, in code units (a code moves past 0.5)
    loss: str = "row"  # "row" | "token": what the relative squared error is normalised by
    eval_rows: int = 0  # > 0: the keep rule's objective on this many of the rows (evenly spaced), not all

    def __post_init__(self) -> None:
        if self.eval_rows < 0:
            raise ValueError(f"eval_rows must be >= 0, got {self.eval_rows}")
        for name in ("steps", "batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("lr", "codes_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")


class _LearnedScales(nn.Module):
    """y = x @ W^T with W = (q - z) * s0 * exp(t): zeros fixed, t learned; the codes q fixed,
    or (codes=True) q = round(clamp(q0 + v, 0, 15)) with v learned through the rounding."""

    def __init__(self, q: QuantizedWeight, bias: torch.Tensor | None, codes: bool = False):
        super().__init__()
        k = q.in_features
        g = torch.arange(k) // q.group_size  # (K,) group of each column
        self.register_buffer("q0", unpack_int4(q.qweight, k).to(torch.float32))  # (N, K) codes from rounding
        self.register_buffer("z", q.zeros.t().to(torch.float32)[:, g])  # (N, K) zero point of each weight's group
        self.register_buffer("s0", q.scales.t().to(torch.float32))  # (N, ng)
        self.register_buffer("g", g)
        self.t = nn.Parameter(torch.zeros_like(self.s0))  # (N, ng)
        self.v = nn.Parameter(torch.zeros_like(self.q0)) if codes else None  # (N, K) code offsets
        self.bias = bias

    def scales(self, fp16: bool = False) -> torch.Tensor:  # (N, ng)
        s = self.s0 * torch.exp(self.t)
        return s.to(torch.float16).to(torch.float32) if fp16 else s

    def codes(self) -> torch.Tensor:  # (N, K) float32 holding integers in [0, 15]
        if self.v is None:
            return self.q0
        c = (self.q0 + self.v).clamp(0, QMAX)
        return c + (torch.round(c) - c).detach()  # straight-through: forward rounds, gradient passes

    def weight(self, fp16: bool = False) -> torch.Tensor:  # (N, K)
        return (self.codes() - self.z) * self.scales(fp16)[:, self.g]

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


def _loss(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, T, D) each -> (B,) relative squared error of each row: per row, or per token then
    averaged over the row's tokens."""
    if kind == "row":
        return (out - y).pow(2).sum((1, 2)) / y.pow(2).sum((1, 2))
    return ((out - y).pow(2).sum(2) / y.pow(2).sum(2)).mean(1)


def _objective(model, L, xs: torch.Tensor, ys: torch.Tensor, rot, kind: str = "row", chunk: int = 8) -> float:
    """Mean over rows of _loss(block(x), y) (no grad)."""
    tot = 0.0
    with torch.no_grad():
        for r in range(0, xs.shape[0], chunk):
            tot += float(_loss(_block(model, L, xs[r:r + chunk], rot), ys[r:r + chunk], kind).sum())
    return tot / xs.shape[0]


def _run(model, L, xs, chunk: int = 8) -> torch.Tensor:
    rot = model.rotary(xs.shape[1])
    with torch.no_grad():
        return torch.cat([_block(model, L, xs[r:r + chunk], rot) for r in range(0, xs.shape[0], chunk)])


def _stage(model, L, lins: list, cfg: ReconConfig, codes: bool, x_q, y_fp, rot, gen, ev: torch.Tensor,
           v_q=None, vy_fp=None, start: tuple | None = None) -> dict:
    """Train the block's scales and norms (and, with codes, its code offsets) from their current
    values on minibatches of x_q's rows; keep the result, in its stored form, only if the
    objective drops (on the rows ev of x_q and, when given, on the held-aside v_q); otherwise put
    the values back. start: the objectives of the current values, when already measured.
    -> the stage's report."""
    R = x_q.shape[0]
    norms0 = {n: getattr(L, n).detach().clone() for n in NORMS}  # (D,) each
    t0 = [m.t.detach().clone() for m in lins]
    v0 = [m.v.detach().clone() for m in lins] if codes else []
    u = {n: nn.Parameter(torch.zeros_like(v)) for n, v in norms0.items()}
    for m in lins:
        if m.v is not None:
            m.v.requires_grad_(codes)
    groups = [{"params": [m.t for m in lins] + (list(u.values()) if cfg.norms else []), "lr": cfg.lr}]
    if codes:
        groups.append({"params": [m.v for m in lins], "lr": cfg.codes_lr})

    def objectives():
        return (_objective(model, L, x_q[ev], y_fp[ev], rot, cfg.loss),
                None if v_q is None else _objective(model, L, v_q, vy_fp, rot, cfg.loss))

    before, val_before = start or objectives()
    opt = torch.optim.Adam(groups)
    for _ in range(cfg.steps):
        b = torch.randperm(R, generator=gen)[:cfg.batch_rows]
        if cfg.norms:
            for n, v in norms0.items():
                _set_norm(L, n, v * torch.exp(u[n]))
        loss = _loss(_block(model, L, x_q[b], rot), y_fp[b], cfg.loss).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():  # the stored form: float16 scales, integer codes, float32 norms
        for m in lins:
            m.t.copy_(torch.log(m.scales(fp16=True) / m.s0))
            if codes:
                m.v.copy_(m.codes() - m.q0)
        for n, v in norms0.items():
            _set_norm(L, n, v * torch.exp(u[n]) if cfg.norms else v)
    after, val_after = objectives()
    kept = after < before and (val_before is None or val_after < val_before)
    if not kept:
        with torch.no_grad():
            for m, t in zip(lins, t0):
                m.t.copy_(t)
            for m, v in zip(lins, v0):
                m.v.copy_(v)
        for n, v in norms0.items():
            _set_norm(L, n, v)
    rep = {"codes": codes, "objective_before": before, "objective_after": after if kept else before, "kept": kept}
    if v_q is not None:
        rep.update(val_before=val_before, val_after=val_after if kept else val_before)
    if not kept:
        rep["rejected"] = {"objective": after, "val": val_after}
    return rep


def reconstruct(model: TorchLlama, quantized: dict[str, QuantizedWeight], rows: torch.Tensor,
                cfg: ReconConfig = ReconConfig(), teacher: TorchLlama | None = None, log=print,
                val_rows: torch.Tensor | None = None) -> dict:
    """model: the (smoothed) model, changed in place: on return each block's
    projections hold the dequantized tuned weights and its norms the tuned norms.
    quantized: 'model.layers.i.<proj>' -> QuantizedWeight for every projection; the scales (and,
    with cfg.codes, the packed codes) of each are replaced by the tuned ones (zeros untouched).
    teacher: the full-precision model whose block outputs are the targets (any model equivalent
    to it, e.g. the unsmoothed source); None: `model` itself, each block taken before its weights
    are replaced. rows: (R, T) int64 calibration tokens (with cfg.eval_rows, the keep rule measures
    that many of them). val_rows: (R', T) int64 calibration rows not trained on: a stage is kept
    only if their objective drops too.
    Returns {layer: {objective_before, objective_after, kept, codes_moved, stages: [...]}}."""
    missing = [f"model.layers.{i}.{p}" for i in range(len(model.layers)) for p in PROJ
               if f"model.layers.{i}.{p}" not in quantized]
    if missing:
        raise ValueError(f"reconstruct needs every projection quantized; missing {missing[:3]}...")
    gen = torch.Generator().manual_seed(cfg.seed)
    R = rows.shape[0]
    rot = model.rotary(rows.shape[1])
    ev = torch.linspace(0, R - 1, min(cfg.eval_rows, R)).round().long() if cfg.eval_rows else torch.arange(R)
    src = teacher or model
    with torch.no_grad():
        x_fp = F.embedding(rows, model.embed)  # (R, T, D) input of block i, full precision
        v_fp = None if val_rows is None else F.embedding(val_rows, model.embed)  # (R', T, D)
    x_q = x_fp.clone()  # (R, T, D) input of block i, blocks before i quantized
    v_q = None if v_fp is None else v_fp.clone()
    report = {}
    for i, L in enumerate(model.layers):
        y_fp = _run(src, src.layers[i], x_fp)  # (R, T, D) target: the full-precision block on its own input
        vy_fp = None if v_fp is None else _run(src, src.layers[i], v_fp)  # (R', T, D)
        fp_lin = {}
        for p in PROJ:
            parent, leaf = p.split(".")
            lin = getattr(getattr(L, parent), leaf)
            fp_lin[p] = lin
            setattr(getattr(L, parent), leaf, _LearnedScales(quantized[f"model.layers.{i}.{p}"], lin.bias, cfg.codes))
        lins = [getattr(getattr(L, p.split(".")[0]), p.split(".")[1]) for p in PROJ]
        stages = []
        for codes in (False, True) if cfg.codes else (False,):
            start = (stages[-1]["objective_after"], stages[-1].get("val_after")) if stages else None
            stages.append(_stage(model, L, lins, cfg, codes, x_q, y_fp, rot, gen, ev, v_q, vy_fp, start))
        kept = any(st["kept"] for st in stages)
        moved = 0
        for p, m in zip(PROJ, lins):
            q = quantized[f"model.layers.{i}.{p}"]
            if kept:
                with torch.no_grad():
                    q.scales = m.scales(fp16=True).to(torch.float16).t().contiguous()  # (ng, N)
                    codes = m.codes()  # (N, K)
                    n_moved = int((codes != m.q0).sum())
                    if n_moved:
                        q.qweight = pack_int4(codes.to(torch.uint8))
                    moved += n_moved
            lin = fp_lin[p]
            lin.weight = nn.Parameter(q.dequantize(), requires_grad=False)
            setattr(getattr(L, p.split(".")[0]), p.split(".")[1], lin)
        for n in NORMS:
            _set_norm(L, n, getattr(L, n), parameter=True)
        e = report[f"layers.{i}"] = {"objective_before": stages[0]["objective_before"],
                                     "objective_after": _objective(model, L, x_q[ev], y_fp[ev], rot, cfg.loss), "kept": kept,
                                     "codes_moved": moved, "stages": stages}
        msg = f"block {i}: objective {e['objective_before']:.5f} -> {e['objective_after']:.5f}"
        for st in stages:
            msg += f"; {'codes' if st['codes'] else 'scales'} {'kept' if st['kept'] else 'not kept'}"
            if not st["kept"]:
                msg += f" ({st['rejected']['objective']:.5f}"
                msg += f", held-aside {st['val_before']:.5f} -> {st['rejected']['val']:.5f})" if v_q is not None else ")"
        if cfg.codes:
            msg += f", {moved} codes moved"
        if v_q is not None:
            e["val_before"], e["val_after"] = stages[0]["val_before"], stages[-1]["val_after"]
            msg += f"; held-aside rows {e['val_before']:.5f} -> {e['val_after']:.5f}"
            v_q, v_fp = _run(model, L, v_q), vy_fp
        log(msg)
        x_q = _run(model, L, x_q)
        x_fp = y_fp
    return report
