"""The model registry: ``create_model(name, ...)`` and ``list_models()``.

Every registered model maps ``[T, B, C, H, W]`` to per-step logits ``[T, B, num_classes]`` and holds no loss, no
targets and no device.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from tks.errors import UnknownNameError
from tks.models.spiking_cnn import SpikingCNN
from tks.snn import NeuronFactory

ModelBuilder = Callable[..., nn.Module]

MODELS: dict[str, ModelBuilder] = {
    "spiking_cnn": SpikingCNN,
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
) -> nn.Module:
    """Build a registered model.

    Args:
        name: see ``list_models()``.
        num_classes: K, the size of the per-step logits.
        in_channels: channels of the input (3 for RGB, 2 for event polarities).
        neuron: spiking-neuron factory (default: ``tks.snn.make_neuron()``, the official LIF).

    Raises:
        UnknownNameError: for a name not in the registry, listing the choices.
    """
    if name not in MODELS:
        raise UnknownNameError("model", name, list_models())
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, neuron=neuron)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "count_parameters", "create_model", "list_models"]
