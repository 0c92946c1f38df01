"""Turn a ``Config`` into objects and run them: the one place that builds models, data and losses from config.

``train(cfg)`` and ``resume(run_dir)`` are what ``tks train`` runs; ``evaluate_checkpoint(path, steps)`` is what
``tks eval`` runs. They write their results to files in the run folder and return them; printing is left to the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, TensorDataset

from tks.activity import measure_activity
from tks.checkpoint import CheckpointError, load_checkpoint
from tks.config import Config, ConfigError, DataConfig, ModelConfig, dump_config, from_dict, to_dict, upgrade_stored
from tks.data import (
    ClassBalancedSampler,
    DataOptions,
    DatasetInfo,
    build_dataset,
    check_options,
    to_time_major,
)
from tks.data.splits import TRAIN_EVAL_SEED, VAL_SEED, holdout, stratified_subset
from tks.distributed import Dist, init_from_env, is_main_from_env, shutdown
from tks.engine import FitState, build_optimizer, fit, predict, set_rng_state, unwrap
from tks.locks import FileLock, lock_run_dir
from tks.losses import Criterion
from tks.metrics import DEFAULT_EXIT_THRESHOLDS, classification_metrics, early_exit_curve
from tks.models import create_model
from tks.paths import check_writable_file, check_writable_folder
from tks.preflight import activation_bytes, check_input_size, check_memory
from tks.provenance import SessionLog, session_record
from tks.runfiles import (
    FINAL_CHECKPOINT,
    RunFileError,
    is_finished,
    merge_evaluation,
    read_metrics,
    remove_stale_temporaries,
    repair_log,
    write_training_metrics,
)
from tks.snn import make_neuron
from tks.utils import make_run_dir, resolve_device, seed_everything


@dataclass(frozen=True)
class TrainResult:
    """Where a run was written, its final test metrics and the trained model."""

    run_dir: Path
    metrics: dict[str, Any]
    model: nn.Module | None
    """None when ``already_finished``."""
    already_finished: bool = False
    """``resume`` of a run that had finished: nothing was trained or written, ``metrics`` are its metrics.json."""


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
    return create_model(
        cfg.name,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        neuron=neuron,
        norm=cfg.norm,
        max_steps=num_steps,
        v_threshold=n.v_threshold,
        connect=cfg.connect,
        stem=cfg.stem,
    )


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


def _loader(
    dataset: Dataset,
    cfg: DataConfig,
    *,
    train: bool,
    seed: int,
    device: torch.device,
    dist: Dist,
    balanced: bool = False,
) -> DataLoader:
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


def train(cfg: Config, *, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train the configured model in a new run folder.

    Writes ``config.yaml``, ``provenance.json``, ``log.jsonl``, ``checkpoint.pt``, ``best.pt`` and ``metrics.json``
    (docs/run-files.md). Under ``torchrun`` every process trains its share and only rank 0 writes.

    Args:
        cfg: the experiment.
        on_epoch_end: called with each epoch's log record on rank 0 (the CLI prints it).
    """
    return _run(cfg, None, None, on_epoch_end)


