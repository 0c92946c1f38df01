"""Evaluation of a saved model (``tks eval``): its test set at several T, from the checkpoint alone.

``evaluate_checkpoint`` rebuilds the model from the checkpoint's stored config (``tks.checkpoint_model.load_model``),
measures it, and merges the results into the run's ``metrics.json`` (``tks.runfiles``); it checks everything it can
refuse (arguments, output files, memory for every T) before measuring anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from tks.activity import measure_activity
from tks.anytime import evaluate_rule
from tks.build import build_model, encoder, resolve_device
from tks.calibration import load_exit_rule
from tks.checkpoint_model import LoadedModel, load_model
from tks.config import Config, ConfigError
from tks.data.loading import load_split, make_loader
from tks.data.registry import DatasetInfo
from tks.distributed import Dist
from tks.errors import TKSWarning, short_message
from tks.eval_options import EvalOptions
from tks.inference import collect_features, predict
from tks.metrics import DEFAULT_EXIT_THRESHOLDS, classification_metrics, early_exit_curve
from tks.paths import check_writable_file
from tks.preflight import activation_bytes, check_memory
from tks.runfiles import FINAL_CHECKPOINT, merge_evaluation, read_metrics, write_features

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
    exit_rule: dict[str, Any] | None = None
    """The calibrated early-exit rule on the test set (``tks.anytime.evaluate_rule``), with its energy."""


def evaluate_checkpoint(
    path: str | Path,
    options: EvalOptions | None = None,
    *,
    on_result: Callable[[EvalResult], None] | None = None,
) -> EvalResult:
    """Evaluate a saved model on its test set at several numbers of time steps, from the checkpoint alone.

    Weights do not depend on T, so the same network runs at any T; static inputs are repeated T times. The results
    are merged into ``metrics.json`` of the checkpoint's folder under ``eval[<checkpoint file name>]``, with the
    checkpoint's epoch (see docs/run-files.md): ``checkpoint.pt`` and ``best.pt`` keep separate tables. The
    metrics file is checked (valid JSON, writable) before the evaluation starts.

    Args:
        path: a ``checkpoint.pt`` (or ``best.pt``) written by ``train``.
        options: what to measure (``tks.eval_options.EvalOptions``; default: top-1/top-5, AURC and the other
            metrics at the trained T). With ``features``, the first ``FEATURES_LIMIT`` test samples' features go
            to ``features.npz`` (``features [N, D]``, ``labels [N]``, ``predictions [N]``); ``event_steps`` is
            recorded in the evaluation.
        on_result: called with the results before anything is written (the CLI prints them), so that a failing
            write (a full disk) loses nothing that was measured.

    Returns:
        The metrics for every T, and the activity and early-exit curve when asked for.
    """
    path, options = Path(path), options or EvalOptions()
    steps, features = options.steps, options.features
    loaded = load_model(path)
    cfg, info = loaded.config, loaded.info
    features_path = _check_outputs(path, features)  # before the evaluation, not after it
    if features and not callable(getattr(loaded.model, "forward_features", None)):
        raise ConfigError(
            f"--features needs the model's forward_features(x) (time-averaged penultimate features [B, D]); "
            f"model {cfg.model.name!r} has none"
        )
    rule = load_exit_rule(loaded.record, path, options.exit_rule) if options.exit_rule is not None else None
    steps = sorted(set(steps or [cfg.data.num_steps]) | ({rule.num_steps} if rule else set()))
    _warn_unused_options(options, info)
    rebin = info.kind == "events" and options.event_steps == "rebin"
    if info.kind == "events" and not rebin and max(steps) > cfg.data.num_steps:
        raise ConfigError(
            f"the test frames have the trained T={cfg.data.num_steps}; T={max(steps)} needs the events re-binned "
            "(event_steps 'rebin')"
        )
    dev = resolve_device(options.device)
    model = loaded.model.to(dev)
    root = options.data_root if options.data_root is not None else cfg.data.root
    loader = _test_loader(cfg, root, dev)
    _check_memory(loaded, steps, dev)  # every T before any is run, so that a refusal throws no evaluation away
    # re-binned event results go under their own key, so that merged evaluations never mix the two meanings of T
    steps_key = "steps_rebin" if rebin else "steps"

    def loader_at(t: int) -> DataLoader:
        return _test_loader(cfg, root, dev, num_steps=t) if rebin and t != cfg.data.num_steps else loader

    results, logits_at, targets = _measure_steps(path, loaded, model, steps, loader_at, steps_key, dev)
    evaluation: dict[str, Any] = {steps_key: {str(t): m for t, m in results.items()}}
    curve = None
    if options.early_exit is not None:
        longest = max(steps)
        curve = early_exit_curve(logits_at[longest], targets, options.early_exit or DEFAULT_EXIT_THRESHOLDS)
        evaluation["early_exit"] = {"num_steps": longest, "curve": curve}
    trained_encoder = encoder(info.kind, cfg.data.num_steps)
    counts = None
    if options.activity:
        counts = measure_activity(
            model, loader, encode=trained_encoder, device=dev, real_valued_input=info.kind == "static"
        )
        evaluation["activity"] = counts
    exits = None
    if rule is not None:
        exits = {"rule": rule.to_dict(), **evaluate_rule(rule, logits_at[rule.num_steps], targets)}
        if options.activity:
            exits.update(_exit_energy(model, loader_at, info, dev, exits["steps_histogram"]))
        evaluation["exit_rule"] = exits
    collected = None
    if features:
        collected = collect_features(model, loader, encode=trained_encoder, device=dev, limit=FEATURES_LIMIT)
    result = EvalResult(results, counts, curve, loaded.epoch, exits)
    if on_result is not None:  # shown before anything is written: a failed write then loses no measurement
        on_result(result)
    if collected is not None:
        write_features(features_path, *collected)
    merge_evaluation(path.parent, path.name, loaded.epoch, evaluation)
    return result


def _exit_energy(
    model: torch.nn.Module,
    loader_at: Callable[[int], DataLoader],
    info: DatasetInfo,
    device: torch.device,
    histogram: Sequence[int],
) -> dict[str, float]:
    """The energy of early exit against running all T steps: E_exit = sum_t (n_t / N) E(t).

    E(t) is the estimate of ``tks.activity`` for running t steps, measured over the whole test set; n_t samples
    exit at step t. It assumes that the samples leaving at t fire like the average sample (an approximation: the
    activity is not measured per sample).
    """
    energy = [
        measure_activity(
            model, loader_at(t), encode=encoder(info.kind, t), device=device, real_valued_input=info.kind == "static"
        )["totals"]["energy_uj"]
        for t in range(1, len(histogram) + 1)
    ]
    total = sum(histogram)
    exit_energy = sum(n * e for n, e in zip(histogram, energy, strict=True)) / total
    ratio = exit_energy / energy[-1] if energy[-1] > 0 else float("nan")  # a network that never fires: no ratio
    return {"energy_uj": exit_energy, "full_energy_uj": energy[-1], "energy_ratio": ratio}


def _warn_unused_options(options: EvalOptions, info: DatasetInfo) -> None:
    """A warning for each option that this dataset ignores, rather than silence."""
    if options.event_steps == "rebin" and info.kind != "events":
        warnings.warn(
            f"--event-steps rebin is ignored: {info.name} is not event data (its {info.kind} input is the same "
            "at every T)",
            TKSWarning,
            stacklevel=3,
        )
    if options.data_root is not None and not info.reads_root:
        warnings.warn(
            f"--data-root is ignored: {info.name} reads no data folder (its data ship with tks or a library)",
            TKSWarning,
            stacklevel=3,
        )


def _check_outputs(path: Path, features: bool) -> Path:
    """Refuse a corrupt or unwritable ``metrics.json`` (and features file); return the features file's path."""
    metrics_path = path.with_name("metrics.json")
    read_metrics(metrics_path)
    check_writable_file(metrics_path, "the run's metrics file")
    features_path = path.with_name("features.npz" if path.name == FINAL_CHECKPOINT else f"features-{path.stem}.npz")
    if features:
        check_writable_file(features_path, "the features file")
    return features_path


