"""Datasets by name, and the time-major encoding of their batches.

``build_dataset(name, split, root)`` returns a map-style dataset of batch-first samples and its ``DatasetInfo``;
``to_time_major`` turns a loader's batch into ``[T, B, ...]``. This package knows no network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset

from tks.data.digits import digits
from tks.data.encoding import InputKind, to_time_major
from tks.errors import UnknownNameError


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the training loop need to know about a dataset."""

    name: str
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]
    kind: InputKind
    needs_root: bool


@dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    build: Callable[[str, str | None], Dataset]


DATASETS: dict[str, _Entry] = {
    "digits": _Entry(
        DatasetInfo("digits", 10, 1, (8, 8), "static", needs_root=False), lambda split, root: digits(split)
    ),
}


def list_datasets() -> list[str]:
    """Names accepted by ``build_dataset``."""
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """Facts about a registered dataset, without loading it."""
    if name not in DATASETS:
        raise UnknownNameError("dataset", name, list_datasets())
    return DATASETS[name].info


def build_dataset(name: str, split: str, root: str | None = None) -> tuple[Dataset, DatasetInfo]:
    """Load one split of a registered dataset.

    Args:
        name: see ``list_datasets()``.
        split: ``"train"`` or ``"test"``.
        root: folder holding the files, for datasets that are not bundled.

    Returns:
        ``(dataset, info)``; items are ``(input, label)`` with batch-first inputs.
    """
    info = dataset_info(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return DATASETS[name].build(split, root), info


__all__ = ["DATASETS", "DatasetInfo", "build_dataset", "dataset_info", "list_datasets", "to_time_major"]
