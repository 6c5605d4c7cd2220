"""Kernel tests run on CPU through the Triton interpreter (CI has no GPU); on a GPU they run
natively. The interpreter switch must be set before triton is imported."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
