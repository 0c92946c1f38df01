"""Datasets by name, and the time-major encoding of their batches.

``build_dataset(name, split, root, options)`` returns a map-style dataset of batch-first samples and its
``DatasetInfo``; ``to_time_major`` turns a loader's batch into ``[T, B, ...]``. Static datasets yield images
``[C, H, W]``, event datasets frames ``[T, 2, S, S]`` (from a frame cache that ``prepare_frames``, i.e.
``tks prepare``, builds once). ``register_dataset`` adds one of your own (``tks.data.registry``); the built-ins in
``tks.data.builtin`` register the same way. docs/datasets.md lists the on-disk layout of each. A run's splits,
subsets and loaders of a configured dataset are built in ``tks.data.loading``. This package knows no network.
"""

from __future__ import annotations

from pathlib import Path

from tks.data import builtin  # noqa: F401 (the built-in datasets register themselves)
from tks.data.encoding import to_time_major
from tks.data.errors import DatasetError, EventFileError
from tks.data.events import ClassBalancedSampler, split_indices
from tks.data.registry import (
    DATASETS,
    DataOptions,
    DatasetEntry,
    DatasetInfo,
    build_dataset,
    check_options,
    dataset_info,
    list_datasets,
    register_dataset,
    test_normalization,
)
from tks.errors import OptionError


def prepare_frames(name: str, root: str | None, options: DataOptions) -> list[Path]:
    """Build (or check) the frame caches of both splits of an event dataset; what ``tks prepare`` runs.

    Returns:
        The two cache folders, train first.

    Raises:
        OptionError: for a static dataset or ``frames_cache="off"``.
    """
    info = check_options(name, options)
    if info.kind != "events":
        raise OptionError(f"{name} is a static image dataset; only event datasets have frames to prepare")
    if options.frames_cache == "off":
        raise OptionError("prepare writes a frame cache; frames_cache must not be 'off'")
    folders = []
    for split in ("train", "test"):
        dataset, _ = build_dataset(name, split, root, options)
        folders.append(dataset.frames_file.parent)
    return folders


__all__ = [
    "DATASETS",
    "ClassBalancedSampler",
    "DataOptions",
    "DatasetEntry",
    "DatasetError",
    "DatasetInfo",
    "EventFileError",
    "build_dataset",
    "check_options",
    "dataset_info",
    "list_datasets",
    "prepare_frames",
    "register_dataset",
    "split_indices",
    "test_normalization",
    "to_time_major",
]
