"""Turn a batch from a data loader into the time-major input ``[T, B, ...]`` every model takes."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

InputKind = Literal["static", "events"]


def to_time_major(x: Tensor, kind: InputKind, num_steps: int) -> Tensor:
    """Encode a batch over time.

    ``"static"``: direct encoding, the image ``[B, C, H, W]`` repeated at every step: ``[T, B, C, H, W]`` (a view,
    no copy). ``"events"``: frames ``[B, T', C, H, W]`` made time-major; the first ``num_steps`` frames are kept, so
    a model can be run at fewer steps than the data was framed with (truncation).

    Args:
        x: a batch, batch-first.
        kind: ``"static"`` or ``"events"``.
        num_steps: T >= 1.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if kind == "static":
        return x.unsqueeze(0).expand(num_steps, *x.shape)
    if kind == "events":
        if x.shape[1] < num_steps:
            raise ValueError(f"asked for {num_steps} steps but the event frames have only {x.shape[1]}")
        return x[:, :num_steps].transpose(0, 1)
    raise ValueError(f"kind must be 'static' or 'events', got {kind!r}")
