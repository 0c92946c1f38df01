"""tks: train spiking neural networks with Temporal Knowledge Sharing (Dong, Zhao, Zeng 2023, arXiv:2304.06540).

Every model maps time-major input ``[T, B, ...]`` to per-step logits ``[T, B, K]``; the losses in ``tks.losses``
and the metrics in ``tks.metrics`` take those logits.

Submodules and the names below are imported on first access (PEP 562), so ``import tks`` costs almost nothing
and ``import tks.losses`` little beyond ``import torch``: nothing here imports torchvision, matplotlib, tonic or
another optional library until a feature that needs it runs (``tks.extras``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tks.version import __version__

SUBMODULES = (
    "activity",
    "anytime",
    "build",
    "calibration",
    "checkpoint",
    "checkpoint_model",
    "compare",
    "config",
    "data",
    "distributed",
    "engine",
    "errors",
    "eval_options",
    "evaluation",
    "exit_options",
    "experiment",
    "export",
    "extras",
    "hooks",
    "inference",
    "locks",
    "losses",
    "metrics",
    "models",
    "paper",
    "paths",
    "plots",
    "plugins",
    "preflight",
    "provenance",
    "registry",
    "report",
    "runfiles",
    "seeding",
    "snn",
    "sweep",
    "tracking",
    "version",
)
"""The documented submodules, each reachable as an attribute of ``tks`` (imported when first used)."""

_NAMES = {
    "Config": "tks.config",
    "StrongWeakOptions": "tks.config",
    "TKSOptions": "tks.config",
    "load_config": "tks.config",
    "EvalOptions": "tks.eval_options",
    "evaluate_checkpoint": "tks.evaluation",
    "CalibrationOptions": "tks.exit_options",
    "calibrate_checkpoint": "tks.calibration",
    "ExitRule": "tks.anytime",
    "calibrate": "tks.anytime",
    "exit_stream": "tks.anytime",
    "train": "tks.experiment",
    "TKSLoss": "tks.losses",
    "linear_ramp": "tks.losses",
    "mean_ce": "tks.losses",
    "strong_weak_loss": "tks.losses",
    "tet_loss": "tks.losses",
    "tks_loss": "tks.losses",
    "create_model": "tks.models",
    "list_models": "tks.models",
    "register_model": "tks.models",
    "register_dataset": "tks.data",
    "register_loss": "tks.losses",
    "StrongWeakLoss": "tks.losses",
    "LIF": "tks.snn",
    "make_neuron": "tks.snn",
}
"""Public names of ``tks`` and the submodule that defines each."""

__all__ = sorted([*_NAMES, *SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    """Import a submodule or a public name on first access, and keep it."""
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in SUBMODULES:
        value = importlib.import_module(f"tks.{name}")
    else:
        raise AttributeError(f"module 'tks' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ provides these
    # ruff: noqa: F401 (re-exported names, listed in __all__)
    from tks import (
        activity,
        build,
        checkpoint,
        checkpoint_model,
        compare,
        config,
        data,
        distributed,
        engine,
        errors,
        eval_options,
        evaluation,
        experiment,
        export,
        extras,
        hooks,
        inference,
        locks,
        losses,
        metrics,
        models,
        paths,
        plots,
        plugins,
        preflight,
        provenance,
        registry,
        report,
        runfiles,
        seeding,
        snn,
        sweep,
        version,
    )
    from tks.config import Config, StrongWeakOptions, TKSOptions, load_config
    from tks.data import register_dataset
    from tks.eval_options import EvalOptions
    from tks.evaluation import evaluate_checkpoint
    from tks.experiment import train
    from tks.losses import (
        StrongWeakLoss,
        TKSLoss,
        linear_ramp,
        mean_ce,
        register_loss,
        strong_weak_loss,
        tet_loss,
        tks_loss,
    )
    from tks.models import create_model, list_models, register_model
    from tks.snn import LIF, make_neuron
