"""SmoothQuant+ for 4-bit weights: migrate activation outliers into the weights before group
quantization, with the migration strength chosen per layer group by output error.

For a group with input X (T, K) and weights W (N, K), per input channel k:
    s_k = max|X_k|^alpha / max_n |W_nk|^(1 - alpha)       (clamped to [1e-4, 1e4])
    X W^T = (X / s) (W * s)^T                              exact before quantization
alpha is picked from a grid (plus "no smoothing", so the choice is never worse than RTN on the
calibration rows) by the relative error || X W^T - (X / s) Q(W * s)^T ||^2 / || X W^T ||^2 on
calibration samples, Q = 4-bit group RTN (rtn.py). The 1/s is folded where it costs nothing:
    qkv       into input_layernorm's weight
    gate_up   into post_attention_layernorm's weight
    down      into up_proj's output rows (silu(g) * (u / s) = (silu(g) * u) / s)
    o         into v_proj's output rows: attention output channel (head h, dim j) is a mix of
              v channel (h // group, j), so s is shared by the query heads of one KV head
              (s computed from the maxima over those heads)
"""

from __future__ import annotations

import torch

from edgeserve_pod.quant.calibrate import Calibration
from edgeserve_pod.quant.llama_torch import TorchLlama
from edgeserve_pod.quant.rtn import fake_quantize

GRID = tuple(i / 10 for i in range(11))


def smooth_scales(act_max: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:  # -> (K,) f32
    w_max = w.abs().amax(0).clamp(min=1e-5)
    return (act_max.clamp(min=1e-5).pow(alpha) / w_max.pow(1 - alpha)).clamp(1e-4, 1e4)


def output_error(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor | None, group_size: int) -> float:
    """Relative squared error of the quantized group output on calibration rows x (S, K)."""
    y = x @ w.t()
    if s is None:
        yq = x @ fake_quantize(w, group_size).t()
    else:
        yq = (x / s) @ fake_quantize(w * s, group_size).t()
    return float((yq - y).pow(2).sum() / y.pow(2).sum().clamp(min=1e-30))


def search_alpha(x: torch.Tensor, w: torch.Tensor, act_max: torch.Tensor, group_size: int,
                 grid=GRID, tie=None) -> tuple[float | None, torch.Tensor | None, dict]:
    """-> (alpha or None for no smoothing, s (K,) or None, {alpha: error}). `tie` maps raw
    (act_max, w) to the scales actually usable (the GQA constraint of o_proj)."""
    errs = {"none": output_error(x, w, None, group_size)}
    best = (errs["none"], None, None)
    for a in grid:
        s = tie(act_max, w, a) if tie is not None else smooth_scales(act_max, w, a)
        e = output_error(x, w, s, group_size)
        errs[str(a)] = e
        if e < best[0]:
            best = (e, a, s)
    return best[1], best[2], errs


def _gqa_tie(num_heads: int, num_kv_heads: int, head_dim: int):
    g = num_heads // num_kv_heads

    def tie(act_max, w, a):
        am = act_max.view(num_kv_heads, g, head_dim).amax(1)  # (Hkv, d)
        wm = w.abs().amax(0).view(num_kv_heads, g, head_dim).amax(1).clamp(min=1e-5)
        s_kv = (am.clamp(min=1e-5).pow(a) / wm.pow(1 - a)).clamp(1e-4, 1e4)
        return s_kv[:, None, :].expand(num_kv_heads, g, head_dim).reshape(-1)  # (H * d,)

    return tie


@torch.no_grad()
def smooth_model(model: TorchLlama, cal: Calibration, group_size: int = 128, grid=GRID) -> dict:
    """Smooth the model's weights in place (float32). Returns the manifest entries
    {group: {"alpha": a or None, "error": e, "error_rtn": e0}}."""
    report = {}
    H, Hkv, d = model.H, model.Hkv, model.d
    for i, L in enumerate(model.layers):
        at, mlp = L.self_attn, L.mlp

        key = f"layers.{i}.qkv"
        w = torch.cat([at.q_proj.weight, at.k_proj.weight, at.v_proj.weight], 0)
        a, s, errs = search_alpha(cal.samples[key], w, cal.act_max[key], group_size, grid)
        if s is not None:
            L.input_layernorm.div_(s)
            for lin in (at.q_proj, at.k_proj, at.v_proj):
                lin.weight.mul_(s)
        report[key] = _entry(a, errs)

        key = f"layers.{i}.o"
        a, s, errs = search_alpha(cal.samples[key], at.o_proj.weight, cal.act_max[key], group_size, grid,
                                  tie=_gqa_tie(H, Hkv, d))
        if s is not None:
            s_kv = s.view(Hkv, H // Hkv, d)[:, 0, :].reshape(-1)  # (Hkv * d,) one per v output row
            at.v_proj.weight.div_(s_kv[:, None])
            if at.v_proj.bias is not None:
                at.v_proj.bias.div_(s_kv)
            at.o_proj.weight.mul_(s)
        report[key] = _entry(a, errs)

        key = f"layers.{i}.gate_up"
        w = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], 0)
        a, s, errs = search_alpha(cal.samples[key], w, cal.act_max[key], group_size, grid)
        if s is not None:
            L.post_attention_layernorm.div_(s)
            mlp.gate_proj.weight.mul_(s)
            mlp.up_proj.weight.mul_(s)
        report[key] = _entry(a, errs)

        key = f"layers.{i}.down"
        a, s, errs = search_alpha(cal.samples[key], mlp.down_proj.weight, cal.act_max[key], group_size, grid)
        if s is not None:
            mlp.up_proj.weight.div_(s[:, None])
            mlp.down_proj.weight.mul_(s)
        report[key] = _entry(a, errs)
    return report


def _entry(a, errs) -> dict:
    best = errs["none"] if a is None else errs[str(a)]
    return {"alpha": a, "error": best, "error_rtn": errs["none"]}
