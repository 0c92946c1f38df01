"""Pieces shared by the model families: the classifier contract and conv-norm helpers."""

from __future__ import annotations

from torch import Tensor, nn

from tks.snn import PerStep
from tks.snn.layers import NormFactory


class SpikingClassifier(nn.Module):
    """A network split into ``features`` ``[T, B, ...] -> [T, B, D]`` and a per-step linear ``classifier``.

    Subclasses set both attributes; ``forward`` gives per-step logits ``[T, B, K]`` and ``forward_features`` the
    time-averaged penultimate features ``[B, D]`` (for t-SNE) through the same layers.
    """

    features: nn.Module
    classifier: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        """``[T, B, C, H, W]`` -> logits ``[T, B, K]``."""
        return self.classifier(self.features(x))

    def forward_features(self, x: Tensor) -> Tensor:
        """Time-averaged input of the classifier, ``[B, D]``."""
        return self.features(x).mean(0)


def conv_norm(
    in_channels: int,
    out_channels: int,
    norm: NormFactory,
    *,
    kernel_size: int = 3,
    stride: int = 1,
    bias: bool = False,
    alpha: float = 1.0,
) -> nn.Sequential:
    """Convolution (T folded into the batch, 'same' padding) followed by a normalisation layer.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        norm: normalisation factory (``tks.snn.layers.make_norm``).
        kernel_size: odd kernel size.
        stride: convolution stride.
        bias: conv bias (off by default: the normalisation follows).
        alpha: tdBN scale factor of the normalisation.
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=bias)
    return nn.Sequential(PerStep(conv), norm(out_channels, alpha=alpha))
