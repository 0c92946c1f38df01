"""The model registry: ``create_model(name, ...)`` and ``list_models()``.

Every registered model maps ``[T, B, C, H, W]`` to per-step logits ``[T, B, num_classes]``, has
``forward_features`` (time-averaged penultimate features) and holds no loss, no targets and no device.

| name | network | input |
|---|---|---|
| ``spiking_cnn`` | small 3-layer spiking CNN (the bundled digits) | any >= 4x4 |
| ``spiking_lenet`` | narrower 3-layer spiking CNN pooling after every block (Fashion-MNIST) | 28x28 |
| ``vgg_snn`` | VGG-SNN of TET/TKS for event data | 48x48 |
| ``vgg_snn_small`` | VGG-SNN design, 2 stages (32, 32 / 64, 64), for small event frames | 16x16 |
| ``resnet19`` | spiking ResNet-19, 128-channel stem, tdBN (official TKS) | 32x32 |
| ``resnet19_tet`` | ResNet-19 with TET's 64-channel stem | 32x32 |
| ``sew_resnet19`` | SEW-ResNet-19 | 32x32 |
| ``sew_resnet18/34/50`` | SEW-ResNet with ImageNet stem (``stem="cifar"`` for 32x32) | 224x224 |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from tks.errors import OptionError, UnknownNameError
from tks.models.resnet19 import ResNet19
from tks.models.sew_resnet import SEWBasicBlock, SEWBottleneck, SEWResNet, SEWResNet19
from tks.models.spiking_cnn import SpikingCNN
from tks.models.static_convnet import StaticConvNet
from tks.models.vgg_snn import SMALL_STAGES, VGGSNN
from tks.snn import NeuronFactory, make_neuron
from tks.snn.layers import NormName, make_norm


@dataclass(frozen=True)
class ModelSpec:
    """A registered network: its builder, default normalisation and the options it accepts."""

    build: Callable[..., nn.Module]
    default_norm: NormName = "bn"
    options: frozenset[str] = frozenset()


_SEW_OPTIONS = frozenset({"connect", "stem"})

MODELS: dict[str, ModelSpec] = {
    "spiking_cnn": ModelSpec(SpikingCNN),
    "spiking_lenet": ModelSpec(partial(SpikingCNN, channels=(16, 32, 64), pool_first=True)),
    "spiking_convnet": ModelSpec(StaticConvNet),
    "spiking_convnet_wide": ModelSpec(partial(StaticConvNet, channels=(24, 48, 96))),
    "vgg_snn": ModelSpec(VGGSNN),
    "vgg_snn_small": ModelSpec(partial(VGGSNN, stages=SMALL_STAGES, pooled=4)),
    "resnet19": ModelSpec(ResNet19, default_norm="tdbn"),
    "resnet19_tet": ModelSpec(partial(ResNet19, stem_channels=64), default_norm="tdbn"),
    "sew_resnet19": ModelSpec(SEWResNet19, options=frozenset({"connect"})),
    "sew_resnet18": ModelSpec(partial(SEWResNet, block=SEWBasicBlock, layers=(2, 2, 2, 2)), options=_SEW_OPTIONS),
    "sew_resnet34": ModelSpec(partial(SEWResNet, block=SEWBasicBlock, layers=(3, 4, 6, 3)), options=_SEW_OPTIONS),
    "sew_resnet50": ModelSpec(partial(SEWResNet, block=SEWBottleneck, layers=(3, 4, 6, 3)), options=_SEW_OPTIONS),
}


def list_models() -> list[str]:
    """Names accepted by ``create_model``."""
    return sorted(MODELS)


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    neuron: NeuronFactory | None = None,
    norm: NormName | None = None,
    max_steps: int = 4,
    v_threshold: float = 0.5,
    connect: str | None = None,
    stem: str | None = None,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: see ``list_models()``.
        num_classes: K, the size of the per-step logits.
        in_channels: channels of the input (3 for RGB, 2 for event polarities).
        neuron: spiking-neuron factory (default: ``tks.snn.make_neuron()``, the official LIF).
        norm: ``bn``, ``tdbn`` or ``tebn`` (default: the model's official one).
        max_steps: the largest T a TEBN layer accepts (the training T); unused by the other norms.
        v_threshold: the threshold tdBN initialises its scale with (match the neuron's).
        connect: SEW connect function ``ADD`` (default), ``AND`` or ``IAND``; SEW models only.
        stem: ``imagenet`` (default) or ``cifar``; SEW-ResNet-18/34/50 only.

    Raises:
        UnknownNameError: for a name not in the registry, listing the choices.
        OptionError: for an option the model does not take.
    """
    if name not in MODELS:
        raise UnknownNameError("model", name, list_models())
    if num_classes < 1 or in_channels < 1:
        raise OptionError(f"a model needs num_classes >= 1 and in_channels >= 1, got {num_classes} and {in_channels}")
    spec = MODELS[name]
    options = {key: value for key, value in (("connect", connect), ("stem", stem)) if value is not None}
    unsupported = sorted(set(options) - spec.options)
    if unsupported:
        raise OptionError(f"model {name!r} has no option {', '.join(unsupported)} (it takes: {sorted(spec.options)})")
    return spec.build(
        num_classes=num_classes,
        in_channels=in_channels,
        neuron=neuron if neuron is not None else make_neuron(),
        norm=make_norm(norm or spec.default_norm, v_threshold=v_threshold, max_steps=max_steps),
        **options,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "ModelSpec", "count_parameters", "create_model", "list_models"]
