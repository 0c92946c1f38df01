"""The dataset registry: ``register_dataset`` puts a loader under a name, ``build_dataset`` loads by name.

A loader is a function ``(split, root) -> torch.utils.data.Dataset`` whose items are ``(x, y)``: ``x`` an image
``[C, H, W]`` for ``kind="static"`` (tks repeats it over the T steps, as for the built-in image datasets) or frames
``[T, C, H, W]`` for ``kind="events"``; ``y`` an int in ``[0, num_classes)``. A loader that also names an
``options`` parameter receives the run's ``DataOptions`` (T, augmentation, cache...), as the built-ins do::

    @tks.register_dataset("my-images", num_classes=10, in_channels=3, input_size=(32, 32))
    def my_images(split: str, root: str | None) -> Dataset:
        return torchvision.datasets.ImageFolder(f"{root}/{split}", transform=ToTensor())

    # config: data: {name: my-images, root: /data/mine}

A dataset that offers ``targets`` (a sequence of labels, as torchvision's do) gets validation splits and balanced
sampling without loading every sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from torch import Tensor
from torch.utils.data import Dataset

from tks.data.encoding import InputKind
from tks.data.errors import DatasetError
from tks.errors import OptionError
from tks.registry import Registry, parameters


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the training loop need to know about a dataset."""

    name: str
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]
    kind: InputKind
    needs_root: bool
    sampler: Literal["shuffle", "class_balanced"] = "shuffle"
    """The official training sampler: plain shuffling, or class-balanced draws with replacement (N-Caltech101)."""
    classes: tuple[str, ...] | None = None
    """The class names, label order, where known (the exported NIR graph carries them)."""
    reads_root: bool = True
    """Whether the loader reads ``data.root`` at all (False: the data ship with tks or a library, as digits)."""


@dataclass(frozen=True)
class DataOptions:
    """How a dataset is framed, augmented, normalised, split and cached (the defaults are the official choices)."""

    num_steps: int = 10
    """T, frames per event sample (ignored by static datasets)."""
    frame_size: int | None = None
    """Side of the square event frames (``None``: the dataset's ``input_size``)."""
    augment: str = "official"
    """Training augmentation preset (what ``register_dataset`` lists in ``augments``)."""
    normalization: str = "dataset"
    """Image statistics: ``dataset``, ``imagenet`` or ``official`` (ImageNet's to train, CIFAR-10's to test)."""
    split_scheme: str = "official"
    """Per-class split of event datasets: ``official`` or ``tebn`` (CIFAR10-DVS)."""
    frames_cache: str = "auto"
    """Frame cache folder: ``auto`` (``$TKS_CACHE/frames``, default ``~/.cache/tks/frames``), ``off`` or a path."""
    workers: int = 0
    """Processes that frame recordings when a frame cache is built."""
    progress: bool = True
    """Show a progress bar while a frame cache is built (on a terminal)."""
    eval_transform: bool = False
    """Give the training split the test-time transform (no augmentation): the training images as evaluation sees
    them, for a validation split or a clean training accuracy."""


