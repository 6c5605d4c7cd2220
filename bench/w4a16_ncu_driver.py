"""Driver for ncu: one W4A16 swap-kernel launch on random weights, three calls with a 256 MiB write
between them (cold L2); profile the third with --launch-skip 2 --launch-count 1:
    ncu --kernel-name regex:w4a16_swap --launch-skip 2 --launch-count 1 --section SpeedOfLight \
        --section WarpStateStats --section MemoryWorkloadAnalysis --section Occupancy \
        python bench/w4a16_ncu_driver.py M K N nt wk ks [stream_x 0/1]"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu-backend"))
from edgeserve_pod.kernels import w4a16 as W  # noqa: E402
from edgeserve_pod.kernels import w4a16_mma as MMA  # noqa: E402

m, k, n, nt, wk, ks = (int(v) for v in sys.argv[1:7])
sx = len(sys.argv) > 7 and sys.argv[7] == "1"
q = torch.randint(0, 16, (n, k), device="cuda")
qw = W.pack_int4(q)
s = (torch.rand(k // 128, n, device="cuda") * 0.02 + 1e-3).half()
z = torch.randint(0, 16, (k // 128, n), device="cuda", dtype=torch.uint8)
x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
flush = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
for _ in range(3):
    flush.zero_()
    MMA.swap_matmul(x, qw, s, z, 128, nt, wk, ks, sx)
torch.cuda.synchronize()
