"""Writes an HF-layout model folder (config.json + one model.safetensors), the form
`models/loader.py` and transformers both load."""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file


def save_hf_folder(out_dir: str, tensors: dict[str, torch.Tensor], config: dict) -> str:
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return out_dir
