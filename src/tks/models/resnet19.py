"""Spiking ResNet-19 of the tdBN paper (Zheng et al. 2021), as in the official TKS code (BrainCog ``resnet19``).

Stem conv3x3 -> tdBN -> LIF; three stages of basic blocks (128 x3, 256 x3 stride 2, 512 x2 stride 2); global
average pool; Linear 512->256 -> LIF -> Linear 256->K per step (docs/reference.md §2.3). A basic block is
conv-tdBN(alpha=1)-LIF-conv-tdBN(alpha=sqrt(1/2)), plus the shortcut, then LIF *after* the addition. The first
block of every stage has a shortcut module: conv1x1-tdBN(sqrt(1/2)) when the shape changes, else tdBN(sqrt(1/2))
alone. ``stem_channels=64`` gives TET's variant (a conv shortcut in the first block, since 64 != 128).

Input:  ``[T, B, 3, 32, 32]``.  Output: logits ``[T, B, num_classes]``.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from tks.models.blocks import SpikingClassifier, conv_norm
from tks.models.registry import register_model
from tks.snn import NeuronFactory, PerStep
from tks.snn.layers import NormFactory

SQRT_HALF = math.sqrt(0.5)


class BasicBlock(nn.Module):
    """Spiking basic block with the neuron after the residual addition: ``[T, B, C, H, W]`` in and out."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        shortcut: nn.Module,
        neuron: NeuronFactory,
        norm: NormFactory,
    ) -> None:
        super().__init__()
        self.conv1 = conv_norm(in_channels, out_channels, norm, stride=stride)
        self.sn1 = neuron()
        self.conv2 = conv_norm(out_channels, out_channels, norm, alpha=SQRT_HALF)
        self.shortcut = shortcut
        self.sn2 = neuron()

    def forward(self, x: Tensor) -> Tensor:
        """Residual block on spikes."""
        return self.sn2(self.conv2(self.sn1(self.conv1(x))) + self.shortcut(x))


class ResNet19(SpikingClassifier):
    """Spiking ResNet-19 (about 12.70 M parameters for K=10).

    Args:
        num_classes: K.
        in_channels: 3 for RGB.
        neuron: spiking-neuron factory.
        norm: normalisation factory (official: tdBN).
        stem_channels: 128 (tdBN paper, official TKS) or 64 (TET's variant).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        neuron: NeuronFactory,
        norm: NormFactory,
        stem_channels: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_norm(in_channels, stem_channels, norm, alpha=SQRT_HALF), neuron()]
        channels = stem_channels
        for width, blocks, stride in ((128, 3, 1), (256, 3, 2), (512, 2, 2)):
            for i in range(blocks):
                if i > 0:
                    shortcut: nn.Module = nn.Identity()
                elif stride != 1 or channels != width:
                    shortcut = conv_norm(channels, width, norm, kernel_size=1, stride=stride, alpha=SQRT_HALF)
                else:
                    shortcut = norm(width, alpha=SQRT_HALF)  # BN-only shortcut of the official first block
                layers.append(BasicBlock(channels, width, stride if i == 0 else 1, shortcut, neuron, norm))
                channels = width
        layers += [PerStep(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 256)), neuron()]
        self.features = nn.Sequential(*layers)
        self.classifier = PerStep(nn.Linear(256, num_classes))


@register_model("resnet19", default_norm="tdbn", inputs="3x32x32")
def resnet19(num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory) -> ResNet19:
    """Spiking ResNet-19 with tdBN, 128-channel stem (official TKS)."""
    return ResNet19(num_classes, in_channels, neuron, norm)


@register_model("resnet19_tet", default_norm="tdbn", inputs="3x32x32")
def resnet19_tet(num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory) -> ResNet19:
    """ResNet-19 with TET's 64-channel stem."""
    return ResNet19(num_classes, in_channels, neuron, norm, stem_channels=64)
