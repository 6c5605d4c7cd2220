"""SmoothQuant+ for 4-bit weights: migrate activation outliers into the weights before group
quantization, with the migration strength chosen per layer group by output error.

For a group with input X (T, K) and weights W (N, K), per input channel k:
    s_k = max|X_k|^alpha / max_n |W_nk|^(1 - alpha)       (clamped to [1e-4, 1e4])
    X W^T = (X / s) (W * s)^T                              exact before quantization
alpha is picked from a grid (plus "no smoothing", so the choice is never worse than RTN on the
objective). Objectives, with Q = 4-bit group RTN (rtn.py) and W' = Q(W * s) / s the weight the
smoothed model effectively multiplies by:
    "layer"  relative error of the group's own output over every calibration token:
             tr((W' - W) G (W' - W)^T) / tr(W G W^T), G = X^T X (calibrate.py)
    "block"  relative error of the decoder block's output (attention block for qkv and o, MLP
             block for gate_up and down) on calibration rows, the block's other group already
             quantized as chosen (qkv before o, gate_up before down), inputs from the 16-bit model
Refinements, each optional (quantize.py's config records which ran):
    scale form "mean"  s_k = mean|X_k|^alpha (AWQ's form) instead of the max-based one above
    clipping           after smoothing, per output row and group, the range [min, max] is shrunk
                       by the ratio in CLIP_GRID with the lowest error of that group's share of
                       the output, e_g^T G_gg e_g (AWQ's clipping search)
The 1/s is folded where it costs nothing:
    qkv       into input_layernorm's weight
    gate_up   into post_attention_layernorm's weight
    down      into up_proj's output rows (silu(g) * (u / s) = (silu(g) * u) / s)
    o         into v_proj's output rows: attention output channel (head h, dim j) is a mix of
              v channel (h // group, j), so s is shared by the query heads of one KV head
              (s computed from the statistics over those heads)
After a group is smoothed its calibration statistics are rescaled to describe the smoothed input
(X / s), so later steps (clipping) search on what the quantized model will see.
"""

from __future__ import annotations

from typing import Callable

import torch

from edgeserve_pod.quant.calibrate import Calibration
from edgeserve_pod.quant.llama_torch import TorchLlama
from edgeserve_pod.quant.rtn import _grouped, fake_quantize

GRID = tuple(i / 10 for i in range(11))
CLIP_GRID = tuple(1 - i / 20 for i in range(10))  # 1.0 .. 0.55
OBJECTIVES = ("layer", "block")
SCALE_FORMS = ("max", "mean")


def smooth_scales(act: torch.Tensor, w: torch.Tensor, alpha: float, form: str = "max") -> torch.Tensor:
    """-> (K,) f32. act: per-channel max |x| (form "max") or mean |x| (form "mean")."""
    if form == "mean":
        s = act.clamp(min=1e-5).pow(alpha)
        return (s / (s.max() * s.min()).sqrt()).clamp(1e-4, 1e4)
    w_max = w.abs().amax(0).clamp(min=1e-5)
    return (act.clamp(min=1e-5).pow(alpha) / w_max.pow(1 - alpha)).clamp(1e-4, 1e4)


def smoothed_quantized(w: torch.Tensor, s: torch.Tensor | None, group_size: int, clip=None) -> torch.Tensor:
    """The weight the smoothed, quantized model multiplies the unsmoothed input by: Q(W s) / s."""
    if s is None:
        return fake_quantize(w, group_size, clip)
    return fake_quantize(w * s, group_size, clip) / s


def output_error(gram: torch.Tensor, w: torch.Tensor, wq: torch.Tensor, norm: float | None = None) -> float:
    """Relative squared output error tr(E G E^T) / tr(W G W^T), E = wq - w, G = X^T X (K, K).
    norm: tr(W G W^T) when the caller has it."""
    e = wq - w
    if norm is None:
        norm = float(((w @ gram) * w).sum())
    return float(((e @ gram) * e).sum()) / max(norm, 1e-30)