def _measure_steps(
    path: Path,
    loaded: LoadedModel,
    model: torch.nn.Module,
    steps: Sequence[int],
    loader_at: Callable[[int], DataLoader],
    steps_key: str,
    device: torch.device,
) -> tuple[dict[int, dict[str, Any]], dict[int, Tensor], Tensor]:
    """Classification metrics at each T, the logits ``[T, N, K]`` of each, and the targets ``[N]``.

    Out of memory at some T keeps the T measured before it in ``metrics.json`` and stops with one line.
    """
    results: dict[int, dict[str, Any]] = {}
    logits_at: dict[int, Tensor] = {}
    for t in steps:
        try:
            logits, targets = predict(model, loader_at(t), encode=encoder(loaded.info.kind, t), device=device)
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            _keep_measured(path, loaded.epoch, steps_key, results)
            saved = f"; the results of T={', '.join(map(str, results))} are in metrics.json" if results else ""
            raise ConfigError(f"out of memory evaluating T={t}: {short_message(exc)}{saved}") from None
        results[t], logits_at[t] = classification_metrics(logits, targets), logits
    return results, logits_at, targets


def _test_loader(cfg: Config, root: str, device: torch.device, num_steps: int | None = None) -> DataLoader:
    """The test set's loader; ``num_steps`` re-bins event data into that many frames."""
    test_set, _ = load_split(cfg.data, "test", root, num_steps=num_steps)
    return make_loader(test_set, cfg.data, train=False, seed=cfg.run.seed, device=device, dist=Dist.single())


def _check_memory(loaded: LoadedModel, steps: Sequence[int], device: torch.device) -> None:
    """Refuse, before any evaluation, a T whose activations cannot fit in ``device``'s free memory."""
    cfg, info = loaded.config, loaded.info
    build = partial(build_model, cfg.model, info, cfg.data.num_steps)
    batch = cfg.data.eval_batch_size
    for t in steps:
        needed = activation_bytes(build, info.in_channels, info.input_size, steps=t, batch=batch, training=False)
        check_memory(needed, device, f"T={t} with data.eval_batch_size={batch}")


def _keep_measured(path: Path, epoch: int | None, steps_key: str, results: dict[int, dict[str, Any]]) -> None:
    """Merge the T measured before a failure into ``metrics.json``, so that they are not lost."""
    if results:
        merge_evaluation(path.parent, path.name, epoch, {steps_key: {str(k): m for k, m in results.items()}})


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: Python's, CUDA's, or the CPU allocator's RuntimeError."""
    return isinstance(exc, MemoryError | torch.OutOfMemoryError) or "can't allocate memory" in str(exc)
