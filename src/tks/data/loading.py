"""A configured dataset as a run reads it: its options, the splits and subsets trained and measured on, the loaders.

``load_training_data`` cuts the training split into the images trained on, the validation split and the
clean-training-accuracy subset; ``load_split`` gives one split (the test set limited to ``test_limit``);
``make_loader`` gives a loader of either, with each process's share under ``torchrun``. Subsets keep their
``targets``, so samplers and further splits read the labels without loading a sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, TensorDataset

from tks.config import ConfigError, DataConfig
from tks.data import ClassBalancedSampler, DataOptions, DatasetInfo, build_dataset
from tks.data.registry import check_items
from tks.data.splits import TRAIN_EVAL_SEED, VAL_SEED, holdout, stratified_subset
from tks.distributed import Dist


def data_options(cfg: DataConfig, num_steps: int | None = None, progress: bool = True) -> DataOptions:
    """The dataset choices of a data config; ``num_steps`` overrides T (to re-bin events at another T)."""
    return DataOptions(
        num_steps=num_steps or cfg.num_steps,
        frame_size=cfg.frame_size,
        augment=cfg.augment,
        normalization=cfg.normalization,
        split_scheme=cfg.split,
        frames_cache=cfg.frames_cache,
        workers=cfg.num_workers,
        progress=progress,
    )


class _Subset(Subset):
    """Some samples of a dataset, in the given order, keeping ``targets`` for samplers and further splits."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], targets: np.ndarray) -> None:
        super().__init__(dataset, [int(i) for i in indices])
        self.targets = np.asarray(targets)[self.indices]


def dataset_targets(dataset: Dataset) -> np.ndarray:
    """The labels ``[N]`` of a dataset built by ``tks.data.build_dataset``, without loading its samples."""
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, TensorDataset):  # digits
        targets = dataset.tensors[-1]
    if targets is None:
        raise ConfigError(f"the labels of {type(dataset).__name__} cannot be read without loading every sample")
    return np.asarray(targets, dtype=np.int64)


def _limit_order(length: int) -> np.ndarray:
    """The fixed random order that ``train_limit`` / ``test_limit`` take their first samples from (any seed)."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(0)).numpy()


def _limited(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None:
        return dataset
    return _Subset(dataset, _limit_order(len(dataset))[:limit], dataset_targets(dataset))


@dataclass(frozen=True)
class TrainingData:
    """What a run trains on, and what it measures besides the test set."""

    train: Dataset
    """The images trained on (training transform)."""
    val: Dataset | None
    """The validation split (test transform), when ``data.val_size`` is set."""
    train_eval: Dataset | None
    """The clean-training-accuracy subset (test transform), when ``data.train_eval_size`` is set."""
    info: DatasetInfo


def load_training_data(cfg: DataConfig, progress: bool = False) -> TrainingData:
    """The training split of the configured dataset, cut into the images trained on and the evaluated subsets.

    In this order: ``val_size`` images are held out of the whole training split (``stratified_subset`` with its own
    fixed seed, so the same images for every run); ``train_limit`` then keeps a fixed random subset of the rest
    (the same subset as before this option existed when ``val_size`` is None); ``train_eval_size`` images (no more
    than are left) are finally drawn, stratified and fixed, from the images trained on. The validation and
    train-eval images are read with the test transform (no augmentation).

    Raises:
        ConfigError: when ``val_size`` leaves no training image, or ``train_eval_size`` asks for more than are left.
    """
    options = data_options(cfg, progress=progress)
    full, info = build_dataset(cfg.name, "train", cfg.root, options)
    check_items(full, info, "train", cfg.num_steps)
    if cfg.val_size is None and cfg.train_eval_size is None:
        return TrainingData(_limited(full, cfg.train_limit), None, None, info)
    targets = dataset_targets(full)
    clean, _ = build_dataset(cfg.name, "train", cfg.root, replace(options, eval_transform=True, progress=False))
    trained = np.arange(len(full))
    val = None
    if cfg.val_size is not None:
        if cfg.val_size >= len(full):
            raise ConfigError(
                f"data.val_size={cfg.val_size} leaves no training image: {cfg.name} has {len(full)} training images"
            )
        trained, held = holdout(targets, cfg.val_size, VAL_SEED)
        val = _Subset(clean, held, targets)
    if cfg.train_limit is not None:
        trained = trained[_limit_order(len(trained))[: cfg.train_limit]]
    train_eval = None
    if cfg.train_eval_size is not None:
        if cfg.train_eval_size > len(trained):  # measuring fewer than the config says would go unnoticed
            raise ConfigError(
                f"data.train_eval_size={cfg.train_eval_size} is more than the {len(trained)} images trained on "
                f"({cfg.name}, after val_size and train_limit); set it to at most {len(trained)}, or null"
            )
        picked = stratified_subset(targets[trained], cfg.train_eval_size, TRAIN_EVAL_SEED)
        train_eval = _Subset(clean, trained[picked], targets)
    train = full if len(trained) == len(full) else _Subset(full, trained, targets)
    return TrainingData(train, val, train_eval, info)


def load_split(
    cfg: DataConfig, split: str, root: str | None = None, num_steps: int | None = None, progress: bool = False
) -> tuple[Dataset, DatasetInfo]:
    """One split of the configured dataset: ``test`` (limited to ``test_limit`` samples when set) or ``train``.

    ``train`` is the images trained on (``load_training_data``: without the validation split, limited to
    ``train_limit``).
    """
    if split == "train":
        data = load_training_data(replace(cfg, root=root if root is not None else cfg.root), progress=progress)
        return data.train, data.info
    dataset, info = build_dataset(
        cfg.name,
        split,
        root if root is not None else cfg.root,
        data_options(cfg, num_steps=num_steps, progress=progress),
    )
    return _limited(dataset, cfg.test_limit), info


class _Shard(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: each sample evaluated exactly once across processes."""

    def __init__(self, length: int, dist: Dist) -> None:
        self.indices = range(dist.rank, length, dist.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(
    dataset: Dataset,
    cfg: DataConfig,
    *,
    train: bool,
    seed: int,
    device: torch.device,
    dist: Dist,
    balanced: bool = False,
) -> DataLoader:
    """The loader of a training set (shuffled by ``(seed, epoch)``, full batches) or of an evaluated set (in order).

    Under ``torchrun`` each process gets its share: a training set split by ``DistributedSampler`` (or the class
    balanced sampler), an evaluated set sharded so that every sample is evaluated exactly once.
    """
    if train and balanced:  # N-Caltech101's official sampler; like the shuffle below, seeded by (seed, epoch)
        sampler: Sampler[int] = ClassBalancedSampler(
            dataset.targets, seed=seed, rank=dist.rank, world_size=dist.world_size
        )
    elif train:  # shuffled by (seed, epoch) only, so a resumed run sees the same order; split across processes
        sampler = DistributedSampler(dataset, dist.world_size, dist.rank, shuffle=True, seed=seed)
    else:
        sampler = _Shard(len(dataset), dist)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size if train else cfg.eval_batch_size,
        sampler=sampler,
        drop_last=train,  # as the official loaders: every step sees a full batch
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
