"""Layers that carry the time axis: stateless layers applied to every step at once.

Convolutions, BatchNorm, pooling and linear layers have no memory, so a ``[T, B, ...]`` tensor can be folded into
``[T*B, ...]``, processed in one call and unfolded. BatchNorm statistics are then taken over T*B samples, the
official "layer-by-layer" setting (reference-spec §2, common conventions).
"""

from __future__ import annotations

from torch import Tensor, nn


class PerStep(nn.Sequential):
    """Apply stateless modules to every time step with T folded into the batch.

    ``[T, B, *in] -> [T*B, *in] -> modules -> [T*B, *out] -> [T, B, *out]``.
    """

    def forward(self, x_seq: Tensor) -> Tensor:
        """Run the wrapped modules on ``x_seq`` ``[T, B, ...]``; returns ``[T, B, ...]``."""
        steps, batch = x_seq.shape[:2]
        y = super().forward(x_seq.flatten(0, 1))
        return y.unflatten(0, (steps, batch))