Loader = TypeVar("Loader", bound=Callable[..., Dataset])


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its facts, its loader and the options it takes."""

    info: DatasetInfo
    load: Callable[..., Dataset]
    augments: tuple[str, ...] = ("official", "none")
    normalizations: tuple[str, ...] = ("dataset",)
    split_schemes: tuple[str, ...] = ("official",)
    normalization: Normalization | None = None
    """The (mean, std) per channel the test inputs are normalised with, or a function of the options giving it;
    None: not known (the exported NIR graph then says so)."""


Stats = tuple[tuple[float, ...], tuple[float, ...]]
Normalization = Stats | Callable[[DataOptions], Stats | None]


DATASETS: Registry[DatasetEntry] = Registry("dataset", source=lambda entry: entry.load)
"""Every registered dataset by name; ``register_dataset`` fills it."""


def register_dataset(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    kind: InputKind = "static",
    classes: Sequence[str] | None = None,
    needs_root: bool = False,
    sampler: Literal["shuffle", "class_balanced"] = "shuffle",
    augments: Sequence[str] = ("official", "none"),
    normalizations: Sequence[str] = ("dataset",),
    split_schemes: Sequence[str] = ("official",),
    normalization: Normalization | None = None,
    reads_root: bool = True,
) -> Callable[[Loader], Loader]:
    """Register a dataset loader under ``name`` (a decorator; the loader is returned unchanged).

    Args:
        name: what ``data.name`` and ``build_dataset`` call it.
        num_classes: K.
        in_channels: C of ``x``.
        input_size: ``(H, W)`` of ``x``.
        kind: ``static`` (images, repeated over T) or ``events`` (frames ``[T, C, H, W]``).
        classes: the class names in label order, if known.
        needs_root: the loader reads files from ``data.root`` and has no default place for them.
        sampler: the training sampler: ``shuffle`` or ``class_balanced``.
        augments: the values of ``data.augment`` the loader understands (it reads them from ``options``);
            ``official`` is whatever the loader does by itself.
        normalizations: likewise, of ``data.normalization``.
        split_schemes: likewise, of ``data.split``.
        normalization: ``(mean, std)`` per channel of the test inputs, if they are normalised, so that an exported
            model says what its input is; or a function of the ``DataOptions`` giving it.
        reads_root: False when the loader never reads ``data.root`` (its data ship with it), so that a root given
            for it is reported as ignored.

    Raises:
        RegistryError: when another loader already has the name.
        OptionError: for impossible facts (no classes, no channels, a bad size or kind).
    """
    if num_classes < 1 or in_channels < 1 or len(input_size) != 2 or min(input_size) < 1:
        raise OptionError(f"dataset {name!r}: num_classes, in_channels and both sides of input_size must be >= 1")
    if kind not in ("static", "events"):
        raise OptionError(f"dataset {name!r}: kind must be 'static' or 'events', got {kind!r}")
    if classes is not None and len(classes) != num_classes:
        raise OptionError(f"dataset {name!r}: {len(classes)} class names for {num_classes} classes")
    size = (int(input_size[0]), int(input_size[1]))
    names = tuple(classes) if classes is not None else None
    info = DatasetInfo(name, num_classes, in_channels, size, kind, needs_root, sampler, names, reads_root)

    choices = (tuple(augments), tuple(normalizations), tuple(split_schemes), normalization)
    return DATASETS.decorator(name, lambda load: DatasetEntry(info, load, *choices))


def list_datasets() -> list[str]:
    """Names accepted by ``build_dataset``."""
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """Facts about a registered dataset, without loading it."""
    return DATASETS[name].info


def check_options(name: str, options: DataOptions) -> DatasetInfo:
    """The facts of a dataset as these options make it (event frame size), after checking it takes them.

    Raises:
        UnknownNameError: for an unregistered name.
        OptionError: for an option the dataset does not take.
    """
    entry = DATASETS[name]
    info = entry.info
    for what, value, allowed in (
        ("augment", options.augment, entry.augments),
        ("normalization", options.normalization, entry.normalizations),
        ("split", options.split_scheme, entry.split_schemes),
    ):
        if value not in allowed:
            raise OptionError(f"dataset {name!r} takes data.{what} in {list(allowed)}, got {value!r}")
    if options.num_steps < 1:
        raise OptionError(f"num_steps must be >= 1, got {options.num_steps}")
    if info.kind == "events" and options.frame_size is not None:
        if options.frame_size < 1:
            raise OptionError(f"frame_size must be >= 1, got {options.frame_size}")
        info = replace(info, input_size=(options.frame_size, options.frame_size))
    return info


def build_dataset(
    name: str, split: str, root: str | None = None, options: DataOptions | None = None
) -> tuple[Dataset, DatasetInfo]:
    """Load one split of a registered dataset.

    Args:
        name: see ``list_datasets()``.
        split: ``"train"`` or ``"test"``.
        root: folder holding the files (bundled datasets need none; Fashion-MNIST defaults to the Debian install).
        options: framing, augmentation, normalisation, split and cache choices (default: the official ones).

    Returns:
        ``(dataset, info)``; items are ``(input, label)`` with batch-first inputs, and ``info.input_size`` is the
        size the inputs actually have.

    Raises:
        UnknownNameError: for an unregistered name.
        OptionError: for an option the dataset does not take.
        DatasetError: for missing or malformed files (``EventFileError`` for a corrupt event file).
    """
    options = options or DataOptions()
    info = check_options(name, options)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    load = DATASETS[name].load
    dataset = load(split, root, options=options) if "options" in parameters(load) else load(split, root)
    return dataset, info


def check_items(dataset: Dataset, info: DatasetInfo, split: str, num_steps: int) -> None:
    """Refuse, in one line, a dataset whose first item is not what its registration says (a run's first check).

    Raises:
        DatasetError: for something that is not a non-empty map-style dataset of ``(x, y)``, or an ``x`` whose
            shape is not ``[C, H, W]`` (static) or ``[T', C, H, W]`` with ``T' >= num_steps`` (events).
    """
    where = f"dataset {info.name!r} ({split} split)"
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise DatasetError(f"{where}: its loader returned {type(dataset).__name__}, not a map-style dataset")
    if len(dataset) == 0:
        raise DatasetError(f"{where} is empty")
    item = dataset[0]
    if not isinstance(item, tuple | list) or len(item) != 2 or not isinstance(item[0], Tensor):
        raise DatasetError(f"{where}: items must be (x, y) with x a tensor, got {type(item).__name__}")
    shape, expected = tuple(item[0].shape), (info.in_channels, *info.input_size)
    if info.kind == "static" and shape != expected:
        raise DatasetError(f"{where}: x has shape {list(shape)}, its registration says [C, H, W] = {list(expected)}")
    if info.kind == "events" and (len(shape) != 4 or shape[1:] != expected or shape[0] < num_steps):
        raise DatasetError(
            f"{where}: x has shape {list(shape)}, its registration says frames [T, C, H, W] = [{num_steps} or more, "
            f"{', '.join(map(str, expected))}]"
        )


def test_normalization(name: str, options: DataOptions) -> Stats | None:
    """The ``(mean, std)`` per channel a registered dataset's test inputs are normalised with, if known."""
    normalization = DATASETS[name].normalization
    return normalization(options) if callable(normalization) else normalization
