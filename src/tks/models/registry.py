"""The model registry: ``register_model`` puts a factory under a name, ``create_model`` builds by name.

A factory is any callable that returns an ``nn.Module`` mapping ``[T, B, C, H, W]`` to per-step logits
``[T, B, K]``. ``create_model`` passes it, of the build arguments below, those its signature names, plus the options
a config gives in ``model.options``::

    @tks.register_model("my_snn", inputs="3x32x32")
    def my_snn(num_classes: int, in_channels: int, neuron: NeuronFactory, width: int = 64) -> nn.Module:
        \"\"\"My spiking network (one line shown by ``tks models``).\"\"\"
        return MySNN(num_classes, in_channels, neuron, width)

    # config: model: {name: my_snn, options: {width: 128}}

Build arguments: ``num_classes`` (K), ``in_channels`` (C), ``neuron`` (a factory of the configured LIF,
``tks.snn.make_neuron``), ``norm`` (a normalisation factory, ``tks.snn.layers.make_norm`` of ``model.norm`` or the
model's default), ``max_steps`` (the training T, which TEBN needs) and ``v_threshold`` (the neuron's threshold).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from tks.errors import OptionError
from tks.registry import Registry, check_options, defined_at, parameters
from tks.snn import NeuronFactory, make_neuron
from tks.snn.layers import NormName, make_norm

BUILD_ARGUMENTS = ("num_classes", "in_channels", "neuron", "norm", "max_steps", "v_threshold")
"""What ``create_model`` passes a factory whose signature names it."""

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its factory, its default normalisation and the input it is laid out for."""

    factory: Callable[..., nn.Module]
    default_norm: NormName = "bn"
    inputs: str = "any"
    """The input it is laid out for, as ``tks models`` and the README show it (e.g. ``3x32x32``)."""

    @property
    def description(self) -> str:
        """The first line of the factory's docstring."""
        return (inspect.getdoc(self.factory) or "").split("\n")[0]

    @property
    def options(self) -> list[str]:
        """The factory's parameters that ``model.options`` may set (all but the build arguments)."""
        return [name for name in parameters(self.factory) if name not in BUILD_ARGUMENTS]


MODELS: Registry[ModelEntry] = Registry("model", source=lambda entry: entry.factory)
"""Every registered model by name; ``register_model`` fills it."""


def register_model(name: str, *, default_norm: NormName = "bn", inputs: str = "any") -> Callable[[Factory], Factory]:
    """Register a model factory under ``name`` (a decorator; the factory is returned unchanged).

    Args:
        name: what ``model.name`` and ``create_model`` call it.
        default_norm: the normalisation used when ``model.norm`` is not set: ``bn``, ``tdbn`` or ``tebn``.
        inputs: the input it is laid out for, for listings (e.g. ``"3x32x32"``, ``"any, >= 4x4"``).

    Raises:
        RegistryError: when another factory already has the name.
    """
    return MODELS.decorator(name, lambda factory: ModelEntry(factory, default_norm, inputs))


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
    **options: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: see ``list_models()``.
        num_classes: K, the size of the per-step logits.
        in_channels: channels of the input (3 for RGB, 2 for event polarities).
        neuron: spiking-neuron factory (default: ``tks.snn.make_neuron()``, the official LIF).
        norm: ``bn``, ``tdbn`` or ``tebn`` (default: the model's own).
        max_steps: the largest T a TEBN layer accepts (the training T); unused by the other norms.
        v_threshold: the threshold tdBN initialises its scale with (match the neuron's).
        **options: the model's own options (``model.options``), e.g. ``connect="AND"`` for SEW models.

    Raises:
        UnknownNameError: for a name not in the registry, listing the choices.
        OptionError: for an option the model's factory does not take, listing those it takes.
    """
    entry = MODELS[name]
    if num_classes < 1 or in_channels < 1:
        raise OptionError(f"a model needs num_classes >= 1 and in_channels >= 1, got {num_classes} and {in_channels}")
    check_options(f"model {name!r}", entry.factory, options, entry.options)
    build = {
        "num_classes": num_classes,
        "in_channels": in_channels,
        "neuron": neuron if neuron is not None else make_neuron(),
        "norm": make_norm(norm or entry.default_norm, v_threshold=v_threshold, max_steps=max_steps),
        "max_steps": max_steps,
        "v_threshold": v_threshold,
    }
    named = parameters(entry.factory)
    model = entry.factory(**{k: v for k, v in build.items() if k in named}, **options)
    if not isinstance(model, nn.Module):
        raise OptionError(f"model {name!r}: {defined_at(entry.factory)} returned {type(model).__name__}, not a module")
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_table() -> str:
    """The registered models as a markdown table (name, network, input): the README's table is this one."""
    rows = ["| name | network | input |", "|---|---|---|"]
    for name in list_models():
        entry = MODELS[name]
        rows.append(f"| `{name}` | {entry.description.rstrip('.')} | {entry.inputs} |")
    return "\n".join(rows)