def search_alpha(err: Callable[[torch.Tensor | None], float], scales: Callable[[float], torch.Tensor],
                 grid=GRID) -> tuple[float | None, torch.Tensor | None, dict]:
    """err(s) -> error of smoothing by s (None: no smoothing); scales(alpha) -> s.
    -> (alpha or None, s or None, {alpha: error}): the grid point with the lowest error."""
    errs = {"none": err(None)}
    best = (errs["none"], None, None)
    for a in grid:
        s = scales(a)
        e = errs[str(a)] = err(s)
        if e < best[0]:
            best = (e, a, s)
    return best[1], best[2], errs


@torch.no_grad()
def search_clip(gram: torch.Tensor, w: torch.Tensor, group_size: int, grid=CLIP_GRID) -> torch.Tensor:
    """-> (N, ng) clip ratio per output row and group: the one in `grid` minimising that group's
    share of the output error e_g^T G_gg e_g (cross-group terms are left out, as in AWQ)."""
    n, k = w.shape
    ng = -(-k // group_size)
    kp = ng * group_size
    gp = torch.zeros(kp, kp, dtype=gram.dtype)
    gp[:k, :k] = gram  # the ragged last group's padding columns carry no input
    blocks = torch.stack([gp[j * group_size:(j + 1) * group_size, j * group_size:(j + 1) * group_size]
                          for j in range(ng)])  # (ng, G, G)
    wg = _grouped(w, group_size)
    best_err = torch.full((n, ng), float("inf"))
    best = torch.ones(n, ng)
    for r in grid:
        e = _grouped(fake_quantize(w, group_size, r), group_size) - wg  # (N, ng, G)
        err = torch.einsum("ngi,gij,ngj->ng", e, blocks, e)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, r), best)
    return best


def _gqa_tie(num_heads: int, num_kv_heads: int, head_dim: int, form: str):
    g = num_heads // num_kv_heads

    def scales(act, w, a):
        am = act.view(num_kv_heads, g, head_dim).amax(1).reshape(-1)  # (Hkv * d,)
        wm = w.abs().amax(0).view(num_kv_heads, g, head_dim).amax(1).reshape(1, -1)
        s_kv = smooth_scales(am, wm, a, form).view(num_kv_heads, 1, head_dim)
        return s_kv.expand(num_kv_heads, g, head_dim).reshape(-1)  # (H * d,)

    return scales


class _Swap:
    """Temporarily replace Linear weights (for the block objective)."""

    def __init__(self, mods, weights):
        self.mods, self.weights = mods, weights

    def __enter__(self):
        self.saved = [m.weight.data for m in self.mods]
        for m, w in zip(self.mods, self.weights):
            m.weight.data = w

    def __exit__(self, *exc):
        for m, w in zip(self.mods, self.saved):
            m.weight.data = w


