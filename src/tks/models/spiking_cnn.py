"""A small spiking CNN for small images (the bundled digits, Fashion-MNIST): the default model of ``tks train``.

Three conv-BN-LIF blocks (T folded into the batch for conv and BN), average pooling to 2x2, and a linear head
applied at every step.

Input:  ``[T, B, C, H, W]`` (H, W >= 4).
Output: logits ``[T, B, num_classes]``.
"""

from __future__ import annotations

from torch import Tensor, nn

from tks.snn import NeuronFactory, PerStep, make_neuron


def conv_bn(in_channels: int, out_channels: int) -> PerStep:
    """3x3 conv (no bias: BN follows) and BatchNorm over the T*B folded batch."""
    return PerStep(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))


class SpikingCNN(nn.Module):
    """conv(c1)-LIF, conv(c2)-LIF, avgpool 2, conv(c3)-LIF, adaptive avgpool 2x2, linear head per step.

    Args:
        num_classes: K.
        in_channels: C of the input.
        neuron: spiking-neuron factory (default: the official LIF).
        channels: widths (c1, c2, c3).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        neuron: NeuronFactory | None = None,
        channels: tuple[int, int, int] = (32, 64, 128),
    ) -> None:
        super().__init__()
        neuron = neuron if neuron is not None else make_neuron()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            conv_bn(in_channels, c1),
            neuron(),
            conv_bn(c1, c2),
            neuron(),
            PerStep(nn.AvgPool2d(2)),
            conv_bn(c2, c3),
            neuron(),
            PerStep(nn.AdaptiveAvgPool2d(2), nn.Flatten()),
        )
        self.head = PerStep(nn.Linear(c3 * 4, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """``[T, B, C, H, W]`` -> logits ``[T, B, K]``."""
        return self.head(self.features(x))

    def forward_features(self, x: Tensor) -> Tensor:
        """Time-averaged penultimate features ``[B, 4 * c3]`` (the input of the head), for t-SNE."""
        return self.features(x).mean(0)
