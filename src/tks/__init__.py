"""tks: train spiking neural networks with Temporal Knowledge Sharing (Dong, Zhao, Zeng 2023, arXiv:2304.06540).

Every model maps time-major input ``[T, B, ...]`` to per-step logits ``[T, B, K]``; the losses in ``tks.losses``
and the metrics in ``tks.metrics`` take those logits.
"""

from tks import data, losses, metrics, models, snn
from tks.config import Config, StrongWeakOptions, TKSOptions, load_config
from tks.evaluation import evaluate_checkpoint
from tks.experiment import train
from tks.losses import TKSLoss, linear_ramp, mean_ce, strong_weak_loss, tet_loss, tks_loss
from tks.models import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "Config",
    "StrongWeakOptions",
    "TKSLoss",
    "TKSOptions",
    "__version__",
    "create_model",
    "data",
    "evaluate_checkpoint",
    "linear_ramp",
    "list_models",
    "load_config",
    "losses",
    "mean_ce",
    "metrics",
    "models",
    "snn",
    "strong_weak_loss",
    "tet_loss",
    "tks_loss",
    "train",
]
