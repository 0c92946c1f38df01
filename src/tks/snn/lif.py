"""The leaky integrate-and-fire neuron of the TKS paper (Eq. 2), stated once: the step function and its loop.

Per step t, with input current I_t, time constant tau, threshold V_th and hard reset to 0 (docs/reference.md §1.1):

    H_t = V_{t-1} + (I_t - V_{t-1}) / tau   [= (1 - 1/tau) V_{t-1} + I_t / tau]   (charge; input divided by tau)
    S_t = H(H_t - V_th)                                                         (fire; strict ">")
    V_t = H_t (1 - S_t)                                                         (hard reset; S_t detached by default)

with V_0 = 0. The backward pass replaces dS_t/dH_t by the surrogate's g'(H_t - V_th) (``tks.snn.surrogate``).

``lif_step`` is the definition: ``lif_reference`` loops it over time, and the ``autograd`` backend of
``tks.snn.backends`` is that loop under plain autograd. The fused kernels (``backends/lif_cpu.c``,
``backends/triton_lif.py``) compute the same equations in the same operation order in one pass over memory each
way; with the reset detached (the official setting) they equal autograd through this loop bit for bit in
float32 and float64. Changing the dynamics means changing ``lif_step`` and those two kernels.

Backpropagation through time, as the kernels run it (G_t: the gradient reaching V_t from step t + 1, G_T = 0):

    dL/dH_t = dL/dS_t g'(H_t - V_th) + G_t dV_t/dH_t
    dV_t/dH_t = 1 - S_t  (reset detached),   1 - S_t - H_t g'(H_t - V_th)  (reset not detached)
    dL/dI_t = dL/dH_t / tau,    G_{t-1} = dL/dH_t - dL/dH_t / tau
"""

from __future__ import annotations

import torch
from torch import Tensor

from tks.errors import TKSError
from tks.snn.surrogate import Surrogate, spike


class NeuronError(TKSError, ValueError):
    """A neuron setting out of range, or an engine that cannot run here."""


def check_lif_parameters(tau: float, v_threshold: float) -> None:
    """The one range check of the LIF parameters.

    Raises:
        NeuronError: unless tau > 1 (so that the leak 1 - 1/tau is positive) and v_threshold > 0.
    """
    if not tau > 1.0:
        raise NeuronError(f"LIF tau must be > 1 (the leak is 1 - 1/tau), got {tau}")
    if not v_threshold > 0.0:
        raise NeuronError(f"LIF v_threshold must be > 0, got {v_threshold}")


def lif_step(
    v: Tensor,
    x: Tensor,
    *,
    tau: float,
    v_threshold: float,
    surrogate: Surrogate,
    detach_reset: bool = True,
) -> tuple[Tensor, Tensor]:
    """One LIF step: the definition every backend computes.

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
    h = v + (x - v) / tau  # this operation order is the official code's, and the kernels'
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
    if x_seq.shape[0] == 0:  # no steps: empty outputs, still in the autograd graph
        return x_seq.clone(), x_seq.clone()
    v = torch.zeros_like(x_seq[0])
    spikes, membrane = [], []
    for x in x_seq:
        s, v = lif_step(v, x, tau=tau, v_threshold=v_threshold, surrogate=surrogate, detach_reset=detach_reset)
        spikes.append(s)
        membrane.append(v)
    return torch.stack(spikes), torch.stack(membrane)
