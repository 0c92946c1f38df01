"""Layers that carry the time axis: stateless layers applied to every step at once.

Convolutions, BatchNorm, pooling and linear layers have no memory, so a ``[T, B, ...]`` tensor can be folded into
``[T*B, ...]``, processed in one call and unfolded. BatchNorm statistics are then taken over T*B samples, the
official "layer-by-layer" setting (docs/reference.md §2.1). Normalisation layers all take
``[T, B, C, H, W]`` so that a network can switch between BN, tdBN and TEBN by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from tks.errors import StepsError, UnknownNameError


class PerStep(nn.Sequential):
    """Apply stateless modules to every time step with T folded into the batch.

    ``[T, B, *in] -> [T*B, *in] -> modules -> [T*B, *out] -> [T, B, *out]``.
    """

    def forward(self, x_seq: Tensor) -> Tensor:
        """Run the wrapped modules on ``x_seq`` ``[T, B, ...]``; returns ``[T, B, ...]``."""
        steps, batch = x_seq.shape[:2]
        y = super().forward(x_seq.flatten(0, 1))
        return y.unflatten(0, (steps, batch))


class TimeInvariant(PerStep):
    """``PerStep`` that runs once when every time step holds the same tensor.

    Direct encoding repeats a static image at every step as a broadcast view (stride 0 on the time axis,
    ``tks.data.to_time_major``). Stateless layers then give the same output at every step, so they run on one step
    and the result is broadcast over T: the first layers of a static-image network cost T times less, with the
    same outputs and gradients (autograd sums the broadcast's gradient over the steps). BatchNorm sees B samples
    instead of T identical copies of them: the same batch mean and variance, and only the running variance's
    n / (n - 1) correction differs (n = B*H*W rather than T*B*H*W). Any other input runs exactly as ``PerStep``.
    """

    def forward(self, x_seq: Tensor) -> Tensor:
        """Run the wrapped modules on ``x_seq`` ``[T, B, ...]``; returns ``[T, B, ...]``."""
        steps = x_seq.shape[0]
        if steps > 1 and x_seq.stride(0) == 0:  # one tensor seen T times
            y = nn.Sequential.forward(self, x_seq[0])
            return y.unsqueeze(0).expand(steps, *y.shape)
        return super().forward(x_seq)


class TEBN(nn.Module):
    """Temporal Effective Batch Normalization (Duan et al. 2022), usable at any T up to the T it was built for.

    BatchNorm over (T, B, H, W) per channel with a learnable affine, then a learnable scale p_t per time step:
    ``y[t] = p_t * BN(x)[t]`` for ``x`` ``[T, B, C, H, W]`` (p initialised to 1). Running at fewer steps uses the
    first T scales; SpikingJelly's layer fails there. More steps than built for is an error, since no p_t exists.

    Args:
        channels: C.
        max_steps: the largest T the layer accepts (the training T).
    """

    def __init__(self, channels: int, max_steps: int) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"TEBN max_steps must be >= 1, got {max_steps}")
        self.bn = nn.BatchNorm2d(channels)
        self.scale = nn.Parameter(torch.ones(max_steps))

    def forward(self, x_seq: Tensor) -> Tensor:
        """Normalise ``x_seq`` ``[T, B, C, H, W]``; same shape out."""
        steps, batch = x_seq.shape[:2]
        if steps > self.scale.numel():
            raise StepsError(
                f"TEBN was built for at most {self.scale.numel()} time steps (one learned scale per step) "
                f"and cannot run at T={steps}; evaluate at T <= {self.scale.numel()}"
            )
        y = self.bn(x_seq.flatten(0, 1)).unflatten(0, (steps, batch))
        return y * self.scale[:steps].view(steps, *([1] * (y.dim() - 1)))


NormName = Literal["bn", "tdbn", "tebn"]
NormFactory = Callable[..., nn.Module]
"""``norm(channels, alpha=1.0)`` builds a normalisation layer for ``[T, B, C, H, W]`` input."""


def threshold_dependent_bn(channels: int, alpha: float, v_threshold: float) -> PerStep:
    """Threshold-dependent BN (tdBN, Zheng et al. 2021): BN over T*B, scale initialised to alpha * V_th, shift 0."""
    bn = nn.BatchNorm2d(channels)
    nn.init.constant_(bn.weight, alpha * v_threshold)
    return PerStep(bn)


def make_norm(name: NormName, *, v_threshold: float = 0.5, max_steps: int = 4) -> NormFactory:
    """A normalisation factory: ``bn`` (statistics over T*B, the official setting), ``tdbn`` or ``tebn``.

    The factory takes ``(channels, alpha=1.0)``; ``alpha`` is tdBN's scale factor (sqrt(1/2) before a residual add,
    as the tdBN ResNet) and is ignored by the others.

    Args:
        name: which normalisation.
        v_threshold: the neuron threshold tdBN scales by.
        max_steps: the largest T a TEBN layer accepts.

    Raises:
        UnknownNameError: for an unknown name, listing the choices.
    """

    def bn(channels: int, alpha: float = 1.0) -> nn.Module:
        return PerStep(nn.BatchNorm2d(channels))

    def tdbn(channels: int, alpha: float = 1.0) -> nn.Module:
        return threshold_dependent_bn(channels, alpha, v_threshold)

    def tebn(channels: int, alpha: float = 1.0) -> nn.Module:
        return TEBN(channels, max_steps)

    factories = {"bn": bn, "tdbn": tdbn, "tebn": tebn}
    if name not in factories:
        raise UnknownNameError("normalisation", name, sorted(factories))
    return factories[name]
