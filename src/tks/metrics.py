"""Evaluation metrics on per-step logits ``[T, N, K]``: pure functions, no model, no loop, no files.

The prediction of an SNN is the argmax of the time-averaged logits O = (1/T) sum_t O_t (paper Eq. 3). Beyond top-k
this module gives what the TKS paper reports: the accuracy of every single step (Fig. 4), the accuracy of the
running mean over the first t steps, and the area under the risk-coverage curve (AURC, Table 4).

A metric of logits holding NaN or infinity is NaN (for a per-step list: from the first such step it depends on),
never a number computed from arbitrary argmaxes: a diverged model is reported as such.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from tks.errors import check_per_step

Confidence = Literal["logit", "softmax"]


def topk_accuracy(logits: Tensor, target: Tensor, k: int = 1) -> float:
    """Fraction of samples whose label is among the k largest time-averaged logits.

    Args:
        logits: ``[T, N, K]``.
        target: ``[N]`` class indices.
        k: clipped to the number of classes.
    """
    check_per_step(logits, target)
    if not _finite(logits):
        return math.nan
    k = min(k, logits.shape[-1])
    top = logits.mean(0).topk(k, dim=-1).indices  # [N, k]
    return (top == target.unsqueeze(-1)).any(-1).float().mean().item()


def per_step_accuracy(logits: Tensor, target: Tensor) -> list[float]:
    """Top-1 accuracy of each step alone, argmax of O_t (paper Fig. 4): a list of T floats."""
    check_per_step(logits, target)
    accuracy = (logits.argmax(-1) == target).double().mean(1)
    return accuracy.masked_fill(~_finite_steps(logits), math.nan).tolist()


def cumulative_accuracy(logits: Tensor, target: Tensor) -> list[float]:
    """Top-1 accuracy of the mean of the first t steps, for t = 1..T: a list of T floats.

    Entry t-1 is what a model stopped after t steps predicts (for static inputs and truncated event inputs).
    """
    check_per_step(logits, target)
    # The running mean (1/t) sum_{s<=t} O_s and the running sum have the same argmax: no division needed.
    accuracy = (logits.cumsum(0).argmax(-1) == target).double().mean(1)
    finite_so_far = _finite_steps(logits).cummin(0).values
    return accuracy.masked_fill(~finite_so_far, math.nan).tolist()


def _finite(x: Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def _finite_steps(logits: Tensor) -> Tensor:
    """``[T]`` bool: step t's logits ``[N, K]`` are all finite."""
    return torch.isfinite(logits).flatten(1).all(1)


def confidence(logits: Tensor, kind: Confidence = "logit") -> Tensor:
    """Confidence of each prediction from ``[T, N, K]`` logits, ``[N]``.

    ``"logit"``: the max of the time-averaged logits, as the official AURC code ranks samples (docs/reference.md §6.2).
    ``"softmax"``: the max softmax probability of the time-averaged logits (Geifman et al.).
    """
    mean = logits.mean(0)
    if kind == "logit":
        return mean.max(-1).values
    if kind == "softmax":
        return mean.softmax(-1).max(-1).values
    raise ValueError(f"confidence must be 'logit' or 'softmax', got {kind!r}")


def aurc(conf: Tensor, correct: Tensor) -> tuple[float, float]:
    """Area under the risk-coverage curve, and its excess over the best possible ranking (E-AURC).

    Samples are sorted by decreasing confidence; risk(k) = (errors among the k most confident) / k and
    AURC = (1/n) sum_{k=1..n} risk(k). With r errors, the optimal ranking (all errors last) gives
    AURC* = (1/n) sum_{i=1..r} i / (n - r + i), and E-AURC = AURC - AURC*. The paper reports AURC x 10^3.
    Ties are broken by the stable sort order of the input.

    Args:
        conf: ``[N]`` confidence of each prediction.
        correct: ``[N]`` bool, prediction equals label.

    Returns:
        ``(aurc, e_aurc)`` as fractions (not x 10^3).
    """
    if conf.shape != correct.shape or conf.dim() != 1 or conf.numel() == 0:
        raise ValueError(
            f"conf and correct must be equal non-empty [N], got {tuple(conf.shape)}, {tuple(correct.shape)}"
        )
    if not _finite(conf):
        return math.nan, math.nan
    order = torch.argsort(conf, descending=True, stable=True)
    errors = (~correct.bool()[order]).double()
    n = errors.numel()
    coverage = torch.arange(1, n + 1, dtype=torch.float64)
    value = (errors.cumsum(0) / coverage).mean().item()
    r = int(errors.sum().item())
    i = torch.arange(1, r + 1, dtype=torch.float64)
    optimal = (i / (n - r + i)).sum().item() / n
    return value, value - optimal


