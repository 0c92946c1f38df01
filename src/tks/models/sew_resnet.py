"""Spike-Element-Wise ResNets (Fang et al. 2021): SEW-ResNet-18/34/50 and the CIFAR SEW-ResNet-19.

A SEW block ends in a spiking neuron and joins its output spikes S with the shortcut spikes A by a connect function
g (docs/reference.md §2.4, §2.5): ``ADD`` g = A + S (the paper's choice; outputs can exceed 1), ``AND`` g = A * S,
``IAND`` g = A * (1 - S) in the basic block and S * (1 - A) in the bottleneck (as the official code). A shortcut that
changes shape is conv1x1-BN-LIF.

* ``sew_resnet18/34/50``: ImageNet stem (conv7x7/2-BN-LIF-maxpool3x3/2), stages 64/128/256/512, one linear layer
  per step on the pooled features; same parameters as torchvision's ResNets. ``stem="cifar"``: conv3x3/1, no
  maxpool, for 32x32 input.
* ``sew_resnet19``: conv3x3 64 stem, stages 128 x3 / 256 x3 / 512 x2, head Linear 512->256 -> LIF -> Linear.

Input:  ``[T, B, C, H, W]``.  Output: logits ``[T, B, num_classes]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor, nn

from tks.errors import UnknownNameError
from tks.models.blocks import SpikingClassifier, conv_norm
from tks.models.registry import register_model
from tks.snn import NeuronFactory, PerStep
from tks.snn.layers import NormFactory

Connect = Literal["ADD", "AND", "IAND"]
Stem = Literal["imagenet", "cifar"]


def connect_function(name: Connect) -> Callable[[Tensor, Tensor], Tensor]:
    """g(x, y) for the connect function ``name``: x + y, x * y, or x * (1 - y)."""
    functions = {"ADD": lambda x, y: x + y, "AND": lambda x, y: x * y, "IAND": lambda x, y: x * (1.0 - y)}
    if name not in functions:
        raise UnknownNameError("SEW connect function", name, sorted(functions))
    return functions[name]


def _shortcut(in_channels: int, out_channels: int, stride: int, neuron: NeuronFactory, norm: NormFactory) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(conv_norm(in_channels, out_channels, norm, kernel_size=1, stride=stride), neuron())


class SEWBasicBlock(nn.Module):
    """conv3x3-BN-LIF-conv3x3-BN-LIF, then g(shortcut, out)."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        connect: Connect,
        neuron: NeuronFactory,
        norm: NormFactory,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_norm(in_channels, width, norm, stride=stride), neuron(), conv_norm(width, width, norm), neuron()
        )
        self.shortcut = _shortcut(in_channels, width, stride, neuron, norm)
        self.connect = connect_function(connect)

    def forward(self, x: Tensor) -> Tensor:
        """SEW residual block on spikes ``[T, B, C, H, W]``."""
        return self.connect(self.shortcut(x), self.body(x))


