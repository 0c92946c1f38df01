"""A kernel with the shape of the LIF kernels and nothing of theirs: does this Triton's interpreter work here?

A running sum over the T steps of a time-major [T, N] block: one program per BLOCK columns, int64 offsets, a loop
over a runtime number of steps that walks the offsets forward, masked loads and stores. Some Triton and NumPy pairs
cannot interpret this (Triton 3.6 with NumPy 2.5: ``int()`` of a one-element array; Triton 3.1 writes nothing), and
then tests/test_triton_lif.py skips its interpreter tests, saying why, rather than failing on the tool.
"""

import torch
import triton
import triton.language as tl

BLOCK = 16


@triton.jit
def _running_sum_kernel(x_ptr, out_ptr, steps, n, BLOCK: tl.constexpr):
    columns = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = columns < n
    offsets = columns
    total = tl.full([BLOCK], 0.0, tl.float32)
    for _ in range(steps):
        total += tl.load(x_ptr + offsets, mask=in_range, other=0.0)
        tl.store(out_ptr + offsets, total, mask=in_range)
        offsets += n


def running_sum(x: torch.Tensor) -> torch.Tensor:
    """``x.cumsum(0)`` of a contiguous float32 ``[T, N]`` tensor, computed by the kernel."""
    out = torch.empty_like(x)
    steps, n = x.shape
    _running_sum_kernel[(triton.cdiv(n, BLOCK),)](x, out, steps, n, BLOCK=BLOCK)
    return out
