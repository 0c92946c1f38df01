"""``tks calibrate``: an early-exit rule with a guarantee for a trained run, chosen on held-out data.

``calibrate_checkpoint`` runs the checkpoint's model over a split it did not train on (by default the run's
validation split, ``data.val_size``), chooses the rule by Learn-then-Test (``tks.anytime.calibrate``), and stores
it twice: ``exit-rule.json`` in the run folder (``exit-rule-best.json`` for ``best.pt``) and inside the checkpoint,
so that the rule travels with the weights (``tks export`` copies it into the NIR graph). ``load_exit_rule`` reads it
back for ``tks eval --exit-rule``. The test set is refused: a rule chosen on it would promise nothing about it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from tks.anytime import ExitRule, calibrate, empirical_threshold, evaluate_rule
from tks.build import encoder, resolve_device
from tks.checkpoint import CheckpointRecord, save_checkpoint
from tks.checkpoint_model import LoadedModel, load_model
from tks.config import ConfigError
from tks.data.loading import load_split, load_training_data, make_loader
from tks.distributed import Dist
from tks.errors import TKSWarning
from tks.exit_options import CalibrationOptions
from tks.inference import predict
from tks.locks import lock_run_dir
from tks.runfiles import FINAL_CHECKPOINT, write_json


def checkpoint_path(run: str | Path) -> Path:
    """A run folder's final checkpoint, or the checkpoint file given."""
    run = Path(run)
    return run / FINAL_CHECKPOINT if run.is_dir() else run


def run_checkpoints(paths: Sequence[str | Path]) -> list[Path]:
    """The checkpoints that paths name, in name order within a folder of runs.

    A path is a checkpoint file, a run folder (its ``checkpoint.pt``), or a folder of run folders (a sweep's output).

    Raises:
        ConfigError: a path that is none of these.
    """
    found = []
    for given in map(Path, paths):
        if given.is_file() or (given / FINAL_CHECKPOINT).is_file():
            found.append(checkpoint_path(given))
            continue
        inside = sorted(p for p in given.glob(f"*/{FINAL_CHECKPOINT}")) if given.is_dir() else []
        if not inside:
            raise ConfigError(f"{given}: no checkpoint.pt there, nor in the run folders inside it")
        found += inside
    return found


def rule_file(checkpoint: Path) -> Path:
    """Where a checkpoint's rule is written: ``exit-rule.json`` (``checkpoint.pt``) or ``exit-rule-<stem>.json``."""
    name = "exit-rule.json" if checkpoint.name == FINAL_CHECKPOINT else f"exit-rule-{checkpoint.stem}.json"
    return checkpoint.with_name(name)


def calibrate_checkpoint(run: str | Path, options: CalibrationOptions | None = None) -> ExitRule:
    """Choose and store the early-exit rule of a run's checkpoint (see the module docstring).

    Args:
        run: a run folder (its ``checkpoint.pt``) or a checkpoint file.
        options: the bound, the rule family and the calibration split.

    Returns:
        The rule, as written to ``exit-rule.json`` and the checkpoint.
    """
    path, options = checkpoint_path(run), options or CalibrationOptions()
    with lock_run_dir(path.parent):  # a training session of the folder would overwrite the checkpoint meanwhile
        return _calibrate_locked(path, options)


def _calibrate_locked(path: Path, options: CalibrationOptions) -> ExitRule:
    loaded = load_model(path)
    logits, targets = split_logits(loaded, options)
    rule = calibrate_with(options, logits, targets)
    write_json(rule_file(path), {"checkpoint": path.name, "epoch": loaded.epoch, **rule.to_dict()})
    save_checkpoint(path, replace(loaded.record, exit_rule=rule.to_dict()))
    return rule


def calibrate_with(options: CalibrationOptions, logits: Tensor, targets: Tensor) -> ExitRule:
    """``tks.anytime.calibrate`` with the bound, rule, risk and split name of ``options``."""
    return calibrate(
        logits,
        targets,
        epsilon=options.epsilon,
        delta=options.delta,
        rule=options.rule,
        risk=options.risk,
        split=options.split,
    )


def split_logits(loaded: LoadedModel, options: CalibrationOptions) -> tuple[Tensor, Tensor]:
    """The model's per-step logits ``[T, N, K]`` and the labels ``[N]`` of the calibration split, at the trained T."""
    cfg = loaded.config
    data = replace(cfg.data, root=options.data_root) if options.data_root is not None else cfg.data
    if options.split == "val":
        held = load_training_data(data).val
        if held is None:
            raise ConfigError(
                f"the run has no validation split (data.val_size is null): retrain with data.val_size set, or name "
                f"another held-out split of {cfg.data.name} with --split"
            )
        return _logits(loaded, held, options.device)
    if options.split == "train":
        warnings.warn(
            "calibrating on the images the model trained on: its confidences there are higher than on new data, "
            "so the guarantee does not hold",
            TKSWarning,
            stacklevel=2,
        )
    return _logits(loaded, load_split(replace(data, test_limit=None), options.split)[0], options.device)


