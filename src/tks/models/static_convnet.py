"""A compute-efficient spiking CNN for small static images (28x28 Fashion-MNIST): ``spiking_convnet``.

Three conv-BN-LIF blocks at 28, 14 and 7 pixels, 2x2 max pooling after each (max of spikes is a spike, so the
pooled maps stay binary), a spiking hidden layer of ``hidden`` units and a linear classifier at every step. It is
laid out for a CPU budget (docs/convergence-recipe.md): the first block sees the image repeated over T, so it runs
once per image (``TimeInvariant``) instead of T times, and the widths grow only after the resolution drops.

Input:  ``[T, B, C, H, W]`` (H, W >= 8).
Output: logits ``[T, B, num_classes]``.
"""

from __future__ import annotations

from torch import nn

from tks.models.blocks import SpikingClassifier, conv_norm
from tks.snn import NeuronFactory, PerStep, TimeInvariant
from tks.snn.layers import NormFactory


class StaticConvNet(SpikingClassifier):
    """conv(c1)-LIF-maxpool, conv(c2)-LIF-maxpool, conv(c3)-LIF-maxpool, linear(hidden)-BN-LIF, linear classifier.

    Args:
        num_classes: K.
        in_channels: C of the input.
        neuron: spiking-neuron factory.
        norm: normalisation factory of the conv blocks.
        channels: widths (c1, c2, c3).
        hidden: units of the spiking hidden layer.
        pooled: side of the last feature map (``AdaptiveMaxPool2d``; 3 for 28x28 input: 28 -> 14 -> 7 -> 3).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        neuron: NeuronFactory,
        norm: NormFactory,
        channels: tuple[int, int, int] = (16, 32, 64),
        hidden: int = 256,
        pooled: int = 3,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            _first_block(in_channels, c1, norm),
            neuron(),
            PerStep(nn.MaxPool2d(2)),
            conv_norm(c1, c2, norm),
            neuron(),
            PerStep(nn.MaxPool2d(2)),
            conv_norm(c2, c3, norm),
            neuron(),
            PerStep(nn.AdaptiveMaxPool2d(pooled), nn.Flatten()),
            PerStep(nn.Linear(c3 * pooled * pooled, hidden, bias=False), nn.BatchNorm1d(hidden)),
            neuron(),
        )
        self.classifier = PerStep(nn.Linear(hidden, num_classes))


def _first_block(in_channels: int, out_channels: int, norm: NormFactory) -> nn.Module:
    """3x3 conv and norm, computed once per image for static input (``TimeInvariant``).

    BN and tdBN are stateless per step and join the conv inside; TEBN scales each step differently, so it stays
    outside and runs over T.
    """
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    layer = norm(out_channels)
    if type(layer) is PerStep:
        return TimeInvariant(conv, *layer)
    return nn.Sequential(TimeInvariant(conv), layer)
