"""Training runs (``tks train``): a new run from its config, or a stopped one from its checkpoint, to the end.

``train(cfg)`` starts a run folder and ``resume(run_dir)`` continues one. Both build the objects (``tks.build``,
``tks.data.loading``), restore a checkpoint's progress, hand them to the training loop (``tks.engine.fit``) with the
epoch-end hooks that write the run's files (``tks.hooks``), and write the final ``metrics.json``. They return the
results; printing is left to the CLI.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tks.build import build_model, build_optimizer, encoder, resolve_device, scaled_optim
from tks.checkpoint import CheckpointError, CheckpointRecord, load_checkpoint
from tks.checkpoint_model import stored_config
from tks.config import Config, ConfigError, to_dict
from tks.config.identity import identity_settings
from tks.data import DatasetInfo, check_options
from tks.data.loading import TrainingData, data_options, load_split, load_training_data, make_loader
from tks.distributed import Dist, init_from_env, is_main_from_env, shutdown
from tks.engine import EpochHook, EvalSets, FitState, Training, fit, unwrap
from tks.errors import TKSError, TKSWarning
from tks.extras import require
from tks.hooks import AppendLog, OnRecord, RecordSession, SaveCheckpoint, TensorBoardScalars
from tks.inference import SINGLE
from tks.locks import FileLock, lock_run_dir
from tks.losses import Criterion, zero_weight_warning
from tks.paths import check_writable_folder
from tks.plugins import load_plugins, load_run_plugins
from tks.preflight import activation_bytes, check_input_size, check_memory
from tks.provenance import SessionLog, session_record
from tks.runfiles import (
    BEST_CHECKPOINT,
    FINAL_CHECKPOINT,
    check_config_file,
    is_finished,
    make_run_dir,
    read_metrics,
    remove_stale_temporaries,
    repair_log,
    write_config,
    write_training_metrics,
)
from tks.seeding import seed_everything, set_rng_state
from tks.tracking import MLflowTracker


@dataclass(frozen=True)
class TrainResult:
    """Where a run was written, its final test metrics and the trained model."""

    run_dir: Path
    metrics: dict[str, Any]
    model: nn.Module | None
    """None when ``already_finished``."""
    already_finished: bool = False
    """``resume`` of a run that had finished: nothing was trained or written, ``metrics`` are its metrics.json."""


def train(cfg: Config, *, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train the configured model in a new run folder.

    Writes ``config.yaml``, ``provenance.json``, ``log.jsonl``, ``checkpoint.pt``, ``best.pt`` and ``metrics.json``
    (docs/run-files.md). Under ``torchrun`` every process trains its share and only rank 0 writes.

    Args:
        cfg: the experiment; its ``run.plugins`` are loaded first and recorded as absolute paths.
        on_epoch_end: called with each epoch's log record on rank 0 (the CLI prints it).
    """
    plugins = load_plugins(cfg.run.plugins)
    cfg = replace(cfg, run=replace(cfg.run, plugins=tuple(p.spec for p in plugins)))
    return _run(cfg, None, None, on_epoch_end)


