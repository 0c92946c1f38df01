"""Objects from a config: the device, the model, the encoder of its input and the optimizer.

The one place that builds networks from config values (``tks.experiment`` trains them, ``tks.evaluation``
measures them, ``tks.checkpoint_model`` rebuilds a checkpoint's); the data a run reads is built in
``tks.data.loading``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import torch
from torch import nn

from tks.config import ModelConfig, OptimConfig
from tks.data import DatasetInfo, to_time_major
from tks.errors import DeviceError
from tks.models import create_model
from tks.snn import make_neuron, reset_before_each_call


def build_model(cfg: ModelConfig, info: DatasetInfo, num_steps: int) -> nn.Module:
    """The configured network, sized for the dataset; ``num_steps`` is the training T (TEBN's maximum)."""
    n = cfg.neuron
    neuron = make_neuron(
        n.engine,
        tau=n.tau,
        v_threshold=n.v_threshold,
        surrogate=n.surrogate,
        surrogate_alpha=n.surrogate_alpha,
        detach_reset=n.detach_reset,
    )
    model = create_model(
        cfg.name,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        neuron=neuron,
        norm=cfg.norm,
        max_steps=num_steps,
        v_threshold=n.v_threshold,
        **cfg.options,
    )
    return reset_before_each_call(model)  # a third-party neuron's state: reset before every batch (tks.snn.stateful)


def _to_time_major_channels_last(x: torch.Tensor, num_steps: int) -> torch.Tensor:
    return to_time_major(x.contiguous(memory_format=torch.channels_last), "static", num_steps)


def encoder(kind: str, num_steps: int, *, channels_last: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batch -> time-major input ``[T, B, ...]``; with ``channels_last``, static images are stored channels-last.

    Images in the layout of a channels-last model (``run.channels_last``) keep its convolutions in that layout from
    the first layer on: a spiking_convnet training step with one thread ran 1.45x faster with both, 1.27x with the
    model alone (docs/convergence-recipe.md). Event frames keep their layout.
    """
    if channels_last and kind == "static":
        return partial(_to_time_major_channels_last, num_steps=num_steps)
    return partial(to_time_major, kind=kind, num_steps=num_steps)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or Adam; weight decay on weight tensors (ndim > 1) only, as timm's ``create_optimizer``.

    Biases, BatchNorm parameters and other 1-D parameters get no decay. The fused implementation is used where
    PyTorch has one for the parameters' device: one kernel per step, and it can skip an update on the device
    (``NonFiniteGuard``), so that guarding against a non-finite loss costs no host-device synchronisation.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg.name]
    try:
        return optimizer_cls(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except RuntimeError:  # a device or dtype without a fused kernel: the default implementation
        return optimizer_cls(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


def scaled_optim(cfg: OptimConfig, batch_size: int, world_size: int) -> OptimConfig:
    """The optimizer config a run uses: with ``linear_scaling``, lr x (batch x processes x accumulate) / 1024."""
    if not cfg.linear_scaling:
        return cfg
    batch = batch_size * world_size * cfg.accumulate
    return replace(cfg, lr=cfg.lr * batch / 1024)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` becomes CUDA when available, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` must exist here.

    Raises:
        DeviceError: for a string torch cannot parse, another device type, or a GPU this machine does not have.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {device!r} is not supported: use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {device!r}: no CUDA GPU is available here; use cpu (or auto)")
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"device {device!r} does not exist: this machine has cuda:0 to cuda:{count - 1}")
    return resolved
