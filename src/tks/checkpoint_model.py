"""A checkpoint's trained model, rebuilt from the config stored with it (``tks eval``, ``tks export``).

``tks.checkpoint`` reads and writes the file and knows no model; this module turns its record into a model: the
stored config, upgraded from older layouts (``stored_config``), the run's plugins, and the network built from
that config (``tks.build.build_model``) with the saved weights. ``tks train --resume`` reads the stored config
here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from torch import nn

from tks.build import build_model
from tks.checkpoint import CheckpointError, CheckpointRecord, load_checkpoint
from tks.config import Config, ConfigError, from_dict, upgrade_stored
from tks.data import DatasetInfo, check_options
from tks.data.loading import data_options
from tks.plugins import load_run_plugins


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
    record: CheckpointRecord
    """The checkpoint as read (its calibrated ``exit_rule``, training state)."""


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
    check_finite(model, path)
    return LoadedModel(model.eval(), info, cfg, record.epoch, record)


def check_finite(model: nn.Module, path: Path) -> None:
    """Refuse weights or buffers holding NaN or infinity (a diverged run).

    Nothing from them is worth measuring or exporting, and the metrics of such a model would be NaN.

    Raises:
        CheckpointError: naming how many tensors are affected and the first.
    """
    tensors = [*model.named_parameters(), *model.named_buffers()]
    bad = [name for name, t in tensors if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite weights (NaN or infinity in {len(bad)} of {len(tensors)} tensors, the first "
            f"{bad[0]!r}): the run diverged; use an earlier checkpoint (best.pt) or train with a lower learning rate"
        )
