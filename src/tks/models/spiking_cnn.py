"""Small spiking CNNs for small images: ``spiking_cnn`` (digits, the default) and ``spiking_lenet`` (28x28).

Three conv-norm-LIF blocks (T folded into the batch for conv and BN), average pooling to 2x2, and a linear
classifier applied at every step. ``spiking_lenet`` is narrower (16/32/64) and pools after every block, so its
convolutions run at 28, 14 and 7 pixels.

Input:  ``[T, B, C, H, W]`` (H, W >= 4).
Output: logits ``[T, B, num_classes]``.
"""

from __future__ import annotations

from torch import nn

from tks.models.blocks import SpikingClassifier, conv_norm
from tks.models.registry import register_model
from tks.snn import NeuronFactory, PerStep
from tks.snn.layers import NormFactory


class SpikingCNN(SpikingClassifier):
    """conv(c1)-LIF, conv(c2)-LIF, avgpool 2, conv(c3)-LIF, adaptive avgpool 2x2, linear classifier per step.

    Args:
        num_classes: K.
        in_channels: C of the input.
        neuron: spiking-neuron factory.
        norm: normalisation factory.
        channels: widths (c1, c2, c3).
        pool_first: also pool after the first block (for 28x28 input).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        neuron: NeuronFactory,
        norm: NormFactory,
        channels: tuple[int, int, int] = (32, 64, 128),
        pool_first: bool = False,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        first_pool = [PerStep(nn.AvgPool2d(2))] if pool_first else []
        self.features = nn.Sequential(
            conv_norm(in_channels, c1, norm),
            neuron(),
            *first_pool,
            conv_norm(c1, c2, norm),
            neuron(),
            PerStep(nn.AvgPool2d(2)),
            conv_norm(c2, c3, norm),
            neuron(),
            PerStep(nn.AdaptiveAvgPool2d(2), nn.Flatten()),
        )
        self.classifier = PerStep(nn.Linear(c3 * 4, num_classes))


@register_model("spiking_cnn", inputs="any, >= 4x4")
def spiking_cnn(num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory) -> SpikingCNN:
    """Small 3-layer spiking CNN (the bundled digits)."""
    return SpikingCNN(num_classes, in_channels, neuron, norm)


@register_model("spiking_lenet", inputs="1x28x28")
def spiking_lenet(num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory) -> SpikingCNN:
    """Narrower 3-layer spiking CNN, pooling after every block (Fashion-MNIST)."""
    return SpikingCNN(num_classes, in_channels, neuron, norm, channels=(16, 32, 64), pool_first=True)
