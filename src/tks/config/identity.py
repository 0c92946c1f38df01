"""Which settings of a config define the experiment, and its identity as a short hash.

Two configs that differ only in where or how a run executes (the ``run`` section but ``IDENTITY_RUN_KEYS``, and
``NOT_EXPERIMENT``) describe the same experiment: ``tks compare`` groups such runs as repetitions, ``tks sweep``
finds a run's folder by its ``experiment_key``, and training records that key in ``metrics.json`` so that a
``config.yaml`` edited afterwards is caught rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from typing import Any

from tks.config.loader import flatten, to_dict
from tks.config.schema import Config, LossConfig

NOT_EXPERIMENT = ("data.root", "data.num_workers", "data.eval_batch_size")
"""Config keys that do not change the experiment: runs differing only in these are repetitions."""

IDENTITY_RUN_KEYS = ("run.seed", "run.precision", "run.select_on")
"""The ``run`` settings that change what a run measures; the other ``run`` settings (name, out_dir, progress,
device, compile, ...) say where or how it runs and do not make another experiment."""


def experiment_settings(config: Config) -> dict[str, Any]:
    """The flattened config without the keys that do not define the experiment.

    Left out: ``run.*``, ``NOT_EXPERIMENT`` and the options of the losses the run did not use (``loss.<other>.*``).
    """
    flat = flatten(to_dict(config))
    kept = ("name", "options", config.loss.name)
    unused = tuple(f"loss.{f.name}." for f in fields(LossConfig) if f.name not in kept)
    return {k: v for k, v in flat.items() if not k.startswith(("run.", *unused)) and k not in NOT_EXPERIMENT}


def identity_settings(config: Config) -> dict[str, Any]:
    """``experiment_settings`` plus ``IDENTITY_RUN_KEYS``: everything that makes a run this run (JSON-ready)."""
    flat = flatten(to_dict(config))
    return json.loads(json.dumps({**experiment_settings(config), **{key: flat[key] for key in IDENTITY_RUN_KEYS}}))


def experiment_key(config: Config) -> str:
    """The identity of a run: a hash of ``identity_settings``.

    A folder's ``config.yaml`` is read with the current loader, so keys added to tks after the folder was written
    take their defaults, exactly as they would in a new run of the same file.
    """
    return hashlib.sha256(json.dumps(identity_settings(config), sort_keys=True).encode()).hexdigest()[:16]


def changed_settings(recorded: dict[str, Any], config: Config) -> dict[str, tuple[Any, Any]]:
    """The settings in which ``config`` departs from ``recorded`` (``identity_settings`` of an earlier config).

    Keys only one side has (added to tks, or renamed, since the record was made) are not compared.

    Returns:
        ``{key: (recorded value, config's value)}``, sorted by key.
    """
    current = identity_settings(config)
    return {
        key: (recorded[key], current[key])
        for key in sorted(recorded)
        if key in current and json.dumps(recorded[key], sort_keys=True) != json.dumps(current[key], sort_keys=True)
    }


def describe_changes(changes: dict[str, tuple[Any, Any]], was: str, now: str, limit: int = 3) -> str:
    """``"optim.epochs: 4 in <was>, 6 in <now>; ..."``, at most ``limit`` keys, then how many more."""
    shown = [f"{key}: {old!r} in {was}, {new!r} in {now}" for key, (old, new) in list(changes.items())[:limit]]
    more = len(changes) - limit
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
