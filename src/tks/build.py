"""Objects from a config: device, model, data (datasets, subsets, samplers, loaders), encoder and optimizer.

The one place that builds models and data from config values (``tks.experiment`` trains them, ``tks.evaluation``
measures them, ``tks.export`` converts them); ``load_model`` rebuilds a checkpoint's model from its stored config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, TensorDataset

from tks.checkpoint import CheckpointError, CheckpointRecord, load_checkpoint
from tks.config import Config, ConfigError, DataConfig, ModelConfig, OptimConfig, from_dict, upgrade_stored
from tks.data import ClassBalancedSampler, DataOptions, DatasetInfo, build_dataset, check_options, to_time_major
from tks.data.registry import check_items
from tks.data.splits import TRAIN_EVAL_SEED, VAL_SEED, holdout, stratified_subset
from tks.distributed import Dist
from tks.errors import DeviceError
from tks.models import create_model
from tks.plugins import load_run_plugins
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
    (the same subset as before this option existed when ``val_size`` is None); ``train_eval_size`` images (at most
    all) are finally drawn, stratified and fixed, from the images trained on. The validation and train-eval images
    are read with the test transform (no augmentation).

    Raises:
        ConfigError: when ``val_size`` leaves no training image.
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
        size = min(cfg.train_eval_size, len(trained))
        train_eval = _Subset(clean, trained[stratified_subset(targets[trained], size, TRAIN_EVAL_SEED)], targets)
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


def stored_config(record: CheckpointRecord, path: Path) -> Config:
    """The config a checkpoint was trained with, upgraded from older versions' layouts.

    Raises:
        CheckpointError: when it is not a valid config for this version of tks.
    """
    try:
        return from_dict(Config, upgrade_stored(record.config))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its stored config is invalid for this version of tks: {exc}") from None


class LoadedModel(NamedTuple):
    """A checkpoint's trained model (on the CPU, in eval mode), its dataset's facts, its config and epoch."""

    model: nn.Module
    info: DatasetInfo
    config: Config
    epoch: int | None
    """Completed epochs of the weights (None for checkpoints that do not say)."""


def load_model(path: str | Path) -> LoadedModel:
    """The trained model of a checkpoint, with what is needed to run and label it.

    The dataset facts are those of the data as the model saw it: event frames of ``data.frame_size``, not the
    sensor's size.
    """
    path = Path(path)
    record = load_checkpoint(path)
    cfg = stored_config(record, path)
    load_run_plugins(cfg.run.plugins, path.parent)
    info = check_options(cfg.data.name, data_options(cfg.data))
    model = build_model(cfg.model, info, cfg.data.num_steps)
    record.load_weights(model, path)
    return LoadedModel(model.eval(), info, cfg, record.epoch)


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
