"""Compile the sparse-attention kernels for sm_90 on any host (no GPU needed) and print what the
compiler made of them: shared memory, registers and spills (ptxas -v), wgmma count, whether
Triton's Hopper warp specialization applied, and how many K/V buffers the pipeliner allocated.

    python bench/sparse_compile_sm90.py            # fp8/bf16 decode configs

A variant that fails to compile prints FAILED (Triton 3.6's Hopper warp-specialization pass rejects
some kernel shapes). No timing: that needs the GPU (bench/sparse_attention.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu-backend"))
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from edgeserve_pod.kernels import paged_attention as pa  # noqa: E402

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def build(kernel, ptr_types: dict, constexprs: dict, num_warps: int, num_stages: int) -> str:
    sig = {n: ptr_types.get(n, "i32") for n in kernel.arg_names}
    sig.update({n: "constexpr" for n in constexprs})
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names)
               if n.startswith("stride") or ptr_types.get(n, "").startswith("*")}
    k = triton.compile(ASTSource(kernel, sig, constexprs, aligned), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": num_warps, "num_stages": num_stages})
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(k.asm["ptx"])
        r = subprocess.run([PTXAS, "-v", "--gpu-name=sm_90a", ptx, "-o", os.path.join(tmp, "k.cubin")],
                           capture_output=True, text=True)
    regs = re.search(r"Used (\d+) registers", r.stderr)
    stack = re.search(r"(\d+) bytes cumulative stack", r.stderr)
    ir = k.asm["ttgir"]
    bufs = sorted(set(re.findall(r"local_alloc : \(\) -> !ttg.memdesc<(\d+)x\d+x\d+x(?:bf16|f16|f8E4M3FN)", ir)))
    return (f"smem {k.metadata.shared:6d} B, {regs.group(1) if regs else '?'} regs, stack {stack.group(1) if stack else 0} B, "
            f"wgmma {ir.count('ttng.warp_group_dot ')}, warp-specialized {'ttg.warp_specialize' in ir}, "
            f"K/V buffers {'/'.join(bufs) or '-'}")


def main():
    print("# paged_decode split kernel, GQA 32/8, page 16 (kv dtype, block_n, warps, stages)")
    for fp8, bn, w, s in [(False, 128, 4, 2), (True, 128, 4, 3), (True, 128, 4, 5), (True, 128, 8, 5),
                          (True, 64, 8, 6), (True, 64, 4, 6), (True, 256, 8, 5)]:
        kv = "*fp8e4nv" if fp8 else "*bf16"
        ptrs = {"Q": "*bf16", "K": kv, "V": kv, "BlockTable": "*i32", "ContextLens": "*i32", "PageIdx": "*i32",
                "NumSel": "*i32", "KScale": "*fp32", "VScale": "*fp32", "Mid_M": "*fp32", "Mid_L": "*fp32",
                "Mid_O": "*fp32", "sm_scale": "fp32"}
        const = {"GROUP": 4, "GROUP_PAD": 16, "HEAD_DIM": 128, "BLOCK_SIZE": 16, "BLOCK_N": bn, "SELECT": False,
                 "IS_FP8": fp8, "DOT_T": tl.float16 if fp8 else tl.bfloat16}
        try:
            print(f"  {('fp8' if fp8 else 'bf16', bn, w, s)}: {build(pa._decode_split_kernel, ptrs, const, w, s)}",
                  flush=True)
        except Exception as e:
            print(f"  {('fp8' if fp8 else 'bf16', bn, w, s)}: FAILED {repr(e)[:120]}", flush=True)


if __name__ == "__main__":
    main()
