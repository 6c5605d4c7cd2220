"""A straight-line Llama/Qwen2 forward for tests: no KV cache, no paging, no batching; the whole
sequence is recomputed for every generated token. Written apart from the engine (it reads the
safetensors by HF names itself) so that it can catch the engine's mistakes."""

from __future__ import annotations

import glob
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from edgeserve_pod.layers.rotary import inv_frequencies


class ReferenceLlama:
    def __init__(self, folder: str, dtype: torch.dtype = torch.float32):
        with open(os.path.join(folder, "config.json")) as f:
            self.c = json.load(f)
        self.w = {}
        for p in glob.glob(os.path.join(folder, "*.safetensors")):
            self.w.update({k: v.to(dtype) for k, v in load_file(p).items()})
        if "lm_head.weight" not in self.w:
            self.w["lm_head.weight"] = self.w["model.embed_tokens.weight"]
        c = self.c
        self.H, self.Hkv = c["num_attention_heads"], c["num_key_value_heads"]
        self.d = c.get("head_dim") or c["hidden_size"] // self.H
        self.inv = inv_frequencies(self.d, c.get("rope_theta", 10000.0), c.get("rope_scaling"))

    def logits(self, tokens: list[int]) -> torch.Tensor:  # -> (len, V) float32
        c, w, H, Hkv, d = self.c, self.w, self.H, self.Hkv, self.d
        T = len(tokens)
        x = w["model.embed_tokens.weight"][torch.tensor(tokens)]
        ang = torch.outer(torch.arange(T, dtype=torch.float32), self.inv)  # (T, d/2)
        cos, sin = ang.cos(), ang.sin()

        def rope(t):  # (T, heads, d): rotate-half pairs (i, i + d/2)
            a, b = t[..., : d // 2], t[..., d // 2:]
            cs, sn = cos[:, None, :], sin[:, None, :]
            return torch.cat([a * cs - b * sn, b * cs + a * sn], -1)

        def norm(t, g):
            return g * (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + c["rms_norm_eps"]))

        def lin(t, name):
            return F.linear(t, w[name + ".weight"], w.get(name + ".bias"))

        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = norm(x, w[p + "input_layernorm.weight"])
            q = rope(lin(h, p + "self_attn.q_proj").view(T, H, d))
            k = rope(lin(h, p + "self_attn.k_proj").view(T, Hkv, d))
            v = lin(h, p + "self_attn.v_proj").view(T, Hkv, d)
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
            s = torch.einsum("qhd,khd->hqk", q, k) / d ** 0.5
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            o = torch.einsum("hqk,khd->qhd", s.softmax(-1), v).reshape(T, H * d)
            x = x + lin(o, p + "self_attn.o_proj")
            h = norm(x, w[p + "post_attention_layernorm.weight"])
            x = x + lin(F.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        return F.linear(norm(x, w["model.norm.weight"]), w["lm_head.weight"]).float()

    def greedy_argmax(self, prompt: list[int], tokens: list[int]) -> list[int]:
        """Teacher-forced: the argmax after prompt + tokens[:i] for every i, in one forward.
        Equals greedy decoding exactly when it returns `tokens`."""
        logits = self.logits(list(prompt) + list(tokens[:-1]))
        return logits[len(prompt) - 1:].argmax(-1).tolist()

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        toks = list(prompt)
        for _ in range(n):
            toks.append(int(self.logits(toks)[-1].argmax()))
        return toks[len(prompt):]