def expected_calibration_error(probs: Tensor, target: Tensor, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins (L1, torchmetrics' default of 15 bins).

    ECE = sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|, confidence = max probability, bins (i/n, (i+1)/n].

    Args:
        probs: ``[N, K]`` class probabilities.
        target: ``[N]`` class indices.
        n_bins: number of bins on [0, 1].
    """
    if not _finite(probs):
        return math.nan
    conf, pred = probs.max(-1)
    correct = (pred == target).double()
    conf = conf.double()
    bins = (conf * n_bins).ceil().clamp(1, n_bins).long() - 1  # bin b holds (b/n, (b+1)/n]
    gap = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, conf - correct)
    return (gap.abs().sum() / conf.numel()).item()


def classification_metrics(logits: Tensor, target: Tensor, *, confidence_kind: Confidence = "logit") -> dict:
    """Everything the paper reports for one evaluation, as a JSON-ready dict.

    Args:
        logits: ``[T, N, K]`` per-step logits of the whole test set.
        target: ``[N]`` class indices.
        confidence_kind: ranking used by AURC (``"logit"`` as the official code, or ``"softmax"``).

    Returns:
        ``top1``, ``top5``, ``aurc``, ``e_aurc``, ``ece`` (fractions), ``per_step`` and ``cumulative`` (lists of T
        accuracies), ``num_steps``, ``num_samples`` and ``confidence``.
    """
    check_per_step(logits, target)
    logits = logits.detach().float().cpu()
    target = target.cpu()
    correct = logits.mean(0).argmax(-1) == target
    finite = _finite(logits)  # (-inf logits give finite confidences and probabilities, but no meaningful ones)
    aurc_value, e_aurc = aurc(confidence(logits, confidence_kind), correct) if finite else (math.nan, math.nan)
    return {
        "top1": topk_accuracy(logits, target, 1),
        "top5": topk_accuracy(logits, target, 5),
        "aurc": aurc_value,
        "e_aurc": e_aurc,
        "ece": expected_calibration_error(logits.mean(0).softmax(-1), target) if finite else math.nan,
        "per_step": per_step_accuracy(logits, target),
        "cumulative": cumulative_accuracy(logits, target),
        "num_steps": logits.shape[0],
        "num_samples": logits.shape[1],
        "confidence": confidence_kind,
    }


def early_exit(logits: Tensor, target: Tensor, threshold: float) -> tuple[float, float]:
    """Anytime inference: stop each sample at the first step whose running-mean confidence reaches ``threshold``.

    At step t the prediction is argmax of m_t = (1/t) sum_{s<=t} O_s and its confidence is max softmax(m_t); a
    sample exits at the first t with confidence >= threshold, else at T. Since the network is causal, the first t
    steps of a T-step run are exactly a t-step run, so one pass gives every exit.

    Args:
        logits: ``[T, N, K]``.
        target: ``[N]`` class indices.
        threshold: confidence in [0, 1]; 0 exits every sample after one step, above 1 never exits early.

    Returns:
        ``(accuracy, mean number of steps used)``.
    """
    check_per_step(logits, target)
    if not _finite(logits):
        return math.nan, math.nan
    steps = logits.shape[0]
    counts = logits.new_ones(steps).cumsum(0).view(-1, 1, 1)  # 1, 2, ..., T in the logits' dtype and device
    running = logits.cumsum(0) / counts  # [T, N, K]: the running mean, whose softmax is the confidence
    confident = running.softmax(-1).amax(-1) >= threshold  # [T, N]
    confident[-1] = True  # everyone has exited by the last step
    exit_step = confident.float().argmax(0)  # first True, [N]
    prediction = running.argmax(-1).gather(0, exit_step.unsqueeze(0)).squeeze(0)
    return (prediction == target).float().mean().item(), (exit_step + 1).float().mean().item()


DEFAULT_EXIT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)


def early_exit_curve(logits: Tensor, target: Tensor, thresholds: tuple[float, ...] = DEFAULT_EXIT_THRESHOLDS) -> list:
    """``early_exit`` swept over thresholds: ``[{"threshold", "accuracy", "mean_steps"}, ...]`` (JSON-ready)."""
    curve = []
    for threshold in thresholds:
        accuracy, mean_steps = early_exit(logits, target, threshold)
        curve.append({"threshold": threshold, "accuracy": accuracy, "mean_steps": mean_steps})
    return curve
