"""The memory layout both fused LIF kernels compute on: a dense ``[T, N]`` block, whatever the element order.

Its own module, below ``fused`` (the custom operators) and ``triton_lif`` (the CUDA kernels), so that each of
them can use it without importing the other.
"""

from torch import Tensor


def flat_time_major(x: Tensor) -> bool:
    """True when memory holds x as a dense [T, N] block in some element order (contiguous or channels-last).

    The kernels treat every element alike, so only two things matter: T is the outermost dimension and each
    step's slab is dense. Outputs made with ``empty_like`` then share the layout, and nothing is copied.
    """
    if x.numel() == 0:  # nothing to read (and PyTorch gives empty tensors arbitrary strides)
        return True
    steps = x.shape[0]
    if steps > 1 and x.stride(0) != x.numel() // steps:
        return False
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(x.shape[1:], x.stride()[1:], strict=True) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def time_major_layout(x: Tensor) -> Tensor:
    """The input itself when it is a dense [T, N] block (``flat_time_major``), else a contiguous copy.

    Both kernels run on this tensor and write their outputs with ``empty_like`` of it, so the outputs' strides do
    not depend on the device and ``register_fake`` can state them.
    """
    return x if flat_time_major(x) else x.contiguous()
