"""A compute-efficient spiking CNN for small static images (28x28 Fashion-MNIST): ``spiking_convnet``.

Three blocks conv 3x3 -> max-pool 2x2 -> BN -> LIF (the last without pooling: 28 -> 14 -> 7 pixels), an adaptive
max-pool to ``pooled`` x ``pooled``, a spiking hidden layer of ``hidden`` units and a linear classifier at every
step. It is laid out for a CPU budget (docs/convergence-recipe.md): each block pools the input current before the
neurons, so BN and LIF run on the pooled map, and the first block sees the image repeated over T, so its conv,
pooling and BN run once per image (``TimeInvariant``) instead of T times.

Input:  ``[T, B, C, H, W]`` (H, W >= 4).
Output: logits ``[T, B, num_classes]``.
"""

from __future__ import annotations

from torch import nn

from tks.models.blocks import SpikingClassifier
from tks.models.registry import register_model
from tks.snn import NeuronFactory, PerStep, TimeInvariant
from tks.snn.layers import NormFactory


class StaticConvNet(SpikingClassifier):
    """conv(c1)-pool-BN-LIF, conv(c2)-pool-BN-LIF, conv(c3)-BN-LIF, max-pool, linear(hidden)-BN-LIF, classifier.

    Args:
        num_classes: K.
        in_channels: C of the input.
        neuron: spiking-neuron factory.
        norm: normalisation factory of the conv blocks.
        channels: widths (c1, c2, c3).
        hidden: units of the spiking hidden layer.
        pooled: side of the last feature map (``AdaptiveMaxPool2d``; 28x28 input: 28 -> 14 -> 7 -> 3).
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
            *_block(in_channels, c1, norm, pool=True, first=True),
            neuron(),
            *_block(c1, c2, norm, pool=True),
            neuron(),
            *_block(c2, c3, norm, pool=False),
            neuron(),
            PerStep(nn.AdaptiveMaxPool2d(pooled), nn.Flatten()),
            PerStep(nn.Linear(c3 * pooled * pooled, hidden, bias=False), nn.BatchNorm1d(hidden)),
            neuron(),
        )
        self.classifier = PerStep(nn.Linear(hidden, num_classes))


def _block(in_channels: int, out_channels: int, norm: NormFactory, *, pool: bool, first: bool = False) -> list:
    """3x3 conv, 2x2 max-pool when ``pool``, and the norm: the layers before a block's neurons.

    The first block runs once for a static image (``TimeInvariant``). BN and tdBN act on each step alone and join
    the conv there; TEBN scales each step differently, so it stays outside and runs over T.
    """
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)] + ([nn.MaxPool2d(2)] if pool else [])
    wrap = TimeInvariant if first else PerStep
    normalisation = norm(out_channels)
    if type(normalisation) is PerStep:
        return [wrap(*layers, *normalisation)]
    return [wrap(*layers), normalisation]


@register_model("spiking_convnet", inputs="1x28x28")
def spiking_convnet(num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory) -> StaticConvNet:
    """Compute-efficient spiking CNN, pooling before its neurons (the converged Fashion-MNIST study)."""
    return StaticConvNet(num_classes, in_channels, neuron, norm)


@register_model("spiking_convnet_wide", inputs="1x28x28")
def spiking_convnet_wide(num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory) -> StaticConvNet:
    """`spiking_convnet` with wider convolutions (24, 48, 96)."""
    return StaticConvNet(num_classes, in_channels, neuron, norm, channels=(24, 48, 96))