def resume(run_dir: str | Path, *, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Continue a run from its ``checkpoint.pt``: weights, optimizer, scaler, epoch, best score, RNG states.

    The config is the one stored in the checkpoint. With ``run.deterministic`` on the CPU the result equals the
    uninterrupted run bit for bit. A run that has finished is left as it is (``already_finished``); one that stopped
    has its log mended to the checkpoint's epochs and the temporary files of a cut write removed.

    Raises:
        RunFolderInUseError: while another process trains in ``run_dir`` (``tks.locks``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    # Locked (by rank 0, the one that writes) before the checkpoint is read: a run that is still going would
    # otherwise be resumed from an epoch it is about to pass.
    with lock_run_dir(run_dir) if is_main_from_env() else nullcontext():
        payload = load_checkpoint(run_dir / FINAL_CHECKPOINT)
        cfg = _stored_config(payload, run_dir / FINAL_CHECKPOINT)
        metrics = read_metrics(run_dir / "metrics.json")  # a corrupt file stops the resume before any work
        if payload["epoch"] >= cfg.optim.epochs and is_finished(metrics):
            return TrainResult(run_dir, metrics, None, already_finished=True)
        if is_main_from_env():  # the folder is ours: mend what an interrupted session left
            remove_stale_temporaries(run_dir)
            repair_log(run_dir, payload["epoch"], payload.get("log"))
        return _run(cfg, run_dir, payload, on_epoch_end)


def _stored_config(payload: dict[str, Any], path: Path) -> Config:
    try:
        return from_dict(Config, upgrade_stored(payload["config"]))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its stored config is invalid for this version of tks: {exc}") from None


def _run(
    cfg: Config,
    run_dir: Path | None,
    payload: dict[str, Any] | None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
) -> TrainResult:
    dist = init_from_env(cfg.run.device)
    lock: FileLock | None = None  # of a new run's folder (``resume`` locks the folder it continues)
    deterministic = torch.are_deterministic_algorithms_enabled()  # the caller's setting, restored at the end
    try:
        seed_everything(cfg.run.seed)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True)
        device = resolve_device(cfg.run.device)
        if device.type == "cuda" and dist.enabled:
            device = torch.device("cuda", dist.local_rank)
        if cfg.run.precision == "fp16" and device.type != "cuda":
            raise ConfigError("run.precision fp16 needs a CUDA device (use bf16 on the CPU)")
        _preflight(cfg, run_dir, device, dist)
        progress = cfg.run.progress and dist.is_main
        data = load_training_data(cfg.data, progress=progress)
        train_set, info = data.train, data.info
        per_process = -(-len(train_set) // dist.world_size)  # DistributedSampler pads every share to the same size
        if cfg.data.batch_size > per_process:
            share = f" per process ({len(train_set)} over {dist.world_size})" if dist.enabled else ""
            raise ConfigError(
                f"data.batch_size {cfg.data.batch_size} is larger than the {per_process} training samples{share}: "
                "every epoch would have no full batch, and incomplete batches are dropped"
            )
        test_set, _ = load_split(cfg.data, "test", progress=progress)
        model = build_model(cfg.model, info, cfg.data.num_steps).to(device)
        if cfg.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optim_cfg = cfg.optim
        if optim_cfg.linear_scaling:
            batch = cfg.data.batch_size * dist.world_size * optim_cfg.accumulate
            optim_cfg = replace(optim_cfg, lr=optim_cfg.lr * batch / 1024)
        optimizer = build_optimizer(model, optim_cfg)
        scaler = torch.amp.GradScaler("cuda") if cfg.run.precision == "fp16" else None
        state = FitState()
        if payload is not None:
            _restore(payload, model, optimizer, scaler, state, run_dir)
        if cfg.run.compile:
            model = torch.compile(model)
        if dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

        if run_dir is None:
            run_dir = make_run_dir(cfg.run.out_dir, cfg.run.name) if dist.is_main else Path(cfg.run.out_dir)
            if dist.is_main:
                lock = lock_run_dir(run_dir)
                (run_dir / "config.yaml").write_text(dump_config(cfg))
        sessions = SessionLog(run_dir, session_record(device, dist.world_size, state.epoch)) if dist.is_main else None

        def epoch_done(record: dict[str, Any]) -> None:
            sessions.update(record["epoch"])
            if on_epoch_end is not None:
                on_epoch_end(record)

        def eval_loader(dataset: Dataset | None) -> DataLoader | None:
            if dataset is None:
                return None
            return _loader(dataset, cfg.data, train=False, seed=cfg.run.seed, device=device, dist=dist)

        metrics = fit(
            model,
            _loader(
                train_set,
                cfg.data,
                train=True,
                seed=cfg.run.seed,
                device=device,
                dist=dist,
                balanced=info.sampler == "class_balanced",
            ),
            eval_loader(test_set),
            Criterion(cfg.loss),
            optimizer,
            optim_cfg,
            encode=encoder(info.kind, cfg.data.num_steps, channels_last=cfg.run.channels_last),
            device=device,
            precision=cfg.run.precision,
            scaler=scaler,
            accumulate=optim_cfg.accumulate,
            state=state,
            dist=dist,
            run_dir=run_dir,
            checkpoint_extra={"config": to_dict(cfg)},
            val_batches=eval_loader(data.val),
            train_eval_batches=eval_loader(data.train_eval),
            select_on=cfg.select_on,
            progress=cfg.run.progress,
            tensorboard=cfg.run.tensorboard,
            on_epoch_end=epoch_done if dist.is_main else on_epoch_end,
        )
        metrics.update(world_size=dist.world_size, lr=optim_cfg.lr)
        if dist.is_main:
            sessions.update(state.epoch, finished=True)
            metrics["provenance"] = {"sessions": sessions.sessions}
            write_training_metrics(run_dir, metrics)
        return TrainResult(run_dir, metrics, unwrap(model))
    finally:
        torch.use_deterministic_algorithms(deterministic)
        if lock is not None:
            lock.release()
        shutdown(dist)


def _preflight(cfg: Config, run_dir: Path | None, device: torch.device, dist: Dist) -> None:
    """Refuse, in one line each, what would fail later: unwritable folders, inputs too small, too little memory."""
    info = check_options(cfg.data.name, data_options(cfg.data))
    if dist.is_main:
        check_writable_folder(run_dir if run_dir is not None else cfg.run.out_dir, "run.out_dir")
    if info.kind == "events" and cfg.data.frames_cache not in ("auto", "off"):
        check_writable_folder(cfg.data.frames_cache, "data.frames_cache")
    build = partial(build_model, cfg.model, info, cfg.data.num_steps)
    check_input_size(build, cfg.model.name, cfg.data.name, info.in_channels, info.input_size)
    needed = activation_bytes(
        build, info.in_channels, info.input_size, steps=cfg.data.num_steps, batch=cfg.data.batch_size, training=True
    )
    check_memory(needed, device, f"T={cfg.data.num_steps} with data.batch_size={cfg.data.batch_size}")


def _restore(
    payload: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    state: FitState,
    run_dir: Path | None,
) -> None:
    _load_weights(model, payload, run_dir)
    optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    state.epoch, state.best_top1, state.best_epoch = payload["epoch"], payload["best_top1"], payload["best_epoch"]
    state.selected = payload.get("selected")  # absent from checkpoints written before it was recorded
    state.train_seconds = payload.get("train_seconds", 0.0)  # likewise
    set_rng_state(payload["rng"])  # last: building the model above drew from the generators


def _load_weights(model: nn.Module, payload: dict[str, Any], where: Path | str | None) -> None:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:  # names differ: a checkpoint from another version or a hand-edited config
        name = payload["config"].get("model", {}).get("name")
        raise CheckpointError(f"{where}: its weights do not fit model {name!r}: {_first_line(exc)}") from None


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
    payload = load_checkpoint(path)
    cfg = _stored_config(payload, path)
    info = check_options(cfg.data.name, data_options(cfg.data))
    model = build_model(cfg.model, info, cfg.data.num_steps)
    _load_weights(model, payload, path)
    return LoadedModel(model.eval(), info, cfg, payload.get("epoch"))


FEATURES_LIMIT = 2000
"""Samples whose features ``tks eval --features`` saves: enough for a t-SNE picture, small enough to keep."""


@dataclass(frozen=True)
class EvalResult:
    """What ``evaluate_checkpoint`` measured (also merged into the run's ``metrics.json`` under ``"eval"``)."""

    steps: dict[int, dict[str, Any]]
    activity: dict[str, Any] | None = None
    early_exit: list[dict[str, float]] | None = None
    epoch: int | None = None
    """Completed epochs of the evaluated weights."""


def evaluate_checkpoint(
    path: str | Path,
    steps: Sequence[int] | None = None,
    *,
    data_root: str | None = None,
    device: str = "auto",
    features: bool = False,
    activity: bool = False,
    early_exit: Sequence[float] | None = None,
    event_steps: str = "truncate",
    on_result: Callable[[EvalResult], None] | None = None,
) -> EvalResult:
    """Evaluate a saved model on its test set at several numbers of time steps, from the checkpoint alone.

    Weights do not depend on T, so the same network runs at any T; static inputs are repeated T times. The results
    are merged into ``metrics.json`` of the checkpoint's folder under ``eval[<checkpoint file name>]``, with the
    checkpoint's epoch (see docs/run-files.md): ``checkpoint.pt`` and ``best.pt`` keep separate tables. The
    metrics file is checked (valid JSON, writable) before the evaluation starts.

    Args:
        path: a ``checkpoint.pt`` (or ``best.pt``) written by ``train``.
        steps: the values of T (default: the T it was trained with).
        data_root: overrides the dataset folder stored in the checkpoint's config.
        device: ``auto``, ``cpu`` or ``cuda``.
        features: also save the time-averaged penultimate features of the first ``FEATURES_LIMIT`` test samples at
            the trained T to ``features.npz`` (``features [N, D]``, ``labels [N]``, ``predictions [N]``), for t-SNE.
        activity: also measure firing rates, operations and energy at the trained T (``tks.activity``).
        early_exit: also sweep these confidence thresholds of anytime inference at the largest T.
        event_steps: event data at a T other than the trained one: ``truncate`` runs the first T of the trained
            frames (T may not exceed them); ``rebin`` bins the events into T frames (a frame cache per T, built
            when missing). Recorded in the evaluation.
        on_result: called with the results before anything is written (the CLI prints them), so that a failing
            write (a full disk) loses nothing that was measured.

    Returns:
        The metrics for every T, and the activity and early-exit curve when asked for.
    """
    path = Path(path)
    if steps is not None and any(t < 1 for t in steps):
        raise ConfigError(f"--steps must all be >= 1, got {list(steps)}")
    if early_exit is not None and any(not 0.0 <= th <= 1.0 for th in early_exit):
        raise ConfigError(f"--early-exit thresholds must be in [0, 1], got {list(early_exit)}")
    if event_steps not in ("truncate", "rebin"):
        raise ConfigError(f"--event-steps must be 'truncate' or 'rebin', got {event_steps!r}")
    model, info, cfg, epoch = load_model(path)
    metrics_path = path.with_name("metrics.json")
    read_metrics(metrics_path)  # refuse a corrupt or unwritable file now, not after the evaluation
    check_writable_file(metrics_path, "the run's metrics file")
    features_path = path.with_name("features.npz" if path.name == FINAL_CHECKPOINT else f"features-{path.stem}.npz")
    if features:
        check_writable_file(features_path, "--features")
    steps = sorted(set(steps)) if steps else [cfg.data.num_steps]
    dev = resolve_device(device)
    model = model.to(dev)
    root = data_root if data_root is not None else cfg.data.root
    if info.kind == "events" and event_steps == "truncate" and max(steps) > cfg.data.num_steps:
        raise ConfigError(
            f"the test frames have the trained T={cfg.data.num_steps}; --steps {max(steps)} needs --event-steps rebin"
        )
    test_set, _ = load_split(cfg.data, "test", root)
    loader = _loader(test_set, cfg.data, train=False, seed=cfg.run.seed, device=dev, dist=Dist.single())

    def batches(t: int) -> DataLoader:
        if info.kind != "events" or event_steps == "truncate" or t == cfg.data.num_steps:
            return loader
        rebinned, _ = load_split(cfg.data, "test", root, num_steps=t)
        return _loader(rebinned, cfg.data, train=False, seed=cfg.run.seed, device=dev, dist=Dist.single())

    def encoder(t: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return partial(to_time_major, kind=info.kind, num_steps=t)

    build = partial(build_model, cfg.model, info, cfg.data.num_steps)
    for t in steps:  # every T checked before any is run, so that a refusal throws no evaluation away
        needed = activation_bytes(
            build, info.in_channels, info.input_size, steps=t, batch=cfg.data.eval_batch_size, training=False
        )
        check_memory(needed, dev, f"--steps {t} with data.eval_batch_size={cfg.data.eval_batch_size}")
    # re-binned event results go under their own key, so that merged evaluations never mix the two meanings of T
    steps_key = "steps_rebin" if info.kind == "events" and event_steps == "rebin" else "steps"
    results, logits_at = {}, {}
    for t in steps:
        try:
            logits, targets = predict(model, batches(t), encode=encoder(t), device=dev)
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            if results:  # keep what was measured
                merge_evaluation(path.parent, path.name, epoch, {steps_key: {str(k): m for k, m in results.items()}})
            saved = f"; the results of T={', '.join(map(str, results))} are in metrics.json" if results else ""
            raise ConfigError(f"out of memory evaluating T={t}: {_first_line(exc)}{saved}") from None
        results[t], logits_at[t] = classification_metrics(logits, targets), logits
    evaluation: dict[str, Any] = {steps_key: {str(t): m for t, m in results.items()}}
    curve = None
    if early_exit is not None:
        longest = max(steps)
        curve = early_exit_curve(logits_at[longest], targets, tuple(early_exit) or DEFAULT_EXIT_THRESHOLDS)
        evaluation["early_exit"] = {"num_steps": longest, "curve": curve}
    counts = None
    if activity:
        counts = measure_activity(
            model, loader, encode=encoder(cfg.data.num_steps), device=dev, real_valued_input=info.kind == "static"
        )
        evaluation["activity"] = counts
    collected = None
    if features:
        collected = collect_features(
            model, loader, encode=encoder(cfg.data.num_steps), device=dev, limit=FEATURES_LIMIT
        )
    result = EvalResult(results, counts, curve, epoch)
    if on_result is not None:  # shown before anything is written: a failed write then loses no measurement
        on_result(result)
    if collected is not None:
        feats, labels, predictions = collected
        try:
            np.savez_compressed(features_path, features=feats, labels=labels, predictions=predictions)
        except OSError as exc:
            raise RunFileError(f"cannot write {features_path}: {exc.strerror or exc}") from None
    merge_evaluation(path.parent, path.name, epoch, evaluation)
    return result


@torch.inference_mode()
def collect_features(
    model: nn.Module,
    batches: Any,
    *,
    encode: Callable[[torch.Tensor], torch.Tensor],
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


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: Python's, CUDA's, or the CPU allocator's RuntimeError."""
    return isinstance(exc, MemoryError | torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300]
