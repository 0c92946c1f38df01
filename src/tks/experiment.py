"""Turn a ``Config`` into objects and run them: the one place that builds models, data and losses from config.

``train(cfg)`` and ``resume(run_dir)`` are what ``tks train`` runs; ``evaluate_checkpoint(path, steps)`` is what
``tks eval`` runs. They write their results to files in the run folder and return them; printing is left to the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from tks.activity import measure_activity
from tks.checkpoint import CheckpointError, load_checkpoint
from tks.config import Config, ConfigError, DataConfig, ModelConfig, dump_config, from_dict, to_dict
from tks.data import (
    ClassBalancedSampler,
    DataOptions,
    DatasetInfo,
    build_dataset,
    check_options,
    to_time_major,
)
from tks.distributed import Dist, init_from_env, is_main_from_env, shutdown
from tks.engine import FitState, build_optimizer, fit, predict, set_rng_state, unwrap
from tks.locks import FileLock, lock_run_dir
from tks.losses import Criterion
from tks.metrics import DEFAULT_EXIT_THRESHOLDS, classification_metrics, early_exit_curve
from tks.models import create_model
from tks.paths import check_writable_folder
from tks.preflight import activation_bytes, check_input_size, check_memory
from tks.snn import make_neuron
from tks.utils import make_run_dir, resolve_device, seed_everything, write_json


@dataclass(frozen=True)
class TrainResult:
    """Where a run was written, its final test metrics and the trained model."""

    run_dir: Path
    metrics: dict[str, Any]
    model: nn.Module


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


class _Limited(Subset):
    """A fixed random subset of a dataset (the same for every run seed), keeping ``targets`` for samplers."""

    def __init__(self, dataset: Dataset, limit: int) -> None:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
        super().__init__(dataset, order[: min(limit, len(dataset))].tolist())
        targets = getattr(dataset, "targets", None)
        if targets is not None:
            self.targets = [targets[i] for i in self.indices]


def load_split(
    cfg: DataConfig, split: str, root: str | None = None, num_steps: int | None = None, progress: bool = False
) -> tuple[Dataset, DatasetInfo]:
    """One split of the configured dataset, limited to ``train_limit`` / ``test_limit`` samples when set."""
    dataset, info = build_dataset(
        cfg.name,
        split,
        root if root is not None else cfg.root,
        data_options(cfg, num_steps=num_steps, progress=progress),
    )
    limit = cfg.train_limit if split == "train" else cfg.test_limit
    return (_Limited(dataset, limit) if limit is not None else dataset), info


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


def train(cfg: Config, *, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train the configured model in a new run folder.

    Writes ``config.yaml``, ``log.jsonl``, ``checkpoint.pt``, ``best.pt`` and ``metrics.json``. Under ``torchrun``
    every process trains its share and only rank 0 writes.

    Args:
        cfg: the experiment.
        on_epoch_end: called with each epoch's log record on rank 0 (the CLI prints it).
    """
    return _run(cfg, None, None, on_epoch_end)


