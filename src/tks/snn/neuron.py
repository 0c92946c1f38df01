"""Leaky integrate-and-fire neuron of the TKS paper (Eq. 2), stateless and multi-step.

Per step t, with input current I_t, time constant tau, threshold V_th and hard reset to 0 (docs/reference.md §1.1):

    H_t = V_{t-1} + (I_t - V_{t-1}) / tau   [= (1 - 1/tau) V_{t-1} + I_t / tau]   (charge; input divided by tau)
    S_t = H(H_t - V_th)                                                         (fire; strict ">")
    V_t = H_t (1 - S_t)                                                         (hard reset; S_t detached by default)

with V_0 = 0. The membrane lives inside one forward call over all T steps, so there is no state to reset between
batches and the same input always gives the same output.

Two engines compute the same thing behind ``make_neuron``:

* ``"tks"``: ``LIF``, one autograd node over all T steps that saves only the pre-spike membrane H (one tensor of the
  input's size) and runs backpropagation through time in its own backward.
* ``"spikingjelly"``: SpikingJelly 2.x ``LIFNode`` in multi-step mode, reset inside every forward.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache, partial
from types import ModuleType
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tks.snn.kernels import SUFFIXES, load_lif_kernel
from tks.snn.surrogate import SURROGATES, Surrogate, make_surrogate, spike

NeuronFactory = Callable[[], nn.Module]
"""A zero-argument callable that builds one spiking-neuron module ``[T, B, ...] -> [T, B, ...]``."""

Engine = Literal["tks", "spikingjelly"]


def lif_step(
    v: Tensor,
    x: Tensor,
    *,
    tau: float,
    v_threshold: float,
    surrogate: Surrogate,
    detach_reset: bool = True,
) -> tuple[Tensor, Tensor]:
    """One LIF step by plain autograd: the readable reference the fused engine is tested against.

    Args:
        v: membrane after the previous step, ``[B, ...]``.
        x: input current at this step, ``[B, ...]``.
        tau: membrane time constant (> 1 for a leak; 2.0 in the official code, the paper gives no value).
        v_threshold: firing threshold (0.5 in the official code).
        surrogate: backward shape of the spike function.
        detach_reset: stop the gradient through the reset term (official: True).

    Returns:
        ``(spike, v_next)``, both ``[B, ...]``.
    """
    h = v + (x - v) / tau
    s = spike(h - v_threshold, surrogate)
    v_next = h * (1.0 - (s.detach() if detach_reset else s))
    return s, v_next


def lif_reference(
    x_seq: Tensor,
    *,
    tau: float = 2.0,
    v_threshold: float = 0.5,
    surrogate: Surrogate,
    detach_reset: bool = True,
) -> tuple[Tensor, Tensor]:
    """Loop ``lif_step`` over time from V_0 = 0.

    Args:
        x_seq: input currents ``[T, B, ...]``.
        tau: membrane time constant.
        v_threshold: firing threshold.
        surrogate: backward shape of the spike function.
        detach_reset: stop the gradient through the reset term.

    Returns:
        ``(spikes, membrane)``: both ``[T, B, ...]``; ``membrane[t]`` is V_t after the reset.
    """
    v = torch.zeros_like(x_seq[0])
    spikes, membrane = [], []
    for x in x_seq:
        s, v = lif_step(v, x, tau=tau, v_threshold=v_threshold, surrogate=surrogate, detach_reset=detach_reset)
        spikes.append(s)
        membrane.append(v)
    return torch.stack(spikes), torch.stack(membrane)


SURROGATE_CODES = {"piecewise_quadratic": 0, "atan": 1}  # as lif_cpu.c numbers them

Backend = Literal["cpu_kernel", "triton", "eager"]


@cache
def _triton_lif() -> ModuleType | None:
    """``tks.snn.triton_lif``, imported on first use so that importing tks never needs triton; None without it."""
    if os.environ.get("TKS_LIF_KERNEL", "1") == "0":
        return None
    try:
        from tks.snn import triton_lif
    except ImportError:  # no triton (e.g. torch builds without CUDA): the eager path runs
        return None
    return triton_lif


def lif_backend(x: Tensor) -> Backend:
    """Which implementation of ``tks::lif_forward`` / ``tks::lif_backward`` runs for ``x``: the one rule.

    * ``"cpu_kernel"``: CPU tensors of float32, float64 or bfloat16, when the C kernel of ``tks.snn.kernels`` builds.
    * ``"triton"``: CUDA tensors of float32, bfloat16 or float16, when triton imports (``tks.snn.triton_lif``).
    * ``"eager"``: everything else, in PyTorch ops with a loop over T: other devices and dtypes, empty tensors, no C
      compiler or no triton, and every tensor when the environment sets ``TKS_LIF_KERNEL=0``.

    All three compute the module docstring's equations in the same operation order; they differ only in how
    lower-precision dtypes round (see each kernel's documentation).
    """
    if x.numel() == 0:
        return "eager"
    if x.device.type == "cpu":
        return "cpu_kernel" if x.dtype in SUFFIXES and load_lif_kernel() is not None else "eager"
    if x.device.type == "cuda":
        triton_lif = _triton_lif()
        return "triton" if triton_lif is not None and x.dtype in triton_lif.DTYPES else "eager"
    return "eager"


def _cpu_kernel(dtype: torch.dtype) -> tuple[Callable[..., None], Callable[..., None]]:
    """The compiled (forward, backward) pair for ``dtype``, where ``lif_backend`` chose ``"cpu_kernel"``."""
    library = load_lif_kernel()
    suffix = SUFFIXES[dtype]
    return getattr(library, f"lif_forward_{suffix}"), getattr(library, f"lif_backward_{suffix}")


def _flat_time_major(x: Tensor) -> bool:
    """True when memory holds x as a dense [T, N] block in some element order (contiguous or channels-last).

    The kernel treats every element alike, so only two things matter: T is the outermost dimension and each step's
    slab is dense. Outputs made with ``empty_like`` then share the layout, and nothing is copied.
    """
    steps = x.shape[0]
    if steps > 1 and x.stride(0) != x.numel() // steps:
        return False
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(x.shape[1:], x.stride()[1:], strict=True) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _time_major_layout(x: Tensor) -> Tensor:
    """The input itself when it is a dense [T, N] block (``_flat_time_major``), else a contiguous copy.

    Every implementation of ``tks::lif_forward`` runs on this tensor and writes its outputs with ``empty_like`` of
    it, so the outputs' strides do not depend on which implementation ran and ``register_fake`` can state them.
    """
    return x if _flat_time_major(x) else x.contiguous()


def _lif_forward_eager(x_seq: Tensor, tau: float, v_threshold: float) -> tuple[Tensor, Tensor]:
    h_seq = torch.empty_like(x_seq)
    v = torch.zeros_like(x_seq[0])
    for t in range(x_seq.shape[0]):
        h_t = torch.add(v, (x_seq[t] - v) / tau, out=h_seq[t])  # V + (I - V) / tau, the official operation order
        v = h_t.masked_fill(h_t > v_threshold, 0.0)
    return (h_seq > v_threshold).to(x_seq.dtype), h_seq


def _lif_backward_eager(
    grad_spikes: Tensor, h_seq: Tensor, tau: float, v_threshold: float, surrogate: Surrogate, detach_reset: bool
) -> Tensor:
    surrogate_grad = surrogate.derivative(h_seq - v_threshold)
    dv_dh = (h_seq <= v_threshold).to(h_seq.dtype)
    if not detach_reset:
        dv_dh = dv_dh - h_seq * surrogate_grad
    direct = grad_spikes * surrogate_grad  # the path through S_t, for all steps at once
    grad_x = torch.empty_like(h_seq)
    carry = torch.zeros_like(h_seq[0])  # G_t: what V_t receives from step t + 1
    for t in range(h_seq.shape[0] - 1, -1, -1):
        grad_h = direct[t] + carry * dv_dh[t]
        torch.div(grad_h, tau, out=grad_x[t])
        carry = grad_h - grad_h / tau  # dH_{t+1}/dV_t = 1 - 1/tau
    return grad_x


# The multi-step LIF as two custom operators with a registered backward. Under torch.compile each is one opaque
# node (the compiler sees into neither ctypes nor the Triton launches), and without compile they cost one dispatch
# each.
#
# Forward keeps only H (the membrane before firing) for backward; S and the reset mask are recomputed from it.
# Backward, with G_t the gradient arriving at V_t from step t+1 (G_T = 0):
#     dL/dH_t = dL/dS_t * g'(H_t - V_th) + G_t * dV_t/dH_t
#     dV_t/dH_t = 1 - S_t  (reset detached),   1 - S_t - H_t * g'(H_t - V_th)  (reset not detached)
#     dL/dI_t = dL/dH_t / tau,    G_{t-1} = dL/dH_t - dL/dH_t / tau
# The operations and their order are those of the official code and of SpikingJelly's CPU reference, so the engines
# agree bit for bit (except on inputs exactly at threshold, where SpikingJelly fires). Where they run is decided by
# lif_backend: on the CPU (float32, float64, bfloat16) in the compiled kernel of tks.snn.kernels, on CUDA (float32,
# bfloat16, float16) in the Triton kernels of tks.snn.triton_lif, both one pass over memory in each direction;
# elsewhere in PyTorch ops with a loop over T.


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

    ``surrogate``, ``alpha`` and ``detach_reset`` only shape the backward pass (``lif_backward``).
    """
    x = _time_major_layout(x_seq)
    backend = lif_backend(x)
    if backend == "eager":
        spikes, h_seq = _lif_forward_eager(x, tau, v_threshold)
        return spikes, h_seq if keep_membrane else h_seq.new_empty(0)
    if backend == "triton":
        return _triton_lif().lif_forward(x, tau, v_threshold, keep_membrane)
    spikes = torch.empty_like(x)  # same layout as x (dense tensors keep their strides)
    # Inference needs no membrane record: skip writing it (a third of the kernel's memory traffic).
    h_seq = torch.empty_like(x) if keep_membrane else x.new_empty(0)
    steps = x.shape[0]
    _cpu_kernel(x.dtype)[0](
        x.data_ptr(),
        spikes.data_ptr(),
        h_seq.data_ptr() if keep_membrane else None,
        steps,
        x.numel() // steps,
        tau,
        v_threshold,
        torch.get_num_threads(),
    )
    return spikes, h_seq


@lif_forward.register_fake
def _(
    x_seq: Tensor, tau: float, v_threshold: float, surrogate: str, alpha: float, detach_reset: bool, keep_membrane: bool
) -> tuple[Tensor, Tensor]:
    x = _time_major_layout(x_seq)  # the real outputs' strides, which compiled code downstream relies on
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
    backend = lif_backend(h_seq) if surrogate in SURROGATE_CODES else "eager"
    if backend == "eager":
        return _lif_backward_eager(grad_spikes, h_seq, tau, v_threshold, make_surrogate(surrogate, alpha), detach_reset)
    grad = grad_spikes
    if grad.stride() != h_seq.stride() or grad.dtype != h_seq.dtype:
        grad = torch.empty_like(h_seq).copy_(grad_spikes)  # the kernels walk both in the membrane's layout
    if backend == "triton":
        return _triton_lif().lif_backward(grad, h_seq, tau, v_threshold, surrogate, alpha, detach_reset)
    grad_x = torch.empty_like(h_seq)
    steps = h_seq.shape[0]
    _cpu_kernel(h_seq.dtype)[1](
        grad.data_ptr(),
        h_seq.data_ptr(),
        grad_x.data_ptr(),
        steps,
        h_seq.numel() // steps,
        tau,
        v_threshold,
        alpha,
        SURROGATE_CODES[surrogate],
        int(detach_reset),
        torch.get_num_threads(),
    )
    return grad_x


@lif_backward.register_fake
def _(
    grad_spikes: Tensor, h_seq: Tensor, tau: float, v_threshold: float, surrogate: str, alpha: float, detach_reset: bool
) -> Tensor:
    return torch.empty_like(h_seq)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    ctx.save_for_backward(output[1])
    ctx.settings = inputs[1:6]  # tau, v_threshold, surrogate, alpha, detach_reset


def _backward(ctx: Any, grad_spikes: Tensor, grad_membrane: Tensor) -> tuple[Tensor | None, ...]:
    (h_seq,) = ctx.saved_tensors
    if h_seq.numel() == 0:
        raise RuntimeError("tks::lif_forward ran with keep_membrane=False, so it cannot be differentiated")
    return (lif_backward(grad_spikes, h_seq, *ctx.settings), None, None, None, None, None, None)


lif_forward.register_autograd(_backward, setup_context=_setup_context)


class _FusedLIF(torch.autograd.Function):
    """The LIF for a user-defined ``Surrogate``: the same forward operator, the eager backward with its derivative."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x_seq: Tensor,
        tau: float,
        v_threshold: float,
        surrogate: Surrogate,
        detach_reset: bool,
    ) -> Tensor:
        spikes, h_seq = lif_forward(
            x_seq, tau, v_threshold, "piecewise_quadratic", 1.0, detach_reset, ctx.needs_input_grad[0]
        )
        ctx.save_for_backward(h_seq)
        ctx.tau, ctx.v_threshold, ctx.surrogate, ctx.detach_reset = tau, v_threshold, surrogate, detach_reset
        return spikes

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_spikes: Tensor) -> tuple[Tensor | None, ...]:
        (h_seq,) = ctx.saved_tensors
        grad_x = _lif_backward_eager(grad_spikes, h_seq, ctx.tau, ctx.v_threshold, ctx.surrogate, ctx.detach_reset)
        return grad_x, None, None, None, None


class LIF(nn.Module):
    """Multi-step LIF neuron, engine ``"tks"``: input currents ``[T, B, ...]`` to spikes ``[T, B, ...]``.

    Stateless: the membrane starts at 0 in every call. See the module docstring for the equations.

    Args:
        tau: membrane time constant; the input is divided by tau (official 2.0).
        v_threshold: firing threshold (official 0.5).
        surrogate: backward shape of the spike function (official ``PiecewiseQuadratic(alpha=2)``).
        detach_reset: stop the gradient through the reset term (official True).
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 0.5,
        surrogate: Surrogate | None = None,
        detach_reset: bool = True,
    ) -> None:
        super().__init__()
        _check_lif_args(tau, v_threshold)
        self.tau = tau
        self.v_threshold = v_threshold
        self.surrogate = surrogate if surrogate is not None else make_surrogate("piecewise_quadratic", 2.0)
        self.detach_reset = detach_reset

    def forward(self, x_seq: Tensor) -> Tensor:
        """Spikes ``[T, B, ...]`` (same dtype as the input) for input currents ``[T, B, ...]``."""
        sur = self.surrogate
        if type(sur) is not SURROGATES.get(sur.name):  # a user-defined surrogate: only its derivative is known
            return _FusedLIF.apply(x_seq, self.tau, self.v_threshold, sur, self.detach_reset)
        keep_membrane = torch.is_grad_enabled() and x_seq.requires_grad
        spikes, _ = lif_forward(
            x_seq, self.tau, self.v_threshold, sur.name, sur.alpha, self.detach_reset, keep_membrane
        )
        return spikes

    def extra_repr(self) -> str:
        """The neuron's settings, shown by ``print(model)``."""
        return (
            f"tau={self.tau}, v_threshold={self.v_threshold}, surrogate={self.surrogate.name}"
            f"(alpha={self.surrogate.alpha}), detach_reset={self.detach_reset}"
        )


