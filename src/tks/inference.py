"""Running a model over batches without training it: per-step logits (``predict``) and penultimate features.

Like the training loop, it knows no model family and no dataset: ``encode`` turns a loader batch into the
time-major input ``[T, B, ...]``. The precision's autocast context (``autocast``) is shared with the training step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tks.distributed import Dist, all_gather_objects

Encoder = Callable[[Tensor], Tensor]
Batches = Iterable[tuple[Tensor, Tensor]]
SINGLE = Dist.single()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a precision: ``fp32`` none, ``bf16`` bfloat16, ``fp16`` float16 (CUDA only)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")


@torch.inference_mode()
def predict(
    model: nn.Module,
    batches: Batches,
    *,
    encode: Encoder,
    device: torch.device,
    precision: str = "fp32",
    dist: Dist = SINGLE,
) -> tuple[Tensor, Tensor]:
    """Per-step logits of a whole evaluation set (each process's share, gathered from all processes).

    Returns:
        ``(logits [T, N, K], targets [N])`` on the CPU, in float32.
    """
    model.eval()
    logits, targets = [], []
    for x, y in batches:
        with autocast(device, precision):
            logits.append(model(encode(x.to(device, non_blocking=True))).float().cpu())
        targets.append(y.cpu())
    parts = all_gather_objects((logits, targets), dist)
    logits = [chunk for part_logits, _ in parts for chunk in part_logits]
    targets = [chunk for _, part_targets in parts for chunk in part_targets]
    if not logits:
        raise ValueError("the evaluation set is empty")
    return torch.cat(logits, dim=1), torch.cat(targets)


@torch.inference_mode()
def collect_features(
    model: nn.Module,
    batches: Any,
    *,
    encode: Encoder,
    device: torch.device,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time-averaged penultimate features ``[N, D]``, labels ``[N]`` and predictions ``[N]`` (at most ``limit``)."""
    model.eval()
    feats, labels, predictions = [], [], []
    for x, y in batches:
        if limit is not None and sum(len(batch) for batch in labels) >= limit:
            break
        x = encode(x.to(device))
        feats.append(model.forward_features(x).float().cpu())
        predictions.append(model(x).mean(0).argmax(-1).cpu())
        labels.append(y)
    return tuple(torch.cat(part)[:limit].numpy() for part in (feats, labels, predictions))
