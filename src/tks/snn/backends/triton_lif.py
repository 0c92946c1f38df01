"""Backend ``triton``: the fused multi-step LIF for CUDA tensors in Triton, one kernel launch per direction.

The custom operators of ``fused.py`` call ``lif_forward`` / ``lif_backward`` here for CUDA tensors (the rule is
``tks.snn.backends.choose_backend``), and import this module only then, so importing tks never needs triton. The
equations are those of ``tks.snn.lif``, in the operation order of the C kernel (``lif_cpu.c``).

Launch layout. The input is read as a dense block [T, N], where N is every element of one step (B x C x H x W in
whatever order memory holds them: contiguous and channels-last activations qualify without a copy, see
``layout.flat_time_major``). The grid is one axis of ``cdiv(N, BLOCK)`` programs with ``BLOCK = 1024`` and 4 warps;
each program owns BLOCK consecutive elements of N and loops over the T steps itself, forwards in time in the forward
kernel and backwards in the backward kernel. Why this shape:

* The recurrence runs along T while the elements are independent, so the parallelism is over N and time is a
  sequential loop inside each program. The state (the membrane V in the forward pass, the gradient G_t carried to
  the previous step in the backward pass) stays in registers: each tensor is read once and written once, where a
  PyTorch loop over T (the autograd backend) launches several kernels per step and sends V through memory at each.
* At every step a program touches 1024 consecutive elements, so its loads and stores coalesce; with 4 warps
  (128 threads) each thread handles 8 elements, i.e. one 16-byte access per tensor for bfloat16/float16 and two for
  float32 (when N is a multiple of 16, which Triton detects at launch; otherwise the accesses are narrower).
* A fixed block keeps one compiled kernel per dtype and flag combination. A layer with N below BLOCK times the
  number of multiprocessors (about 135,000 elements on a 132-SM H200) does not fill the GPU and is bound by memory
  latency, a few microseconds per step. The block size is reasoned, not yet tuned on hardware.

Precision. float32, bfloat16 and float16 tensors; the arithmetic is float32 and the state carried between steps
(membrane and gradient) stays float32, while the outputs (spikes, H, input gradient) are stored in the input's dtype,
rounded to nearest even. A spike is decided on the stored H, the value the backward pass will read, so both passes
agree on which steps fired and reset. (The CPU kernel instead carries the stored bfloat16 H on to the next step,
so the two differ slightly in bfloat16.) Divisions are IEEE-rounded (``div_rn``) and multiply-adds are not fused
(``enable_fp_fusion=False``), so in float32 the kernels compute exactly what separate PyTorch ops compute.

Under ``TRITON_INTERPRET=1`` (set before this module is imported) the kernels run on CPU tensors in Triton's
interpreter, which is how the tests check them without a GPU. The kernels call only Triton builtins (``tl.full``,
not ``tl.zeros``, which is itself a jit function fixed in the mode of the process's first ``import triton``), so
that the tests can interpret a copy of this module inside a process whose Triton is in compiled mode.

No ``from __future__ import annotations``: Triton's interpreter before 3.8 recognises a ``tl.constexpr``
parameter by its annotation object, not by the string ``"tl.constexpr"``.
"""

import contextlib
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from tks.snn.backends.layout import flat_time_major

BLOCK = 1024
# 4 warps: 8 elements per thread (module docstring); no fused multiply-adds, which would round differently from
# separate PyTorch ops (the autograd backend, the C kernel).
COMPILE_OPTIONS = {"num_warps": 4, "enable_fp_fusion": False}
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SURROGATES = ("piecewise_quadratic", "atan")


@triton.jit
def _store_as(value, dtype: tl.constexpr):
    """A float32 block rounded to nearest even in ``dtype`` (bfloat16, float16 or float32)."""
    if dtype == tl.bfloat16:
        # Triton's interpreter truncates float32 -> bfloat16 where GPUs round to nearest even. Rounding the bits here
        # (as the CPU kernel's f32_to_bf16 does) leaves the cast exact, so the interpreter tests pin the GPU's numbers.
        bits = value.to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        value = tl.where(value == value, bits.to(tl.float32, bitcast=True), value)  # NaN stays NaN
    return value.to(dtype)


