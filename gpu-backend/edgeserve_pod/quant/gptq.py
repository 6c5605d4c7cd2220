"""Error-compensated rounding (GPTQ, Frantar et al. 2022) into the same 4-bit group format as rtn.py:
an optional last step after smoothing, instead of round-to-nearest.

Columns (input channels) are rounded one at a time, left to right; the rounding error of column j
is spread over the not-yet-rounded columns through the inverse Hessian H = X^T X of the layer's
input (calibrate.py's Gram matrix, after smoothing), so that the layer output, not the weight,
stays close. Each group's scale and zero point are set by rtn's rule (with its clip ratio, if any)
from the group's weights as they stand when its first column is reached. Dampening: 1% of the mean
diagonal, as in the paper.

act_order (AutoGPTQ's desc_act with static_groups): every group's scale and zero point are fixed up
front by rtn's rule from the weights as given (input order, before any error is spread), so the
group layout, the checkpoint format and the W4A16 kernel are unchanged; the columns are then
rounded in descending order of the Hessian diagonal (the channels with the most input energy
first, while the most columns are left to absorb their error), the error spread through the
inverse Hessian of the permuted problem, and the codes put back in input order.
Channels never active (zero diagonal) are set to 0 before anything else, in both orders.
"""

from __future__ import annotations

import torch

from edgeserve_pod.kernels.w4a16 import pack_int4
from edgeserve_pod.quant.rtn import QMAX, QuantizedWeight, _quantize_grouped

BLOCK = 128  # columns per lazy-update block


@torch.no_grad()
def gptq_codes(w: torch.Tensor, gram: torch.Tensor, group_size: int, clip: torch.Tensor | None = None,
               damp: float = 0.01, act_order: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w (N, K), gram (K, K) -> codes (N, K) uint8, scales (N, ng) float16, zeros (N, ng) uint8,
    all in input order (act_order only changes the order the columns are rounded in)."""
    n, k = w.shape
    w = w.to(torch.float32).clone()
    h = gram.to(torch.float64).clone()
    dead = torch.diag(h) == 0  # channels never active: any value is exact
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.diag(h).mean() * torch.eye(k, dtype=torch.float64)
    ng = -(-k // group_size)
    group = torch.arange(k) // group_size  # group of each column, in the order it is rounded
    if act_order:  # static groups from the unrounded weights in input order, then permute the problem
        _, scales, zeros = _quantize_grouped(w, group_size, clip)
        perm = torch.argsort(torch.diag(h), descending=True, stable=True)
        w, h, group = w[:, perm], h[perm][:, perm], group[perm]
    else:
        scales = torch.zeros(n, ng)
        zeros = torch.zeros(n, ng)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).to(torch.float32)
    codes = torch.zeros(n, k, dtype=torch.uint8)
    for b0 in range(0, k, BLOCK):  # lazy batch updates: within a block column by column, then one GEMM
        b1 = min(b0 + BLOCK, k)
        wb = w[:, b0:b1].clone()
        eb = torch.zeros_like(wb)
        ub = u[b0:b1, b0:b1]
        for i in range(b1 - b0):
            j = b0 + i
            gi = int(group[j])
            if not act_order and j % group_size == 0:  # group params from the group's weights as updated so far
                c = None if clip is None else clip[:, gi:gi + 1]
                grp = torch.cat([wb[:, i:], w[:, b1:j + group_size]], 1) if j + group_size > b1 else wb[:, i:i + group_size]
                _, sg, zg = _quantize_grouped(grp, group_size, c)
                scales[:, gi], zeros[:, gi] = sg[:, 0], zg[:, 0]
            s, z = scales[:, gi], zeros[:, gi]
            q = torch.clamp(torch.round(wb[:, i] / s) + z, 0, QMAX)
            codes[:, j] = q.to(torch.uint8)
            err = (wb[:, i] - (q - z) * s) / ub[i, i]
            wb[:, i + 1:] -= err[:, None] * ub[i, i + 1:][None, :]
            eb[:, i] = err
        w[:, b1:] -= eb @ u[b0:b1, b1:]
    if act_order:
        codes = codes[:, torch.argsort(perm)]
    return codes, scales.to(torch.float16), zeros.to(torch.uint8)


def quantize_gptq_group(ws: list[torch.Tensor], gram: torch.Tensor, group_size: int = 128,
                        clips: list[torch.Tensor | None] | None = None, act_order: bool = False) -> list[QuantizedWeight]:
    """Weights that share one input (q/k/v, gate/up) in one pass: rows are independent given the
    Gram matrix, so stacking them is exact and costs one column loop instead of several."""
    w = torch.cat(ws, 0)
    clip = None
    if clips is not None and any(c is not None for c in clips):
        ng = -(-w.shape[1] // group_size)
        clip = torch.cat([torch.ones(x.shape[0], ng) if c is None else c for x, c in zip(ws, clips)], 0)
    codes, s, z = gptq_codes(w, gram, group_size, clip, act_order=act_order)
    out, r = [], 0
    for x in ws:
        sl = slice(r, r + x.shape[0])
        out.append(QuantizedWeight(pack_int4(codes[sl]), s[sl].t().contiguous(), z[sl].t().contiguous(), group_size,
                                   w.shape[1]))
        r += x.shape[0]
    return out


def quantize_gptq(w: torch.Tensor, gram: torch.Tensor, group_size: int = 128,
                  clip: torch.Tensor | None = None, act_order: bool = False) -> QuantizedWeight:
    return quantize_gptq_group([w], gram, group_size, [clip], act_order)[0]


def gptq_fake(w: torch.Tensor, gram: torch.Tensor, group_size: int, clip: torch.Tensor | None = None,
              act_order: bool = False) -> torch.Tensor:
    """The dequantized GPTQ weight (N, K) float32."""
    codes, s, z = gptq_codes(w, gram, group_size, clip, act_order=act_order)
    g = torch.arange(w.shape[1]) // group_size
    return (codes.to(torch.float32) - z.to(torch.float32)[:, g]) * s.to(torch.float32)[:, g]
