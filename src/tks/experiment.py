"""Turn a ``Config`` into objects and run them: the one place that builds models, data and losses from config.

``train(cfg)`` is what ``tks train`` runs; ``evaluate_checkpoint(path, steps)`` is what ``tks eval`` runs. Both write
their results to files in the run folder and return them; printing is left to the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tks.checkpoint import CheckpointError, load_checkpoint
from tks.config import Config, ConfigError, DataConfig, ModelConfig, dump_config, from_dict, to_dict
from tks.data import DatasetInfo, build_dataset, to_time_major
from tks.engine import build_optimizer, fit, predict
from tks.losses import Criterion
from tks.metrics import classification_metrics
from tks.models import create_model
from tks.snn import make_neuron
from tks.utils import make_run_dir, resolve_device, seed_everything, write_json


@dataclass(frozen=True)
class TrainResult:
    """Where a run was written and its final test metrics."""

    run_dir: Path
    metrics: dict[str, Any]


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


def _loader(dataset: Dataset, cfg: DataConfig, *, train: bool, seed: int, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size if train else cfg.eval_batch_size,
        shuffle=train,
        drop_last=train,  # as the official loaders: every step sees a full batch
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed) if train else None,
    )


def train(cfg: Config, *, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train the configured model, writing ``config.yaml``, ``log.jsonl``, ``checkpoint.pt``, ``metrics.json``.

    Args:
        cfg: the experiment.
        on_epoch_end: called with each epoch's log record (the CLI prints it).
    """
    seed_everything(cfg.run.seed)
    device = resolve_device(cfg.run.device)
    train_set, info = build_dataset(cfg.data.name, "train", cfg.data.root)
    test_set, _ = build_dataset(cfg.data.name, "test", cfg.data.root)
    model = build_model(cfg.model, info, cfg.data.num_steps).to(device)
    optimizer = build_optimizer(model, cfg.optim)

    run_dir = make_run_dir(cfg.run.out_dir, cfg.run.name)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    metrics = fit(
        model,
        _loader(train_set, cfg.data, train=True, seed=cfg.run.seed, device=device),
        _loader(test_set, cfg.data, train=False, seed=cfg.run.seed, device=device),
        Criterion(cfg.loss),
        optimizer,
        cfg.optim,
        encode=partial(to_time_major, kind=info.kind, num_steps=cfg.data.num_steps),
        device=device,
        precision=cfg.run.precision,
        run_dir=run_dir,
        checkpoint_extra={"config": to_dict(cfg)},
        progress=cfg.run.progress,
        on_epoch_end=on_epoch_end,
    )
    write_json(run_dir / "metrics.json", metrics)
    return TrainResult(run_dir, metrics)


def evaluate_checkpoint(
    path: str | Path,
    steps: Sequence[int] | None = None,
    *,
    data_root: str | None = None,
    device: str = "auto",
) -> dict[int, dict[str, Any]]:
    """Evaluate a saved model on its test set at several numbers of time steps, from the checkpoint alone.

    Weights do not depend on T, so the same network runs at any T; static inputs are repeated T times. The results
    are also written to ``eval.json`` beside the checkpoint.

    Args:
        path: a ``checkpoint.pt`` written by ``train``.
        steps: the values of T (default: the T it was trained with).
        data_root: overrides the dataset folder stored in the checkpoint's config.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        ``{T: classification_metrics}``.
    """
    payload = load_checkpoint(path)
    try:
        cfg = from_dict(Config, payload["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its stored config is invalid for this version of tks: {exc}") from None
    steps = list(steps) if steps else [cfg.data.num_steps]
    if any(t < 1 for t in steps):
        raise ConfigError(f"--steps must all be >= 1, got {steps}")
    dev = resolve_device(device)
    test_set, info = build_dataset(cfg.data.name, "test", data_root if data_root is not None else cfg.data.root)
    model = build_model(cfg.model, info, cfg.data.num_steps).to(dev)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:  # names differ: a checkpoint from another version or a hand-edited config
        raise CheckpointError(f"{path}: its weights do not fit model {cfg.model.name!r}: {_first_line(exc)}") from None
    loader = _loader(test_set, cfg.data, train=False, seed=cfg.run.seed, device=dev)
    results = {}
    for t in steps:
        logits, targets = predict(model, loader, encode=partial(to_time_major, kind=info.kind, num_steps=t), device=dev)
        results[t] = classification_metrics(logits, targets)
    write_json(
        Path(path).with_name("eval.json"),
        {
            "checkpoint": str(path),
            "trained_steps": cfg.data.num_steps,
            "results": {str(t): m for t, m in results.items()},
        },
    )
    return results


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300]
