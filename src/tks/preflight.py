"""Checks made before anything expensive starts, each failing with one line that names the setting and the numbers.

An input size the model can take and activations that fit in memory (writable folders: ``tks.paths``). The model
checks run the network on PyTorch's ``meta`` device: shapes only, no memory and no arithmetic, so they cost
milliseconds even for ImageNet networks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tks.config import ConfigError

ModelBuilder = Callable[[], nn.Module]
"""Builds the network; called under ``torch.device("meta")`` so that no weights are allocated."""

_LARGEST_SIDE = 4096
"""Where the search for the smallest input side a model takes gives up."""


class _CannotProbe(Exception):
    """The model cannot be built or run on the meta device (e.g. snnTorch's neurons read tensor values)."""


def _meta_model(build: ModelBuilder, training: bool) -> nn.Module:
    try:
        with torch.device("meta"):
            return build().train(training)
    except Exception as exc:  # noqa: BLE001 - a third-party module may fail in any way without real memory
        raise _CannotProbe from exc


def _runs_at(model: nn.Module, channels: int, height: int, width: int) -> bool:
    try:
        model(torch.empty(1, 1, channels, height, width, device="meta"))
    except RuntimeError as exc:  # a layer's output would be empty (e.g. pooling below 1x1) or shapes do not match
        if "meta" in str(exc):  # an operation that needs real values: not a verdict on the size
            raise _CannotProbe from exc
        return False
    return True


def check_input_size(build: ModelBuilder, model_name: str, dataset: str, channels: int, size: tuple[int, int]) -> None:
    """Raise when the model cannot take the dataset's input size, naming the smallest square size it takes.

    Args:
        build: the configured model's builder.
        model_name: for the message.
        dataset: for the message.
        channels: input channels C of ``[T, B, C, H, W]``.
        size: the dataset's ``(H, W)``.
    """
    try:
        model = _meta_model(build, training=False)
        height, width = size
        if _runs_at(model, channels, height, width):
            return
    except _CannotProbe:
        return  # such a model meets its input size when it runs: the first batch says what is wrong
    low, high = max(height, width), max(height, width) * 2  # low fails; find a high that works, then bisect
    while not _runs_at(model, channels, high, high):
        if high >= _LARGEST_SIDE:
            raise ConfigError(f"model {model_name!r} cannot run on {height}x{width} inputs of dataset {dataset!r}")
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _runs_at(model, channels, middle, middle) else (middle, high)
    raise ConfigError(
        f"model {model_name!r} needs inputs of at least {high}x{high} pixels; dataset {dataset!r} gives "
        f"{height}x{width}"
    )


def activation_bytes(
    build: ModelBuilder, channels: int, size: tuple[int, int], *, steps: int, batch: int, training: bool
) -> int:
    """Estimated bytes of the activations of one batch: a floor, from the output shapes of the leaf layers.

    Training keeps every layer's output for the backward pass (sum over the leaf layers); evaluation needs only a
    layer's input and output at once (twice the largest). Activations grow linearly in T x B, so the shapes of one
    sample at one step are enough. Weights, gradients and the framework's workspace come on top.

    Args:
        build: the configured model's builder.
        channels: input channels C.
        size: input ``(H, W)``.
        steps: T.
        batch: B.
        training: a training step (True) or evaluation (False).
    """
    try:
        model = _meta_model(build, training)
    except _CannotProbe:
        return 0  # no floor known: the memory check passes
    sizes: list[int] = []

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    probe = 2  # one step of two samples: training-mode BatchNorm1d refuses a batch of one
    try:
        model(torch.empty(1, probe, channels, *size, device="meta"))
    except RuntimeError as exc:
        if "meta" not in str(exc):
            raise
        return 0  # an operation that needs real values (a third-party neuron): no floor known
    finally:
        for handle in handles:
            handle.remove()
    per_probe = sum(sizes) if training else 2 * max(sizes, default=0)
    return per_probe * steps * batch // probe


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device`` (None when it cannot be read)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(needed: int, device: torch.device, what: str) -> None:
    """Raise when ``needed`` bytes (an ``activation_bytes`` floor) exceed what ``device`` has free.

    Args:
        needed: bytes the step needs at least.
        device: where it would run.
        what: the setting to change, e.g. ``data.num_steps=T=400 with data.batch_size=64``.
    """
    free = available_bytes(device)
    if free is not None and needed > free:
        raise ConfigError(
            f"{what} needs at least {needed / 2**30:.1f} GiB of activations, but {device.type} has "
            f"{free / 2**30:.1f} GiB free; lower T or the batch size"
        )
