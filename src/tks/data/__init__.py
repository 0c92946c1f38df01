"""Datasets by name, and the time-major encoding of their batches.

``build_dataset(name, split, root, options)`` returns a map-style dataset of batch-first samples and its
``DatasetInfo``; ``to_time_major`` turns a loader's batch into ``[T, B, ...]``. Static datasets yield images
``[C, H, W]``; docs/datasets.md lists the on-disk layout of each. This package knows no network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch.utils.data import Dataset

from tks.data import static
from tks.data.digits import digits
from tks.data.encoding import InputKind, to_time_major
from tks.data.errors import DatasetError
from tks.data.transforms import (
    LARGE_PRESETS,
    NORMALIZATIONS,
    SMALL_PRESETS,
    large_image_transforms,
    small_image_transforms,
)
from tks.errors import OptionError, UnknownNameError


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
class DataOptions:
    """How a dataset is augmented and normalised (the defaults are the official choices)."""

    augment: str = "official"
    """Training augmentation preset (``DATASETS[name].augments``)."""
    normalization: str = "dataset"
    """Image statistics: ``dataset``, ``imagenet`` or ``official`` (ImageNet's to train, CIFAR-10's to test)."""


Builder = Callable[[str, str | None, DataOptions], Dataset]


@dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    build: Builder
    augments: tuple[str, ...] = ("official", "none")
    normalizations: tuple[str, ...] = ("dataset",)


# ------------------------------------------------------------------------------------------------- builders


def _small_images(name: str, split: str, root: str | None, options: DataOptions) -> Dataset:
    if name == "fashion-mnist":
        images, targets = static.read_fashion_mnist(split, root)
    else:
        images, targets = static.read_cifar(name, split, root)
    train, test = small_image_transforms(name, images.shape[1], options.augment, options.normalization)
    return static.ImageArrays(images, targets, train if split == "train" else test)


def _large_images(name: str, split: str, root: str | None, options: DataOptions) -> Dataset:
    train, test = large_image_transforms(options.augment, color_jitter=name == "imagenet")
    transform = train if split == "train" else test
    if name == "stanford-cars":
        return static.stanford_cars(split, root, transform)
    files = {"imagenet": static.imagenet_files, "cub200": static.cub_files, "stanford-dogs": static.dogs_files}[name]
    return static.ImageFiles(*files(split, root), transform)


def _image_entry(
    name: str, classes: int, size: int, builder: Builder, presets: tuple[str, ...], norms: tuple[str, ...]
) -> _Entry:
    channels = 1 if name == "fashion-mnist" else 3
    info = DatasetInfo(name, classes, channels, (size, size), "static", needs_root=name != "fashion-mnist")
    return _Entry(info, partial(builder, name), presets, norms)


DATASETS: dict[str, _Entry] = {
    "digits": _Entry(
        DatasetInfo("digits", 10, 1, (8, 8), "static", needs_root=False), lambda split, root, options: digits(split)
    ),
    "fashion-mnist": _image_entry(
        "fashion-mnist", 10, 28, _small_images, ("official", "none", "crop_flip"), ("dataset",)
    ),
    "cifar10": _image_entry("cifar10", 10, 32, _small_images, SMALL_PRESETS, NORMALIZATIONS),
    "cifar100": _image_entry("cifar100", 100, 32, _small_images, SMALL_PRESETS, NORMALIZATIONS),
    "imagenet": _image_entry("imagenet", 1000, 224, _large_images, LARGE_PRESETS, NORMALIZATIONS),
    "cub200": _image_entry("cub200", 200, 224, _large_images, LARGE_PRESETS, NORMALIZATIONS),
    "stanford-dogs": _image_entry("stanford-dogs", 120, 224, _large_images, LARGE_PRESETS, NORMALIZATIONS),
    "stanford-cars": _image_entry("stanford-cars", 196, 224, _large_images, LARGE_PRESETS, NORMALIZATIONS),
}


# ------------------------------------------------------------------------------------------------- public API


def list_datasets() -> list[str]:
    """Names accepted by ``build_dataset``."""
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """Facts about a registered dataset, without loading it."""
    if name not in DATASETS:
        raise UnknownNameError("dataset", name, list_datasets())
    return DATASETS[name].info


def _check_options(name: str, options: DataOptions) -> DatasetInfo:
    info = dataset_info(name)
    entry = DATASETS[name]
    for what, value, allowed in (
        ("augment", options.augment, entry.augments),
        ("normalization", options.normalization, entry.normalizations),
    ):
        if value not in allowed:
            raise OptionError(f"dataset {name!r} takes data.{what} in {list(allowed)}, got {value!r}")
    return info


def build_dataset(
    name: str, split: str, root: str | None = None, options: DataOptions | None = None
) -> tuple[Dataset, DatasetInfo]:
    """Load one split of a registered dataset.

    Args:
        name: see ``list_datasets()``.
        split: ``"train"`` or ``"test"``.
        root: folder holding the files (bundled datasets need none; Fashion-MNIST defaults to the Debian install).
        options: augmentation and normalisation choices (default: the official ones).

    Returns:
        ``(dataset, info)``; items are ``(input, label)`` with batch-first inputs.

    Raises:
        UnknownNameError: for an unregistered name.
        OptionError: for an option the dataset does not take.
        DatasetError: for missing or malformed files.
    """
    options = options or DataOptions()
    info = _check_options(name, options)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return DATASETS[name].build(split, root, options), info


__all__ = [
    "DATASETS",
    "DataOptions",
    "DatasetError",
    "DatasetInfo",
    "build_dataset",
    "dataset_info",
    "list_datasets",
    "to_time_major",
]