def logits_on_test_set(
    loaded: LoadedModel, data_root: str | None = None, device: str = "auto"
) -> tuple[Tensor, Tensor]:
    """The per-step logits ``[T, N, K]`` and labels ``[N]`` of the test set (``data.test_limit`` applies)."""
    data = replace(loaded.config.data, root=data_root) if data_root is not None else loaded.config.data
    return _logits(loaded, load_split(data, "test")[0], device)


def _logits(loaded: LoadedModel, dataset: Dataset, device_name: str) -> tuple[Tensor, Tensor]:
    cfg, device = loaded.config, resolve_device(device_name)
    loader = make_loader(dataset, cfg.data, train=False, seed=cfg.run.seed, device=device, dist=Dist.single())
    model = loaded.model.to(device)
    return predict(model, loader, encode=encoder(loaded.info.kind, cfg.data.num_steps), device=device)


FIXED_THRESHOLDS = (0.9, 0.99)
"""Confidence thresholds picked by hand, as SEENN-I sets them: the study shows what they do against the bounds."""


def study_checkpoint(
    run: str | Path, epsilons: Sequence[float], options: CalibrationOptions | None = None
) -> dict[str, Any]:
    """Which rule each bound gives, and what it and the uncalibrated choices do on the test set (``anytime.json``).

    For every epsilon: the calibrated rule (``tks.anytime.calibrate`` on the calibration split) and the
    uncorrected one (``empirical_threshold``: the lowest threshold whose calibration risk is <= epsilon), each
    measured on the test set (``evaluate_rule``); then the ``FIXED_THRESHOLDS``. The test set only measures: no
    choice reads it. The result is written to ``anytime.json`` beside the checkpoint (``tks compare --anytime``
    reads it) and returned.

    Args:
        run: a run folder or a checkpoint file.
        epsilons: the bounds, e.g. (0.005, 0.01, 0.02).
        options: delta, rule, risk, split, data root and device (its epsilon is not used).
    """
    path, options = checkpoint_path(run), options or CalibrationOptions()
    with lock_run_dir(path.parent):  # not a checkpoint that a training session is replacing
        loaded = load_model(path)
    held, held_targets = split_logits(loaded, options)
    test, test_targets = logits_on_test_set(loaded, options.data_root, options.device)
    bounds = []
    for epsilon in epsilons:
        settings = replace(options, epsilon=epsilon)  # checks epsilon
        rule = calibrate_with(settings, held, held_targets)
        naive = empirical_threshold(held, held_targets, epsilon=epsilon, rule=settings.rule, risk=settings.risk)
        bounds.append(
            {
                "epsilon": epsilon,
                "calibrated": {"rule": rule.to_dict(), "test": evaluate_rule(rule, test, test_targets)},
                "empirical": {
                    "threshold": naive,
                    "test": evaluate_rule(replace(rule, threshold=naive), test, test_targets),
                },
            }
        )
    by_hand = ExitRule("confidence", None, held.shape[0], options.risk, 0.5, options.delta, "none", 0, 0.0, 0.0)
    fixed = [
        {"threshold": t, "test": evaluate_rule(replace(by_hand, threshold=t), test, test_targets)}
        for t in FIXED_THRESHOLDS
    ]
    result = {
        "checkpoint": path.name,
        "epoch": loaded.epoch,
        "delta": options.delta,
        "rule": options.rule,
        "risk": options.risk,
        "split": options.split,
        "bounds": bounds,
        "fixed": fixed,
    }
    write_json(path.with_name("anytime.json" if path.name == FINAL_CHECKPOINT else f"anytime-{path.stem}.json"), result)
    return result


def load_exit_rule(record: CheckpointRecord, checkpoint: Path, source: str = "") -> ExitRule:
    """The rule ``tks eval --exit-rule`` applies: from a file, else the one stored in the checkpoint.

    Args:
        record: the checkpoint as read.
        checkpoint: its path (for messages).
        source: a rule file (``exit-rule.json``), or ``""`` for the rule stored in the checkpoint.

    Raises:
        ConfigError: when there is none (``tks calibrate`` has not been run) or the file is not a rule.
    """
    if source:
        try:
            data = json.loads(Path(source).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the exit rule {source}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source} is not an exit rule (a JSON object written by tks calibrate)")
        return ExitRule.from_dict(data)
    if record.exit_rule is None:
        raise ConfigError(f"{checkpoint} has no calibrated exit rule: run tks calibrate {checkpoint} first")
    return ExitRule.from_dict(record.exit_rule)
