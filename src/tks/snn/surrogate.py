"""Surrogate gradients for the Heaviside spike function.

A spiking neuron fires S = H(x) with x = V - V_th. H has zero gradient almost everywhere, so training replaces
dS/dx in the backward pass by a smooth bump g'(x) while the forward pass keeps the exact step.

Each surrogate is a small frozen dataclass holding its shape parameter ``alpha`` and giving ``derivative(x)``;
the fused LIF in ``tks.snn.neuron`` calls it inside its own backward, and ``spike`` wraps it as a single autograd op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

SurrogateName = Literal["piecewise_quadratic", "atan"]


class Surrogate(Protocol):
    """What a surrogate provides: a name, its shape parameter and dS/dx."""

    name: str
    alpha: float

    def derivative(self, x: Tensor) -> Tensor:
        """Surrogate of dS/dx evaluated at ``x = V - V_th``, same shape as ``x``."""
        ...


@dataclass(frozen=True)
class PiecewiseQuadratic:
    """Piecewise-quadratic surrogate (Bi-Real shape), the official TKS/BrainCog ``QGateGrad``.

    g'(x) = alpha - alpha^2 |x| for |x| <= 1/alpha, else 0: a triangle of peak ``alpha`` and area 1.
    With alpha = 2 (the official, hard-coded value) this is 2 - 4|x| on |x| <= 0.5 (docs/reference.md §1.2).
    """

    alpha: float = 2.0
    name: str = "piecewise_quadratic"

    def derivative(self, x: Tensor) -> Tensor:
        """Triangle alpha - alpha^2 |x|, clamped at 0 outside |x| <= 1/alpha."""
        return (self.alpha - self.alpha * self.alpha * x.abs()).clamp_min(0.0)


@dataclass(frozen=True)
class ATan:
    """Arctangent surrogate (Fang et al. 2021, SpikingJelly's default family).

    Primitive g(x) = arctan(pi/2 * alpha * x) / pi + 1/2, so g'(x) = alpha / (2 (1 + (pi/2 * alpha * x)^2)).
    """

    alpha: float = 2.0
    name: str = "atan"

    def derivative(self, x: Tensor) -> Tensor:
        """Lorentzian bump of peak alpha/2."""
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * x).square())


SURROGATES: dict[str, type[PiecewiseQuadratic] | type[ATan]] = {
    "piecewise_quadratic": PiecewiseQuadratic,
    "atan": ATan,
}


def make_surrogate(name: str, alpha: float) -> Surrogate:
    """Build a surrogate by name.

    Args:
        name: one of ``SURROGATES`` (``"piecewise_quadratic"`` or ``"atan"``).
        alpha: the shape parameter; larger means a narrower, taller bump.

    Raises:
        ValueError: for an unknown name (listing the choices) or a non-positive alpha.
    """
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
    if not alpha > 0:
        raise ValueError(f"surrogate alpha must be > 0, got {alpha}")
    return SURROGATES[name](alpha=alpha)


class _Spike(torch.autograd.Function):
    """Heaviside forward (strict ``x > 0``, as BrainCog), surrogate derivative backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, surrogate: Surrogate) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(x), None


def spike(x: Tensor, surrogate: Surrogate) -> Tensor:
    """S = H(x) with the surrogate's derivative in the backward pass.

    Args:
        x: membrane potential minus threshold, any shape.
        surrogate: the backward shape.

    Returns:
        Spikes in {0, 1}, same shape and dtype as ``x``.
    """
    return _Spike.apply(x, surrogate)