class SpikingJellyLIF(LIF):
    """Engine ``"spikingjelly"``: SpikingJelly 2.x ``LIFNode`` in multi-step mode, made stateless.

    SpikingJelly keeps the membrane on the module between calls; this wrapper resets it before and after every
    forward so that users never call ``reset_net``. ``decay_input=True`` and ``v_reset=0`` give the equations of
    the module docstring. SpikingJelly fires at ``>=`` where the official code fires at ``>``; the two differ only
    on inputs exactly at threshold. Arguments as ``LIF``.
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 0.5,
        surrogate: Surrogate | None = None,
        detach_reset: bool = True,
    ) -> None:
        super().__init__(tau, v_threshold, surrogate, detach_reset)
        # Imported here so that the default engine does not pay for importing SpikingJelly.
        from spikingjelly.activation_based import neuron as sj_neuron
        from spikingjelly.activation_based import surrogate as sj_surrogate

        sj_surrogates = {"piecewise_quadratic": sj_surrogate.PiecewiseQuadratic, "atan": sj_surrogate.ATan}
        self.node = sj_neuron.LIFNode(
            tau=float(tau),
            decay_input=True,
            v_threshold=v_threshold,
            v_reset=0.0,
            surrogate_function=sj_surrogates[self.surrogate.name](alpha=self.surrogate.alpha),
            detach_reset=detach_reset,
            step_mode="m",
        )

    def forward(self, x_seq: Tensor) -> Tensor:
        """Spikes ``[T, B, ...]`` for input currents ``[T, B, ...]``."""
        self.node.reset()
        out = self.node(x_seq)
        self.node.reset()  # drop the last membrane so it holds no graph between calls
        return out


def _check_lif_args(tau: float, v_threshold: float) -> None:
    if not tau > 1.0:
        raise ValueError(f"LIF tau must be > 1 (the leak is 1 - 1/tau), got {tau}")
    if not v_threshold > 0.0:
        raise ValueError(f"LIF v_threshold must be > 0, got {v_threshold}")


ENGINES: dict[str, type[LIF] | type[SpikingJellyLIF]] = {"tks": LIF, "spikingjelly": SpikingJellyLIF}


def make_neuron(
    engine: str = "tks",
    *,
    tau: float = 2.0,
    v_threshold: float = 0.5,
    surrogate: str = "piecewise_quadratic",
    surrogate_alpha: float = 2.0,
    detach_reset: bool = True,
) -> NeuronFactory:
    """The neuron factory every model takes; the defaults are the official TKS/BrainCog neuron.

    Args:
        engine: ``"tks"`` (fused, default) or ``"spikingjelly"``.
        tau: membrane time constant.
        v_threshold: firing threshold.
        surrogate: surrogate-gradient family (``"piecewise_quadratic"`` or ``"atan"``).
        surrogate_alpha: the surrogate's shape parameter.
        detach_reset: stop the gradient through the reset term.

    Returns:
        A zero-argument callable building a fresh neuron module.

    Raises:
        ValueError: for an unknown engine or surrogate, or an invalid parameter.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown neuron engine {engine!r}; choose one of {sorted(ENGINES)}")
    _check_lif_args(tau, v_threshold)
    return partial(
        ENGINES[engine],
        tau=tau,
        v_threshold=v_threshold,
        surrogate=make_surrogate(surrogate, surrogate_alpha),
        detach_reset=detach_reset,
    )