@torch.no_grad()
def smooth_model(model: TorchLlama, cal: Calibration, group_size: int = 128, grid=GRID, *,
                 objective: str = "layer", scale_form: str = "max", clip: bool = False,
                 block_inputs: list[torch.Tensor] | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Smooth the model's weights in place (float32). block_inputs: each layer's input residual
    stream (B, T, D) from the 16-bit model (objective "block"). Returns (report, clips):
    report {group: {"alpha": a or None, "error": e, "error_rtn": e0}} (errors on the objective),
    clips {'model.layers.i.self_attn.q_proj': (N, ng) ratios} when clip is set."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if scale_form not in SCALE_FORMS:
        raise ValueError(f"scale_form must be one of {SCALE_FORMS}, got {scale_form!r}")
    if objective == "block" and block_inputs is None:
        raise ValueError("the block objective needs block_inputs (each layer's input rows)")
    report, clips = {}, {}
    H, Hkv, d = model.H, model.Hkv, model.d
    stat = cal.act_max if scale_form == "max" else cal.act_mean
    gqa = _gqa_tie(H, Hkv, d, scale_form)
    for i, L in enumerate(model.layers):
        at, mlp = L.self_attn, L.mlp
        groups = {"qkv": [at.q_proj, at.k_proj, at.v_proj], "o": [at.o_proj],
                  "gate_up": [mlp.gate_proj, mlp.up_proj], "down": [mlp.down_proj]}
        if objective == "block":
            x_in = block_inputs[i]
            rot = model.rotary(x_in.shape[1])
            attn_ref = model.attn_block(L, x_in, rot)
            x_mid = x_in + attn_ref
            mlp_ref = model.mlp_block(L, x_mid)
        chosen: dict[str, list[torch.Tensor]] = {}  # group -> the quantized weights chosen (block objective)
        for grp, mods in groups.items():
            key = f"layers.{i}.{grp}"
            w = torch.cat([m.weight for m in mods], 0)
            if grp == "o":
                scales = lambda a, w=w, key=key: gqa(stat[key], w, a)  # noqa: E731
            else:
                scales = lambda a, w=w, key=key: smooth_scales(stat[key], w, a, scale_form)  # noqa: E731
            if objective == "layer":
                g = cal.gram[key]
                nrm = float(((w @ g) * w).sum())
                err = lambda s, w=w, g=g, nrm=nrm: output_error(g, w, smoothed_quantized(w, s, group_size), nrm)  # noqa: E731
            else:
                err = _block_err(model, L, grp, mods, groups, chosen, w, group_size, x_in, rot, x_mid,
                                 attn_ref if grp in ("qkv", "o") else mlp_ref)
            a, s, errs = search_alpha(err, scales, grid)
            if s is not None:
                _fold(model, L, grp, s)
                cal.gram[key] = cal.gram[key] / (s[:, None] * s[None, :])
                cal.act_max[key] = cal.act_max[key] / s
                cal.act_mean[key] = cal.act_mean[key] / s
                if key in cal.samples:
                    cal.samples[key] = cal.samples[key] / s
            report[key] = _entry(a, errs)
            for m, name in zip(mods, _names(grp)):
                c = clips[f"model.layers.{i}.{name}"] = search_clip(cal.gram[key], m.weight, group_size) if clip else None
                if objective == "block":  # in the folded coordinates the rest of the layer now uses
                    chosen.setdefault(grp, []).append(fake_quantize(m.weight, group_size, c))
    clips = {k: v for k, v in clips.items() if v is not None}
    return report, clips


def _block_err(model, L, grp, mods, groups, chosen, w, group_size, x_in, rot, x_mid, ref):
    """err(s) for the block objective: the block's output with this group at Q(W s) / s (W: its
    weights before its own fold) and the block's earlier group at its chosen quantized weights
    (after that group's fold, which the norm or v_proj/up_proj already carries)."""
    earlier = {"o": "qkv", "down": "gate_up"}.get(grp)
    fixed_mods = groups[earlier] if earlier else []
    fixed_w = chosen[earlier] if earlier else []
    sizes = [m.weight.shape[0] for m in mods]
    den = ref.pow(2).sum().clamp(min=1e-30)

    def err(s):
        wq = list(smoothed_quantized(w, s, group_size).split(sizes))
        with _Swap(list(mods) + list(fixed_mods), wq + list(fixed_w)):
            out = model.attn_block(L, x_in, rot) if grp in ("qkv", "o") else model.mlp_block(L, x_mid)
        return float((out - ref).pow(2).sum() / den)

    return err


def _names(grp: str) -> list[str]:
    return {"qkv": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "o": ["self_attn.o_proj"],
            "gate_up": ["mlp.gate_proj", "mlp.up_proj"], "down": ["mlp.down_proj"]}[grp]


def _fold(model: TorchLlama, L, grp: str, s: torch.Tensor) -> None:
    at, mlp = L.self_attn, L.mlp
    if grp == "qkv":
        L.input_layernorm.div_(s)
        for lin in (at.q_proj, at.k_proj, at.v_proj):
            lin.weight.mul_(s)
    elif grp == "o":
        H, Hkv, d = model.H, model.Hkv, model.d
        s_kv = s.view(Hkv, H // Hkv, d)[:, 0, :].reshape(-1)  # (Hkv * d,) one per v output row
        at.v_proj.weight.div_(s_kv[:, None])
        if at.v_proj.bias is not None:
            at.v_proj.bias.div_(s_kv)
        at.o_proj.weight.mul_(s)
    elif grp == "gate_up":
        L.post_attention_layernorm.div_(s)
        mlp.gate_proj.weight.mul_(s)
        mlp.up_proj.weight.mul_(s)
    else:
        mlp.up_proj.weight.div_(s[:, None])
        mlp.down_proj.weight.mul_(s)


def _entry(a, errs) -> dict:
    best = errs["none"] if a is None else errs[str(a)]
    return {"alpha": a, "error": best, "error_rtn": errs["none"]}