class SEWBottleneck(nn.Module):
    """conv1x1-BN-LIF-conv3x3(stride)-BN-LIF-conv1x1(x4)-BN-LIF, then g(out, shortcut) (arguments swapped)."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        connect: Connect,
        neuron: NeuronFactory,
        norm: NormFactory,
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.body = nn.Sequential(
            conv_norm(in_channels, width, norm, kernel_size=1),
            neuron(),
            conv_norm(width, width, norm, stride=stride),
            neuron(),
            conv_norm(width, out_channels, norm, kernel_size=1),
            neuron(),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride, neuron, norm)
        self.connect = connect_function(connect)

    def forward(self, x: Tensor) -> Tensor:
        """SEW bottleneck on spikes ``[T, B, C, H, W]``."""
        return self.connect(self.body(x), self.shortcut(x))


def _init_weights(model: nn.Module) -> None:
    # As the SEW/BrainCog code: He init (fan_out) for convolutions, BN scale 1 and shift 0.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SEWResNet(SpikingClassifier):
    """SEW-ResNet with four stages (ResNet-18/34/50 topology).

    Args:
        num_classes: K.
        in_channels: input channels.
        neuron: spiking-neuron factory.
        norm: normalisation factory.
        block: ``SEWBasicBlock`` or ``SEWBottleneck``.
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
        connect: SEW connect function.
        stem: ``imagenet`` (7x7/2 + maxpool, 224x224 input) or ``cifar`` (3x3/1, 32x32 input).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        neuron: NeuronFactory,
        norm: NormFactory,
        block: type[SEWBasicBlock] | type[SEWBottleneck],
        layers: tuple[int, int, int, int],
        connect: Connect = "ADD",
        stem: Stem = "imagenet",
    ) -> None:
        super().__init__()
        if stem == "imagenet":
            modules: list[nn.Module] = [conv_norm(in_channels, 64, norm, kernel_size=7, stride=2), neuron()]
            modules.append(PerStep(nn.MaxPool2d(3, stride=2, padding=1)))
        elif stem == "cifar":
            modules = [conv_norm(in_channels, 64, norm), neuron()]
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        channels = 64
        for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                modules.append(block(channels, width, stride, connect, neuron, norm))
                channels = width * block.expansion
        modules.append(PerStep(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.features = nn.Sequential(*modules)
        self.classifier = PerStep(nn.Linear(channels, num_classes))
        _init_weights(self)


class SEWResNet19(SpikingClassifier):
    """SEW-ResNet-19 for 32x32 input (about 12.63 M parameters for K=10).

    Args:
        num_classes: K.
        in_channels: input channels.
        neuron: spiking-neuron factory.
        norm: normalisation factory.
        connect: SEW connect function.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        neuron: NeuronFactory,
        norm: NormFactory,
        connect: Connect = "ADD",
    ) -> None:
        super().__init__()
        modules: list[nn.Module] = [conv_norm(in_channels, 64, norm), neuron()]
        channels = 64
        for width, blocks, stride in ((128, 3, 1), (256, 3, 2), (512, 2, 2)):
            for i in range(blocks):
                modules.append(SEWBasicBlock(channels, width, stride if i == 0 else 1, connect, neuron, norm))
                channels = width
        modules += [PerStep(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 256)), neuron()]
        self.features = nn.Sequential(*modules)
        self.classifier = PerStep(nn.Linear(256, num_classes))
        _init_weights(self)


@register_model("sew_resnet19", inputs="3x32x32")
def sew_resnet19(
    num_classes: int, in_channels: int, neuron: NeuronFactory, norm: NormFactory, connect: Connect = "ADD"
) -> SEWResNet19:
    """SEW-ResNet-19 (option `connect`: `ADD`, `AND`, `IAND`)."""
    return SEWResNet19(num_classes, in_channels, neuron, norm, connect=connect)


def _sew(block: type[SEWBasicBlock] | type[SEWBottleneck], layers: tuple[int, int, int, int]) -> Callable:
    def factory(
        num_classes: int,
        in_channels: int,
        neuron: NeuronFactory,
        norm: NormFactory,
        connect: Connect = "ADD",
        stem: Stem = "imagenet",
    ) -> SEWResNet:
        return SEWResNet(num_classes, in_channels, neuron, norm, block, layers, connect=connect, stem=stem)

    return factory


for _depth, _block, _layers in (
    (18, SEWBasicBlock, (2, 2, 2, 2)),
    (34, SEWBasicBlock, (3, 4, 6, 3)),
    (50, SEWBottleneck, (3, 4, 6, 3)),
):
    _factory = _sew(_block, _layers)
    _factory.__name__ = _factory.__qualname__ = f"sew_resnet{_depth}"
    _factory.__doc__ = f"SEW-ResNet-{_depth}, ImageNet stem (options `stem`: `cifar` for 32x32, and `connect`)."
    register_model(f"sew_resnet{_depth}", inputs="3x224x224")(_factory)
