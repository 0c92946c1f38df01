"""VGG-SNN, the DVS network of TET (Deng et al. 2022) used by TKS for CIFAR10-DVS and N-Caltech101.

64C3-128C3-AP2-256C3-256C3-AP2-512C3-512C3-AP2-512C3-512C3-AP2-FC (docs/reference.md §2.2): conv without bias, then
normalisation, then a spiking neuron; average pooling; one linear layer per step on the flattened 512x3x3 map.

Input:  ``[T, B, in_channels, 48, 48]`` (event frames; other sizes are pooled to 3x3 before the classifier).
Output: logits ``[T, B, num_classes]``.
"""

from __future__ import annotations

from torch import nn

from tks.models.blocks import SpikingClassifier, conv_norm
from tks.models.registry import register_model
from tks.snn import NeuronFactory, PerStep
from tks.snn.layers import NormFactory

STAGES = ((64, 128), (256, 256), (512, 512), (512, 512))
SMALL_STAGES = ((32, 32), (64, 64))
"""``vgg_snn_small``: the same design, two stages of half width, for small event frames (16x16 digits-dvs)."""


class VGGSNN(SpikingClassifier):
    """VGG-SNN (about 9.27 M parameters for K=10, 2 input channels).

    Args:
        num_classes: K.
        in_channels: 2 for event polarities.
        neuron: spiking-neuron factory.
        norm: normalisation factory (official: BatchNorm over T*B).
        stages: conv widths per stage; every stage ends in 2x2 average pooling.
        pooled: side of the map the classifier sees (3: 48 / 2^4).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        neuron: NeuronFactory,
        norm: NormFactory,
        stages: tuple[tuple[int, ...], ...] = STAGES,
        pooled: int = 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in stages:
            for width in stage:
                layers += [conv_norm(channels, width, norm), neuron()]
                channels = width
            layers.append(PerStep(nn.AvgPool2d(2)))
        # A no-op at the design input size (48x48 for VGG-SNN); lets other sizes reach the same classifier.
        layers.append(PerStep(nn.AdaptiveAvgPool2d(pooled), nn.Flatten()))
        self.features = nn.Sequential(*layers)
        self.classifier = PerStep(nn.Linear(channels * pooled * pooled, num_classes))


@register_model("vgg_snn", inputs="2x48x48 event frames")
def vgg_snn(num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory) -> VGGSNN:
    """VGG-SNN of TET and TKS (CIFAR10-DVS, N-Caltech101)."""
    return VGGSNN(num_classes, in_channels, neuron, norm)


@register_model("vgg_snn_small", inputs="2x16x16 event frames")
def vgg_snn_small(num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory) -> VGGSNN:
    """The VGG-SNN design with two half-width stages (digits-dvs)."""
    return VGGSNN(num_classes, in_channels, neuron, norm, stages=SMALL_STAGES, pooled=4)
