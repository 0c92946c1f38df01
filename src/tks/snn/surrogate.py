"""Surrogate gradients for the Heaviside spike function.

A spiking neuron fires S = H(x) with x = V - V_th. H has zero gradient almost everywhere, so training replaces
dS/dx in the backward pass by a smooth bump g'(x) while the forward pass keeps the exact step.

Each surrogate is a small frozen dataclass holding its shape parameter ``alpha`` and giving ``derivative(x)``;
``spike`` wraps it as a single autograd op, which is how the reference step ``tks.snn.lif.lif_step`` (and so the
``autograd`` backend) uses it. A surrogate whose class sets ``kernel`` is also computed inside the fused kernels
(``tks.snn.backends``), which implement its formula under that name.

Adding a surrogate: a class here (with ``kernel`` set and the formula added to ``backends/lif_cpu.c`` and
``backends/triton_lif.py``; leave ``kernel`` unset and only the autograd backend runs it), and an entry in
``SURROGATES`` so that configs can name it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from tks.errors import TKSError, UnknownNameError


class SurrogateError(TKSError, ValueError):
    """A surrogate shape parameter out of range."""


class Surrogate(ABC):
    """Base of the surrogate gradients: a name, the shape parameter ``alpha`` and dS/dx.

    Subclass it (as a frozen dataclass with ``alpha`` and ``name`` fields) to train with a derivative of your own;
    the neuron then runs its ``autograd`` backend, since the fused kernels do not know the formula.
    """

    name: str
    alpha: float
    kernel: ClassVar[str | None] = None
    """The formula's name in the fused kernels (``backends/lif_cpu.c``, ``backends/triton_lif.py``), or None."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass may change the derivative: it runs in the kernels only when its own body says which formula
        # they must compute. Otherwise a subclass of ATan with another derivative would silently train with ATan's.
        if "kernel" not in vars(cls):
            cls.kernel = None

    def __post_init__(self) -> None:
        # The one range check of alpha (configs, make_surrogate and direct construction all come through here).
        alpha = getattr(self, "alpha", 1.0)
        if not alpha > 0:
            raise SurrogateError(f"surrogate alpha must be > 0, got {alpha}")

    @abstractmethod
    def derivative(self, x: Tensor) -> Tensor:
        """Surrogate of dS/dx evaluated at ``x = V - V_th``, same shape as ``x``."""


@dataclass(frozen=True)
class PiecewiseQuadratic(Surrogate):
    """Piecewise-quadratic surrogate (Bi-Real shape), the official TKS/BrainCog ``QGateGrad``.

    g'(x) = alpha - alpha^2 |x| for |x| <= 1/alpha, else 0: a triangle of peak ``alpha`` and area 1.
    With alpha = 2 (the official, hard-coded value) this is 2 - 4|x| on |x| <= 0.5 (docs/reference.md §1.2).
    """

    alpha: float = 2.0
    name: str = "piecewise_quadratic"
    kernel: ClassVar[str | None] = "piecewise_quadratic"

    def derivative(self, x: Tensor) -> Tensor:
        """Triangle alpha - alpha^2 |x|, clamped at 0 outside |x| <= 1/alpha."""
        return (self.alpha - self.alpha * self.alpha * x.abs()).clamp_min(0.0)


@dataclass(frozen=True)
class ATan(Surrogate):
    """Arctangent surrogate (Fang et al. 2021, SpikingJelly's default family).

    Primitive g(x) = arctan(pi/2 * alpha * x) / pi + 1/2, so g'(x) = alpha / (2 (1 + (pi/2 * alpha * x)^2)).
    """

    alpha: float = 2.0
    name: str = "atan"
    kernel: ClassVar[str | None] = "atan"

    def derivative(self, x: Tensor) -> Tensor:
        """Lorentzian bump of peak alpha/2."""
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * x).square())


SURROGATES: dict[str, type[Surrogate]] = {"piecewise_quadratic": PiecewiseQuadratic, "atan": ATan}
"""The surrogates a config can name."""


def make_surrogate(name: str, alpha: float) -> Surrogate:
    """Build a surrogate by name.

    Args:
        name: one of ``SURROGATES`` (``"piecewise_quadratic"`` or ``"atan"``).
        alpha: the shape parameter; larger means a narrower, taller bump.

    Raises:
        UnknownNameError: for an unknown name (listing the choices).
        SurrogateError: for a non-positive alpha.
    """
    if name not in SURROGATES:
        raise UnknownNameError("surrogate", name, sorted(SURROGATES))
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