def resume(run_dir: str | Path, *, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Continue a run from its ``checkpoint.pt``: weights, optimizer, scaler, epoch, best score, RNG states.

    The config is the one stored in the checkpoint. With ``run.deterministic`` on the CPU the result equals the
    uninterrupted run bit for bit, under ``torchrun`` too when resumed by as many processes (each continues from
    its own generator states). A run that has finished is left as it is (``already_finished``); one that stopped
    has its log mended to the checkpoint's epochs and the temporary files of a cut write removed.

    Raises:
        CheckpointError: when the folder or its checkpoint is missing, or the checkpoint holds no training state.
        RunFolderInUseError: while another process trains in ``run_dir`` (``tks.locks``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    # Locked (by rank 0, the one that writes) before the checkpoint is read: a run that is still going would
    # otherwise be resumed from an epoch it is about to pass.
    with lock_run_dir(run_dir) if is_main_from_env() else nullcontext():
        path = run_dir / FINAL_CHECKPOINT
        record = load_checkpoint(path)
        cfg = stored_config(record, path)
        check_config_file(run_dir, cfg)
        load_run_plugins(cfg.run.plugins, run_dir)
        if not record.resumable:
            raise CheckpointError(f"{path} holds a model but not the training state (optimizer, epoch, generators)")
        metrics = read_metrics(run_dir / "metrics.json")  # a corrupt file stops the resume before any work
        if record.epoch >= cfg.optim.epochs and is_finished(metrics):
            return TrainResult(run_dir, metrics, None, already_finished=True)
        if is_main_from_env():  # the folder is ours: mend what an interrupted session left
            remove_stale_temporaries(run_dir)
            repair_log(run_dir, record.epoch, record.log)
        return _run(cfg, run_dir, record, on_epoch_end)


def _run(
    cfg: Config,
    run_dir: Path | None,
    record: CheckpointRecord | None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
) -> TrainResult:
    """Train ``cfg`` in ``run_dir`` (None: a new folder), continuing from ``record`` when given."""
    dist = init_from_env(cfg.run.device)
    lock: FileLock | None = None  # of a new run's folder (``resume`` locks the folder it continues)
    deterministic = torch.are_deterministic_algorithms_enabled()  # the caller's setting, restored at the end
    hooks: list[EpochHook] = []
    try:
        seed_everything(cfg.run.seed)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True)
        device = training_device(cfg, dist)
        _preflight(cfg, run_dir, device, dist)
        data, test_set = _datasets(cfg, dist)
        training, state = build_training(cfg, data.info, device, dist, record, run_dir)
        if run_dir is None:
            run_dir, lock = _new_run_dir(cfg) if dist.is_main else (Path(cfg.run.out_dir), None)
        plugins = [p.as_record() for p in load_plugins(cfg.run.plugins)]  # loaded already: their records
        session = session_record(device, dist.world_size, state.epoch, plugins)
        sessions = SessionLog(run_dir, session) if dist.is_main else None
        if dist.is_main:
            hooks = _epoch_hooks(cfg, run_dir, sessions, on_epoch_end)
        loader = partial(make_loader, seed=cfg.run.seed, device=device, dist=dist)
        train_batches = loader(data.train, cfg.data, train=True, balanced=data.info.sampler == "class_balanced")
        evaluated = EvalSets(
            test=loader(test_set, cfg.data, train=False),
            val=_eval_loader(loader, data.val, cfg),
            train_eval=_eval_loader(loader, data.train_eval, cfg),
            select_on=cfg.select_on,
            best_checkpoint=run_dir / BEST_CHECKPOINT,
        )
        if dist.is_main and cfg.loss.name == "tks" and (warning := zero_weight_warning(cfg.loss.tks, cfg.optim.epochs)):
            warnings.warn(warning, TKSWarning, stacklevel=2)  # here: only a run that trains hears it
        metrics = fit(training, train_batches, evaluated, state=state, hooks=hooks)
        metrics.update(world_size=dist.world_size, lr=training.schedule.lr)
        if dist.is_main:
            sessions.update(state.epoch, finished=True)
            metrics["provenance"] = {"sessions": sessions.sessions}
            metrics["experiment"] = identity_settings(cfg)  # what was trained: an edited config.yaml is caught
            write_training_metrics(run_dir, metrics)
            for tracker in (h for h in hooks if isinstance(h, MLflowTracker)):
                tracker.finish(metrics)
        return TrainResult(run_dir, metrics, unwrap(training.model))
    finally:
        for hook in hooks:
            if isinstance(hook, TensorBoardScalars):
                hook.close()
        torch.use_deterministic_algorithms(deterministic)
        if lock is not None:
            lock.release()
        shutdown(dist)


def _new_run_dir(cfg: Config) -> tuple[Path, FileLock]:
    """A new run folder, locked, with its ``config.yaml``; on failure (a full disk) no folder is left behind."""
    run_dir = make_run_dir(cfg.run.out_dir, cfg.run.name)
    lock = None
    try:
        lock = lock_run_dir(run_dir)
        write_config(run_dir, cfg)
    except TKSError:
        if lock is not None:
            lock.release()
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing in it yet but the lock and a cut config
        raise
    return run_dir, lock


def training_device(cfg: Config, dist: Dist = SINGLE) -> torch.device:
    """The device this process trains on (its own GPU under ``torchrun``); fp16 needs CUDA (``ConfigError``)."""
    device = resolve_device(cfg.run.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    if cfg.run.precision == "fp16" and device.type != "cuda":
        raise ConfigError("run.precision fp16 needs a CUDA device (use bf16 on the CPU)")
    return device


def _preflight(cfg: Config, run_dir: Path | None, device: torch.device, dist: Dist) -> None:
    """Refuse, in one line each, what would fail later: unwritable folders, inputs too small, too little memory."""
    info = check_options(cfg.data.name, data_options(cfg.data))
    if dist.is_main:
        check_writable_folder(run_dir if run_dir is not None else cfg.run.out_dir, "run.out_dir")
        if cfg.run.tensorboard:
            require("tensorboard", "run.tensorboard")  # before a run folder exists
        Criterion(cfg.loss)  # an unknown loss or option: one line now, not after the data has loaded
    if info.kind == "events" and cfg.data.frames_cache not in ("auto", "off"):
        check_writable_folder(cfg.data.frames_cache, "data.frames_cache")
    check_step_fits(cfg, info, device)


def check_step_fits(cfg: Config, info: DatasetInfo, device: torch.device) -> None:
    """Refuse, in one line, a model its input is too small for, or a training batch too big for ``device``."""
    build = partial(build_model, cfg.model, info, cfg.data.num_steps)
    check_input_size(build, cfg.model.name, cfg.data.name, info.in_channels, info.input_size)
    needed = activation_bytes(
        build, info.in_channels, info.input_size, steps=cfg.data.num_steps, batch=cfg.data.batch_size, training=True
    )
    check_memory(needed, device, f"T={cfg.data.num_steps} with data.batch_size={cfg.data.batch_size}")


def _datasets(cfg: Config, dist: Dist) -> tuple[TrainingData, Dataset]:
    """The training data and the test set; refuses a batch larger than a process's share of the training set."""
    progress = cfg.run.progress and dist.is_main
    data = load_training_data(cfg.data, progress=progress)
    per_process = -(-len(data.train) // dist.world_size)  # DistributedSampler pads every share to the same size
    if cfg.data.batch_size > per_process:
        share = f" per process ({len(data.train)} over {dist.world_size})" if dist.enabled else ""
        raise ConfigError(
            f"data.batch_size {cfg.data.batch_size} is larger than the {per_process} training samples{share}: "
            "every epoch would have no full batch, and incomplete batches are dropped"
        )
    test_set, _ = load_split(cfg.data, "test", progress=progress)
    return data, test_set


def build_training(
    cfg: Config,
    info: DatasetInfo,
    device: torch.device,
    dist: Dist = SINGLE,
    record: CheckpointRecord | None = None,
    run_dir: Path | None = None,
) -> tuple[Training, FitState]:
    """The model, loss, optimizer and schedule of the run, and its progress (restored from ``record`` when given).

    ``tks sweep --dry-run --measure`` times steps of the same objects (``tks.sweep.measure``).
    """
    model = build_model(cfg.model, info, cfg.data.num_steps).to(device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    schedule = scaled_optim(cfg.optim, cfg.data.batch_size, dist.world_size)
    optimizer = build_optimizer(model, schedule)
    scaler = torch.amp.GradScaler("cuda") if cfg.run.precision == "fp16" else None
    state = FitState()
    if record is not None:
        state = _restore(record, model, optimizer, scaler, run_dir, dist)
    if cfg.run.compile:
        model = torch.compile(model)
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    training = Training(
        model,
        Criterion(cfg.loss),
        optimizer,
        schedule,
        encode=encoder(info.kind, cfg.data.num_steps, channels_last=cfg.run.channels_last),
        device=device,
        precision=cfg.run.precision,
        scaler=scaler,
        dist=dist,
        progress=cfg.run.progress,
    )
    return training, state


def _restore(
    record: CheckpointRecord,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    run_dir: Path | None,
    dist: Dist = SINGLE,
) -> FitState:
    """Put a checkpoint's weights, optimizer, scaler and this rank's generator states back; its progress."""
    record.load_weights(model, run_dir)
    optimizer.load_state_dict(record.optimizer)
    if scaler is not None and record.scaler:
        scaler.load_state_dict(record.scaler)
    state = FitState(record.epoch, record.best_top1, record.best_epoch, record.selected, record.train_seconds)
    set_rng_state(record.rng_of(dist.rank, dist.world_size))  # last: building the model drew from the generators
    return state


def _epoch_hooks(
    cfg: Config,
    run_dir: Path,
    sessions: SessionLog,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
) -> list[EpochHook]:
    """The main process's work after each epoch, in order: checkpoint, log line, TensorBoard, session, caller."""
    hooks: list[EpochHook] = [SaveCheckpoint(run_dir, to_dict(cfg)), AppendLog(run_dir)]
    if cfg.run.tensorboard:
        hooks.append(TensorBoardScalars(run_dir))
    if cfg.run.tracker == "mlflow":
        hooks.append(MLflowTracker(run_dir, cfg))
    hooks.append(RecordSession(sessions))
    if on_epoch_end is not None:
        hooks.append(OnRecord(on_epoch_end))
    return hooks


def _eval_loader(loader: Callable[..., DataLoader], dataset: Dataset | None, cfg: Config) -> DataLoader | None:
    return None if dataset is None else loader(dataset, cfg.data, train=False)