@triton.jit
def _lif_forward_kernel(
    x_ptr,
    spikes_ptr,
    h_ptr,
    steps,
    n,
    tau,
    v_threshold,
    STORE_MEMBRANE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    dtype = x_ptr.dtype.element_ty
    columns = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # int64: T x N may pass 2^31
    in_range = columns < n
    offsets = columns
    v = tl.full([BLOCK], 0.0, tl.float32)  # V_0 = 0
    for _ in range(steps):
        x = tl.load(x_ptr + offsets, mask=in_range, other=0.0).to(tl.float32)
        h = v + tl.math.div_rn(x - v, tau)  # V + (I - V) / tau, the operation order of lif_step
        h_stored = _store_as(h, dtype)
        fired = h_stored.to(tl.float32) > v_threshold  # on the stored H, as the backward pass will see it
        tl.store(spikes_ptr + offsets, _store_as(tl.where(fired, 1.0, 0.0), dtype), mask=in_range)
        if STORE_MEMBRANE:
            tl.store(h_ptr + offsets, h_stored, mask=in_range)
        v = tl.where(fired, 0.0, h)  # hard reset; otherwise the unrounded float32 membrane carries on
        offsets += n


@triton.jit
def _lif_backward_kernel(
    grad_spikes_ptr,
    h_ptr,
    grad_x_ptr,
    steps,
    n,
    last_step_offset,
    tau,
    v_threshold,
    alpha,
    alpha_squared,
    half_alpha,
    atan_scale,
    SURROGATE: tl.constexpr,
    DETACH_RESET: tl.constexpr,
    BLOCK: tl.constexpr,
):
    dtype = grad_x_ptr.dtype.element_ty
    columns = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = columns < n
    offsets = columns + last_step_offset  # start at t = T - 1 and walk back
    carry = tl.full([BLOCK], 0.0, tl.float32)  # G_t, what V_t receives from step t + 1; G_T = 0
    for _ in range(steps):
        h = tl.load(h_ptr + offsets, mask=in_range, other=0.0).to(tl.float32)
        grad_spikes = tl.load(grad_spikes_ptr + offsets, mask=in_range, other=0.0).to(tl.float32)
        # g'(H - V_th) in the operation order of tks.snn.surrogate (constants rounded to float32 as PyTorch does)
        if SURROGATE == "atan":
            z = atan_scale * (h - v_threshold)
            surrogate_grad = tl.math.div_rn(1.0, 1.0 + z * z) * half_alpha  # as PyTorch: reciprocal, then times alpha/2
        else:
            surrogate_grad = alpha - alpha_squared * tl.abs(h - v_threshold)
            surrogate_grad = tl.maximum(surrogate_grad, 0.0, propagate_nan=tl.PropagateNan.ALL)  # clamp_min(0)
        dv_dh = tl.where(h <= v_threshold, 1.0, 0.0)
        if not DETACH_RESET:
            dv_dh = dv_dh - h * surrogate_grad
        grad_h = grad_spikes * surrogate_grad + carry * dv_dh
        grad_x = tl.math.div_rn(grad_h, tau)
        tl.store(grad_x_ptr + offsets, _store_as(grad_x, dtype), mask=in_range)
        carry = grad_h - grad_x  # dH_{t+1}/dV_t = 1 - 1/tau
        offsets -= n


def _on_device(x: Tensor) -> contextlib.AbstractContextManager[object]:
    # Triton launches on the current CUDA device, which need not be the tensor's (a model moved to cuda:1 without
    # torch.cuda.set_device). CPU tensors only reach here under the interpreter.
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _check(x: Tensor, name: str) -> None:
    if x.dtype not in DTYPES:
        raise TypeError(f"triton LIF: {name} must be one of {DTYPES}, got {x.dtype}")
    if x.dim() == 0 or not flat_time_major(x):
        raise ValueError(
            f"triton LIF: {name} must be a dense [T, N] block (contiguous or channels-last), got shape "
            f"{tuple(x.shape)} with strides {x.stride()}; make it contiguous first"
        )


def lif_forward(x_seq: Tensor, tau: float, v_threshold: float, keep_membrane: bool) -> tuple[Tensor, Tensor]:
    """Spikes and the pre-spike membrane H of the multi-step LIF, in one kernel launch.

    Args:
        x_seq: input currents ``[T, ...]``, float32, bfloat16 or float16, laid out as a dense ``[T, N]`` block
            (contiguous or channels-last; ``tks.snn.backends.layout.time_major_layout`` makes other tensors so).
        tau: membrane time constant.
        v_threshold: firing threshold; a step fires when H_t > v_threshold.
        keep_membrane: also return H (needed for the backward pass); otherwise an empty tensor is returned.

    Returns:
        ``(spikes, h_seq)``, both ``[T, ...]`` with the dtype and strides of ``x_seq``; ``h_seq`` is empty unless
        ``keep_membrane``.
    """
    _check(x_seq, "x_seq")
    spikes = torch.empty_like(x_seq)
    h_seq = torch.empty_like(x_seq) if keep_membrane else x_seq.new_empty(0)
    if x_seq.numel() == 0:
        return spikes, h_seq
    steps = x_seq.shape[0]
    n = x_seq.numel() // steps
    with _on_device(x_seq):
        _lif_forward_kernel[(triton.cdiv(n, BLOCK),)](
            x_seq,
            spikes,
            h_seq if keep_membrane else spikes,  # never written when STORE_MEMBRANE is off
            steps,
            n,
            float(tau),
            float(v_threshold),
            STORE_MEMBRANE=keep_membrane,
            BLOCK=BLOCK,
            **COMPILE_OPTIONS,
        )
    return spikes, h_seq


def lif_backward(
    grad_spikes: Tensor,
    h_seq: Tensor,
    tau: float,
    v_threshold: float,
    surrogate: str,
    alpha: float,
    detach_reset: bool,
) -> Tensor:
    """Gradient of the inputs by backpropagation through time, in one kernel launch.

    Args:
        grad_spikes: gradient of the spikes ``[T, ...]``, same strides as ``h_seq`` (any of the three dtypes).
        h_seq: the pre-spike membrane H saved by ``lif_forward``, ``[T, ...]``.
        tau: membrane time constant.
        v_threshold: firing threshold.
        surrogate: ``"piecewise_quadratic"`` or ``"atan"``, with the derivatives of ``tks.snn.surrogate``.
        alpha: the surrogate's shape parameter.
        detach_reset: no gradient through the reset term.

    Returns:
        The gradient of the input currents, ``[T, ...]`` with the dtype and strides of ``h_seq``.
    """
    _check(h_seq, "h_seq")
    _check(grad_spikes, "grad_spikes")
    if grad_spikes.shape != h_seq.shape or grad_spikes.stride() != h_seq.stride():
        raise ValueError(
            "triton LIF: grad_spikes must have the shape and strides of h_seq, got "
            f"{tuple(grad_spikes.shape)}/{grad_spikes.stride()} and {tuple(h_seq.shape)}/{h_seq.stride()}"
        )
    if surrogate not in SURROGATES:
        raise ValueError(f"triton LIF: unknown surrogate {surrogate!r}; choose one of {SURROGATES}")
    grad_x = torch.empty_like(h_seq)
    if h_seq.numel() == 0:
        return grad_x
    steps = h_seq.shape[0]
    n = h_seq.numel() // steps
    with _on_device(h_seq):
        _lif_backward_kernel[(triton.cdiv(n, BLOCK),)](
            grad_spikes,
            h_seq,
            grad_x,
            steps,
            n,
            (steps - 1) * n,  # a Python int: Triton passes it as int64 when it needs to
            float(tau),
            float(v_threshold),
            # The surrogates' constants are computed in float64 here, as Python computes them before PyTorch
            # rounds each to float32 (e.g. alpha * alpha in PiecewiseQuadratic.derivative).
            float(alpha),
            float(alpha * alpha),
            float(alpha / 2.0),
            float(math.pi / 2.0 * alpha),
            SURROGATE=surrogate,
            DETACH_RESET=detach_reset,
            BLOCK=BLOCK,
            **COMPILE_OPTIONS,
        )
    return grad_x