def resume(run_dir: str | Path, *, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Continue a run from its ``checkpoint.pt``: weights, optimizer, scaler, epoch, best score, RNG states.

    The config is the one stored in the checkpoint. With ``run.deterministic`` on the CPU the result equals the
    uninterrupted run bit for bit.

    Raises:
        RunFolderInUseError: while another process trains in ``run_dir`` (``tks.locks``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    # Locked (by rank 0, the one that writes) before the checkpoint is read: a run that is still going would
    # otherwise be resumed from an epoch it is about to pass.
    with lock_run_dir(run_dir) if is_main_from_env() else nullcontext():
        payload = load_checkpoint(run_dir / "checkpoint.pt")
        return _run(_stored_config(payload, run_dir / "checkpoint.pt"), run_dir, payload, on_epoch_end)


def _stored_config(payload: dict[str, Any], path: Path) -> Config:
    try:
        return from_dict(Config, payload["config"])
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
        train_set, info = load_split(cfg.data, "train", progress=progress)
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
            _loader(test_set, cfg.data, train=False, seed=cfg.run.seed, device=device, dist=dist),
            Criterion(cfg.loss),
            optimizer,
            optim_cfg,
            encode=partial(to_time_major, kind=info.kind, num_steps=cfg.data.num_steps),
            device=device,
            precision=cfg.run.precision,
            scaler=scaler,
            accumulate=optim_cfg.accumulate,
            state=state,
            dist=dist,
            run_dir=run_dir,
            checkpoint_extra={"config": to_dict(cfg)},
            progress=cfg.run.progress,
            tensorboard=cfg.run.tensorboard,
            on_epoch_end=on_epoch_end,
        )
        metrics.update(world_size=dist.world_size, lr=optim_cfg.lr)
        if dist.is_main:
            write_json(run_dir / "metrics.json", metrics)
        return TrainResult(run_dir, metrics, unwrap(model))
    finally:
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
    set_rng_state(payload["rng"])  # last: building the model above drew from the generators


def _load_weights(model: nn.Module, payload: dict[str, Any], where: Path | str | None) -> None:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:  # names differ: a checkpoint from another version or a hand-edited config
        name = payload["config"].get("model", {}).get("name")
        raise CheckpointError(f"{where}: its weights do not fit model {name!r}: {_first_line(exc)}") from None


def load_model(path: str | Path) -> tuple[nn.Module, DatasetInfo, Config]:
    """The trained model of a checkpoint (on the CPU, in eval mode), its dataset's facts and its config.

    The facts are those of the data as the model saw it: event frames of ``data.frame_size``, not the sensor's size.
    """
    path = Path(path)
    payload = load_checkpoint(path)
    cfg = _stored_config(payload, path)
    info = check_options(cfg.data.name, data_options(cfg.data))
    model = build_model(cfg.model, info, cfg.data.num_steps)
    _load_weights(model, payload, path)
    return model.eval(), info, cfg


FEATURES_LIMIT = 2000
"""Samples whose features ``tks eval --features`` saves: enough for a t-SNE picture, small enough to keep."""


@dataclass(frozen=True)
class EvalResult:
    """What ``evaluate_checkpoint`` measured (also merged into the run's ``metrics.json`` under ``"eval"``)."""

    steps: dict[int, dict[str, Any]]
    activity: dict[str, Any] | None = None
    early_exit: list[dict[str, float]] | None = None


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
) -> EvalResult:
    """Evaluate a saved model on its test set at several numbers of time steps, from the checkpoint alone.

    Weights do not depend on T, so the same network runs at any T; static inputs are repeated T times. The results
    are merged into ``metrics.json`` of the checkpoint's folder under ``"eval"`` (see docs/run-files.md).

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
    model, info, cfg = load_model(path)
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
                _merge_metrics(path.with_name("metrics.json"), {steps_key: {str(k): m for k, m in results.items()}})
            saved = f"; the results of T={', '.join(map(str, results))} are in metrics.json" if results else ""
            raise ConfigError(f"out of memory evaluating T={t}: {_first_line(exc)}{saved}") from None
        results[t], logits_at[t] = classification_metrics(logits, targets), logits
    evaluation: dict[str, Any] = {"checkpoint": path.name, steps_key: {str(t): m for t, m in results.items()}}
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
    if features:
        feats, labels, predictions = collect_features(
            model, loader, encode=encoder(cfg.data.num_steps), device=dev, limit=FEATURES_LIMIT
        )
        np.savez_compressed(path.with_name("features.npz"), features=feats, labels=labels, predictions=predictions)
    _merge_metrics(path.with_name("metrics.json"), evaluation)
    return EvalResult(results, counts, curve)


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


def _merge_metrics(path: Path, evaluation: dict[str, Any]) -> None:
    """Add an evaluation to metrics.json under "eval", keeping the training metrics and earlier values of T."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    previous = data.get("eval", {})
    merged = {**previous, **evaluation}
    for key in ("steps", "steps_rebin"):
        steps = {**previous.get(key, {}), **evaluation.get(key, {})}
        if steps:
            merged[key] = dict(sorted(steps.items(), key=lambda kv: int(kv[0])))
    data["eval"] = merged
    write_json(path, data)


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: Python's, CUDA's, or the CPU allocator's RuntimeError."""
    return isinstance(exc, MemoryError | torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300]
