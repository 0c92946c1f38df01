"""Event datasets: CIFAR10-DVS, N-Caltech101 and the bundled digits-dvs, as frames ``[T, 2, S, S]``.

Each recording is one file in a folder named after its class. Files are taken in natural order of their names
within a class (``x_2`` before ``x_10``: the recording order of CIFAR10-DVS), labels are indices into a fixed
class list, and the train/test split is taken per class from that order (``split_indices``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from tks.data import cache
from tks.data.errors import DatasetError, missing
from tks.data.event_io import EventStream, read_aedat2, read_aedat4, read_atis_bin
from tks.data.files import cache_dir, natural_key
from tks.data.frames import FrameDataset, Framing, event_augmentation

CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The 100 object classes of Caltech101 without "Faces" (removed from N-Caltech101) plus BACKGROUND_Google, in
# byte order of the folder names, which is the order tonic lists them in.
NCALTECH101_CLASSES = tuple(
    sorted(
        "BACKGROUND_Google Faces_easy Leopards Motorbikes accordion airplanes anchor ant barrel bass beaver binocular "
        "bonsai brain brontosaurus buddha butterfly camera cannon car_side ceiling_fan cellphone chair chandelier "
        "cougar_body cougar_face crab crayfish crocodile crocodile_head cup dalmatian dollar_bill dolphin dragonfly "
        "electric_guitar elephant emu euphonium ewer ferry flamingo flamingo_head garfield gerenuk gramophone "
        "grand_piano hawksbill headphone hedgehog helicopter ibis inline_skate joshua_tree kangaroo ketch lamp laptop "
        "llama lobster lotus mandolin mayfly menorah metronome minaret nautilus octopus okapi pagoda panda pigeon "
        "pizza platypus pyramid revolver rhino rooster saxophone schooner scissors scorpion sea_horse snoopy "
        "soccer_ball stapler starfish stegosaurus stop_sign strawberry sunflower tick trilobite umbrella watch "
        "water_lilly wheelchair wild_cat windsor_chair wrench yin_yang".split()
    )
)

TRAIN_FRACTION = 0.9


@dataclass(frozen=True)
class EventSet:
    """Where one event dataset's files are and how they are read.

    Attributes:
        name: registered name.
        classes: class folder names; a label is an index into this tuple.
        readers: ``(file suffix, reader)`` pairs; all files of one root must share one format.
        subfolders: where the class folders may sit below the root (``""``: the root itself), tried in order.
        layout: the expected layout, for error messages.
        sensor_size: a fixed ``(width, height)``; ``None`` takes what the file declares.
        crop_to_events: frame each recording on the bounding box of its events (N-Caltech101).
        official_augment: the official training augmentation is crop/flip/rotation (CIFAR10-DVS) rather than none.
    """

    name: str
    classes: tuple[str, ...]
    readers: tuple[tuple[str, Callable[[Path], EventStream]], ...]
    subfolders: tuple[str, ...]
    layout: str
    sensor_size: tuple[int, int] | None = None
    crop_to_events: bool = False
    official_augment: bool = False


CIFAR10_DVS = EventSet(
    "cifar10-dvs",
    CIFAR10_DVS_CLASSES,
    ((".aedat4", read_aedat4), (".aedat", read_aedat2)),
    ("", "CIFAR10DVS"),
    "class folders airplane/ ... truck/ holding the AEDAT 4.0 files (*.aedat4, the release tonic reads) or the "
    "original AEDAT 2.0 files (*.aedat), directly in the root or in root/CIFAR10DVS/",
    official_augment=True,
)
NCALTECH101 = EventSet(
    "ncaltech101",
    NCALTECH101_CLASSES,
    ((".bin", read_atis_bin),),
    ("", "Caltech101", "NCALTECH101/Caltech101"),
    "the 101 class folders of N-Caltech101 (accordion/ ... yin_yang/, BACKGROUND_Google/) holding ATIS *.bin "
    "files, directly in the root or in root/Caltech101/ (the unzipped Caltech101.zip)",
    crop_to_events=True,
)


@dataclass(frozen=True)
class Recordings:
    """The files of one event dataset, in sample order, with their labels and their reader."""

    base: Path
    files: list[Path]
    targets: np.ndarray
    read: Callable[[Path], EventStream]


def find_recordings(spec: EventSet, root: str | Path | None) -> Recordings:
    """List a dataset's recording files.

    Raises:
        DatasetError: for no root, no class folder with files of a known format, mixed formats or a folder
            that is not a class of the dataset.
    """
    if root is None:
        raise missing(spec.name, None, spec.layout)
    root = Path(root).expanduser()
    for sub in spec.subfolders:
        base = root / sub
        folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        if any(p.name in spec.classes for p in folders):
            break
    else:
        raise missing(spec.name, root, spec.layout)
    unknown = [p.name for p in folders if p.name not in spec.classes]
    if unknown:
        raise DatasetError(f"{spec.name}: {base} holds folders that are not classes of the dataset: {unknown[:5]}")
    suffixes = {suffix for suffix, _ in spec.readers}
    by_suffix: dict[str, list[tuple[Path, int]]] = {}
    for folder in folders:
        label = spec.classes.index(folder.name)
        for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
            if path.suffix in suffixes and path.is_file():
                by_suffix.setdefault(path.suffix, []).append((path, label))
    if len(by_suffix) != 1:
        problem = "mixes " + " and ".join(sorted(by_suffix)) + " files" if by_suffix else "holds no recording files"
        raise DatasetError(f"{spec.name}: {base} {problem}; expected {spec.layout}")
    ((suffix, items),) = by_suffix.items()
    files, targets = zip(*items, strict=True)
    return Recordings(base, list(files), np.array(targets, dtype=np.int64), dict(spec.readers)[suffix])


def split_indices(targets: np.ndarray, split: str, scheme: str = "official") -> np.ndarray:
    """Indices of one split, taken per class from the sample order.

    ``official`` (the official code's ``--train-portion 0.9``): the first ``round(0.9 n)`` samples of a class
    of n train, the rest test. ``tebn`` (the split of TEBN, SpikingJelly's ``CIFAR10DVSTEBNSplit``): the first
    ``n - round(0.9 n)`` samples test, the rest train. Both are deterministic, disjoint, and cover every sample.

    Args:
        targets: ``[N]`` labels in sample order.
        split: ``"train"`` or ``"test"``.
        scheme: ``"official"`` or ``"tebn"``.

    Returns:
        ``[M]`` int64 indices in increasing order.
    """
    chosen = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        n_train = round(TRAIN_FRACTION * len(members))
        if scheme == "official":
            chosen.append(members[:n_train] if split == "train" else members[n_train:])
        elif scheme == "tebn":
            n_test = len(members) - n_train
            chosen.append(members[n_test:] if split == "train" else members[:n_test])
        else:
            raise ValueError(f"split scheme must be 'official' or 'tebn', got {scheme!r}")
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


class ClassBalancedSampler(Sampler[int]):
    """N-Caltech101's official training sampler: each sample weighted N / (count of its class), with replacement.

    Draws N samples per epoch, so every class is seen about equally often. The draw depends only on ``seed`` and
    the epoch (``set_epoch``, called by the training loop), so a resumed run sees the same samples; under several
    processes each takes every ``world_size``-th draw from ``rank``.

    Args:
        targets: ``[N]`` labels.
        seed: seed of the draws.
        rank: this process's index.
        world_size: number of processes.
    """

    def __init__(self, targets: np.ndarray, *, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        targets = np.asarray(targets)
        self.weights = torch.as_tensor(len(targets) / np.bincount(targets)[targets], dtype=torch.float64)
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.num_samples = len(targets) // world_size

    def set_epoch(self, epoch: int) -> None:
        """Draw the samples of this epoch next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.world_size
        drawn = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(drawn[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples


@dataclass(frozen=True)
class FrameOptions:
    """How to frame, split, augment and cache an event dataset."""

    num_steps: int
    """T, the number of frames per sample."""
    frame_size: int
    """S, the side of the square frames."""
    augment: bool
    """Apply the crop/flip/rotation training augmentation."""
    split_scheme: str = "official"
    """``official`` or ``tebn`` (``split_indices``)."""
    frames_cache: str = "auto"
    """``auto`` (``<cache dir>/frames``), ``off`` (frame on every access) or a folder."""
    workers: int = 0
    """Processes that frame files when a cache is built."""
    progress: bool = True
    """Show a progress bar while a cache is built."""


def frames_root(frames_cache: str) -> Path | None:
    """The folder holding frame caches, or ``None`` for ``off``."""
    if frames_cache == "off":
        return None
    return cache_dir() / "frames" if frames_cache == "auto" else Path(frames_cache).expanduser()


def event_dataset(spec: EventSet, recordings: Recordings, split: str, options: FrameOptions) -> FrameDataset:
    """One split of an event dataset as frames, from its cache (built or rebuilt first when needed).

    Returns:
        A ``FrameDataset`` of ``(frames [T, 2, S, S], label)``; ``targets`` holds its labels.
    """
    index = split_indices(recordings.targets, split, options.split_scheme)
    files = [recordings.files[i] for i in index]
    targets = recordings.targets[index]
    framing = Framing(
        recordings.read, options.num_steps, options.frame_size, spec.sensor_size, crop_to_events=spec.crop_to_events
    )
    transform = event_augmentation(options.frame_size) if options.augment else None
    root = frames_root(options.frames_cache)
    if root is None:
        return FrameDataset(targets, files=files, framing=framing, transform=transform)
    key = cache.CacheKey(
        spec.name, split, options.split_scheme, options.num_steps, options.frame_size, str(recordings.base.resolve())
    )
    job = cache.FrameJob(key, files, targets, framing)
    folder = cache.ensure(root, job, workers=options.workers, progress=options.progress)
    return FrameDataset(targets, frames_file=folder / "frames.npy", transform=transform)
