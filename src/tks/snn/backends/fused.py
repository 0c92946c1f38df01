"""Backends ``cpu_kernel`` and ``triton``: the fused multi-step LIF as two ``torch.library`` custom operators.

``tks::lif_forward`` runs all T steps in one pass and keeps only the pre-spike membrane H (one tensor of the
input's size) for ``tks::lif_backward``, which runs backpropagation through time in one pass backwards (the
equations are in ``tks.snn.lif``). Under ``torch.compile`` each operator is one opaque node with a registered fake
implementation (the compiler sees into neither ctypes nor the Triton launches); without compile each costs one
dispatch. The operators do their work in the kernel module of the tensors' device: ``cpu_kernel`` (C) for CPU
tensors, ``triton_lif`` for CUDA tensors; ``tks.snn.backends.choose_backend`` sends them only tensors those
kernels compute.

No ``from __future__ import annotations`` here: torch 2.4's ``custom_op`` reads the operators' schemas from real
type objects, not from strings.
"""

from functools import cache
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from tks.snn.backends import cpu_kernel
from tks.snn.backends.layout import time_major_layout
from tks.snn.surrogate import Surrogate


@cache
def triton_kernels() -> ModuleType | None:
    """``tks.snn.backends.triton_lif``, imported on first use so that importing tks never needs triton.

    None without triton (e.g. torch builds without CUDA).
    """
    try:
        from tks.snn.backends import triton_lif
    except ImportError:
        return None
    return triton_lif


def kernels_for(x: Tensor) -> ModuleType:
    """The module whose ``lif_forward`` / ``lif_backward`` compute for ``x``: ``triton_lif`` on CUDA, else C."""
    if x.device.type != "cuda":
        return cpu_kernel
    module = triton_kernels()
    if module is None:  # only reached by calling the operator directly: choose_backend never picks it then
        raise RuntimeError("tks::lif_forward on CUDA tensors needs triton, which cannot be imported here")
    return module


@torch.library.custom_op("tks::lif_forward", mutates_args=())
def lif_forward(
    x_seq: Tensor,
    tau: float,
    v_threshold: float,
    surrogate: str,
    alpha: float,
    detach_reset: bool,
    keep_membrane: bool,
) -> tuple[Tensor, Tensor]:
    """Spikes ``[T, ...]`` and the pre-spike membrane H (empty unless ``keep_membrane``) for inputs ``[T, ...]``.

    ``surrogate`` (a kernel formula name, ``Surrogate.kernel``), ``alpha`` and ``detach_reset`` only shape the
    backward pass (``lif_backward``).
    """
    x = time_major_layout(x_seq)
    return kernels_for(x).lif_forward(x, tau, v_threshold, keep_membrane)


@lif_forward.register_fake
def _(
    x_seq: Tensor, tau: float, v_threshold: float, surrogate: str, alpha: float, detach_reset: bool, keep_membrane: bool
) -> tuple[Tensor, Tensor]:
    x = time_major_layout(x_seq)  # the real outputs' strides, which compiled code downstream relies on
    return torch.empty_like(x), torch.empty_like(x) if keep_membrane else x.new_empty(0)


@torch.library.custom_op("tks::lif_backward", mutates_args=())
def lif_backward(
    grad_spikes: Tensor,
    h_seq: Tensor,
    tau: float,
    v_threshold: float,
    surrogate: str,
    alpha: float,
    detach_reset: bool,
) -> Tensor:
    """Gradient of the inputs ``[T, ...]`` from the spikes' gradient and the saved membrane H."""
    grad = grad_spikes
    if grad.stride() != h_seq.stride() or grad.dtype != h_seq.dtype:
        grad = torch.empty_like(h_seq).copy_(grad_spikes)  # the kernels walk both in the membrane's layout
    return kernels_for(h_seq).lif_backward(grad, h_seq, tau, v_threshold, surrogate, alpha, detach_reset)


@lif_backward.register_fake
def _(
    grad_spikes: Tensor, h_seq: Tensor, tau: float, v_threshold: float, surrogate: str, alpha: float, detach_reset: bool
) -> Tensor:
    return torch.empty_like(h_seq)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    ctx.save_for_backward(output[1])
    ctx.settings = inputs[1:6]  # tau, v_threshold, surrogate, alpha, detach_reset
    ctx.keep_membrane = inputs[6]
    # The membrane output feeds nothing differentiable: without this, autograd fills a zero tensor of the input's
    # size for its gradient at every call (8 full-size fills per vgg_snn step, 2% of it on the CPU).
    ctx.set_materialize_grads(False)


def _backward(ctx: Any, grad_spikes: Tensor | None, grad_membrane: Tensor | None) -> tuple[Tensor | None, ...]:
    (h_seq,) = ctx.saved_tensors
    if not ctx.keep_membrane:
        raise RuntimeError("tks::lif_forward ran with keep_membrane=False, so it cannot be differentiated")
    if grad_spikes is None:  # only the membrane reached the loss: no gradient for the inputs
        return (None,) * 7
    return (lif_backward(grad_spikes, h_seq, *ctx.settings), None, None, None, None, None, None)


lif_forward.register_autograd(_backward, setup_context=_setup_context)


def lif_fused(x_seq: Tensor, tau: float, v_threshold: float, surrogate: Surrogate, detach_reset: bool) -> Tensor:
    """Spikes ``[T, B, ...]`` for input currents ``[T, B, ...]`` through the custom operators.

    ``surrogate.kernel`` must name a formula of the kernels (``choose_backend`` checks it).
    """
    keep_membrane = torch.is_grad_enabled() and x_seq.requires_grad
    spikes, _ = lif_forward(x_seq, tau, v_threshold, surrogate.kernel, surrogate.alpha, detach_reset, keep_membrane)
    return spikes
