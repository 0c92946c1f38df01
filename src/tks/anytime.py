"""Anytime inference with a guarantee: exit rules calibrated by Learn-then-Test (docs/anytime.md).

A T-step network is causal, so its first t steps are a t-step network: a sample may stop at the first step whose
running-mean output is confident enough. At step t the running mean is m_t = (1/t) sum_{s<=t} O_s and the rule's
score is either the confidence max softmax(m_t) (``confidence``, as SEENN-I thresholds it) or the gap between the
two largest probabilities of softmax(m_t) (``margin``). A sample exits at the first t whose score reaches the
threshold lambda, else at T, and answers argmax m_t.

A threshold picked by hand promises nothing. ``calibrate`` picks one on held-out data so that the risk

    R(lambda) = E[ l(x, y; lambda) ]  with  l = 1[early answer != answer at T]                  (``disagreement``)
                                      or  l = 1[early answer wrong and answer at T right]     (``accuracy_drop``)

satisfies P( R(lambda_hat) <= epsilon ) >= 1 - delta over the draw of the n calibration samples, provided the
calibration and test samples are exchangeable (Learn-then-Test, Angelopoulos et al. 2021). The accuracy lost to
early exit, acc_T - acc_exit, is at most the ``accuracy_drop`` risk, so the guarantee holds for it too.

The procedure is fixed-sequence testing: the thresholds of a grid fixed before seeing any data are visited from
the most cautious (1.0) down; at each, the null hypothesis R(lambda) > epsilon is rejected when the exact binomial
p-value P(Binomial(n, epsilon) <= sum of losses) is at most delta; the first hypothesis not rejected stops the
walk, and the last rejected threshold is chosen. Every rejected threshold then has risk <= epsilon with
family-wise probability >= 1 - delta, without assuming the risk to fall with lambda. When not even the first is
rejected, the rule never exits early (``threshold`` None).

Everything here is a pure function of logits ``[T, N, K]``: ``tks calibrate`` (``tks.calibration``) measures them
and stores the ``ExitRule``; ``exit_stream`` applies a rule to per-step logits as they arrive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tks.config import ConfigError
from tks.exit_options import RULES, Risk, Rule, check_rule_options


def threshold_grid() -> np.ndarray:
    """The thresholds tested, most cautious first: 1.0, then 1 - 10^-7 ... 1 - 10^-2, then 0.995 ... 0 by 0.005.

    Fixed before any data is seen, as Learn-then-Test requires; dense near 1, where well-trained networks'
    confidences lie.
    """
    grid = np.concatenate([np.linspace(0.0, 1.0, 201), 1.0 - np.logspace(-7, -2, 21)])
    return np.unique(np.round(grid, 12))[::-1].copy()


@dataclass(frozen=True)
class ExitRule:
    """A calibrated exit rule: what ``exit_stream`` needs, and what its guarantee says.

    Attributes:
        rule: the score thresholded, ``confidence`` or ``margin`` of softmax(running mean).
        threshold: exit at the first step whose score is >= this; None: never before ``num_steps``.
        num_steps: T, the step at which every sample has exited.
        risk: the risk bounded, ``disagreement`` or ``accuracy_drop``.
        epsilon: the bound on the risk.
        delta: the probability that the bound fails, over the draw of the calibration set.
        split: the data the rule was calibrated on (never the test set).
        num_samples: n, the calibration samples.
        calibration_risk: the empirical risk of the chosen threshold on them.
        calibration_steps: their mean number of steps under the rule.
        p_value: the binomial p-value of the chosen threshold (None when none was rejected).
    """

    rule: Rule
    threshold: float | None
    num_steps: int
    risk: Risk
    epsilon: float
    delta: float
    split: str
    num_samples: int
    calibration_risk: float
    calibration_steps: float
    p_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``from_dict`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExitRule:
        """The rule of ``to_dict``'s dict.

        Raises:
            ConfigError: a dict that is not an exit rule (one line naming what is missing or wrong).
        """
        names = set(cls.__dataclass_fields__)
        missing = sorted(names - set(data) - {"p_value"})
        if missing:
            raise ConfigError(f"not an exit rule: missing {', '.join(missing)}")
        rule = cls(**{k: v for k, v in data.items() if k in names})
        check_rule_options(rule.rule, rule.risk, rule.epsilon, rule.delta)
        return rule


def exit_rule_of(metadata: Mapping[str, Any]) -> ExitRule | None:
    """The rule that ``tks export`` stored in a NIR graph's metadata (``graph.metadata``), or None.

    Example:
        >>> rule = exit_rule_of(nir.read("model.nir").metadata)
    """
    text = metadata.get("exit_rule")
    if text is None:
        return None
    if isinstance(text, np.ndarray):  # HDF5 gives a 0-d array (of bytes, or of str)
        text = text.item()
    if isinstance(text, bytes | np.bytes_):
        text = bytes(text).decode()
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the graph's exit_rule metadata is not JSON text: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the graph's exit_rule metadata is not an exit rule (a JSON object), got {data!r}")
    return ExitRule.from_dict(data)


def running_scores(logits: Tensor, rule: Rule = "confidence") -> tuple[Tensor, Tensor]:
    """The rule's score and the answer of every sample at every step.

    Args:
        logits: ``[T, N, K]`` per-step outputs.
        rule: ``confidence`` (max softmax of the running mean) or ``margin`` (its top-1 minus top-2 probability).

    Returns:
        ``(scores [T, N], answers [T, N])``: at step t, of m_t = (1/t) sum_{s<=t} O_s.
    """
    steps = logits.shape[0]
    counts = torch.arange(1, steps + 1, device=logits.device).view(-1, 1, 1)  # integers: exact at any T and dtype
    probs = (logits.cumsum(0) / counts).softmax(-1)
    return score(probs, rule), probs.argmax(-1)


def score(probs: Tensor, rule: Rule) -> Tensor:
    """The rule's score of probabilities ``[..., K]``: the largest (``confidence``) or its lead over the second."""
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    top = probs.topk(min(2, probs.shape[-1]), dim=-1).values
    if rule == "margin" and top.shape[-1] > 1:
        return top[..., 0] - top[..., 1]
    return top[..., 0]


def exit_steps(scores: Tensor, threshold: float | None) -> Tensor:
    """The 0-based step ``[N]`` at which each sample exits: the first with score >= ``threshold``, else the last."""
    confident = scores >= threshold if threshold is not None else torch.zeros_like(scores, dtype=torch.bool)
    confident[-1] = True
    return (~confident).int().cumprod(0).sum(0)  # the steps before the first confident one (argmax: 10x slower)


def exit_losses(answers: Tensor, exits: Tensor, target: Tensor | None, risk: Risk) -> Tensor:
    """The loss ``[N]`` (0 or 1, float64) of each sample's early answer; ``target`` is needed for ``accuracy_drop``."""
    early = answers.gather(0, exits.long().unsqueeze(0)).squeeze(0)
    final = answers[-1]
    if risk == "disagreement":
        return (early != final).double()
    if target is None:
        raise ConfigError("the accuracy_drop risk needs the labels")
    return ((early != target) & (final == target)).double()


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed in log space (exact to rounding for any n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return float(binomial_cdf_table(n, p)[k])


def binomial_cdf_table(n: int, p: float) -> np.ndarray:
    """P(Binomial(n, p) <= k) for k = 0..n, ``[n + 1]``: the log pmf from lgamma, summed relative to its peak."""
    k = np.arange(n + 1)
    log_factorial = torch.lgamma(torch.arange(1, n + 2, dtype=torch.float64)).numpy()  # log j! for j = 0..n
    log_pmf = log_factorial[n] - log_factorial - log_factorial[::-1] + k * math.log(p) + (n - k) * math.log1p(-p)
    peak = log_pmf.max()
    return np.minimum(1.0, np.cumsum(np.exp(log_pmf - peak)) * math.exp(peak))


def p_value(losses_sum: int, n: int, epsilon: float) -> float:
    """A valid p-value of the null R > epsilon for n i.i.d. 0/1 losses summing to ``losses_sum``.

    Under the null the sum is stochastically at least Binomial(n, epsilon), so P(sum <= observed) is at most
    P(Binomial(n, epsilon) <= observed).
    """
    return binomial_cdf(losses_sum, n, epsilon)


def grid_losses(scores: Tensor, answers: Tensor, target: Tensor | None, risk: Risk, grid: np.ndarray) -> np.ndarray:
    """The summed loss ``[G]`` of exiting at each threshold of ``grid``, in O(T N log G).

    A sample exits at step t < T exactly for the thresholds in (M_{t-1}, M_t], where M_t = max_{s<=t} score_s
    (M_0 = -inf), and at T for those above M_{T-1}; its loss at that exit is added to every threshold of the
    interval at once (a difference array over the sorted grid).

    Args:
        scores: ``[T, N]`` rule scores (``running_scores``).
        answers: ``[T, N]`` answers of the running mean.
        target: ``[N]`` labels (``accuracy_drop`` only).
        risk: ``disagreement`` or ``accuracy_drop``.
        grid: ``[G]`` thresholds, any order.
    """
    steps = answers.shape[0]
    losses = torch.stack([exit_losses(answers, torch.full_like(answers[0], t), target, risk) for t in range(steps)])
    prefix = np.maximum.accumulate(scores.double().cpu().numpy(), axis=0)  # M_t, [T, N]
    lower = np.concatenate([np.full((1, prefix.shape[1]), -np.inf), prefix[:-1]])  # M_{t-1}
    upper = np.concatenate([prefix[:-1], np.full((1, prefix.shape[1]), np.inf)])  # the last step takes all above
    ascending = np.sort(grid)
    begin = np.searchsorted(ascending, lower, side="right")  # first grid index > M_{t-1}
    stop = np.searchsorted(ascending, upper, side="right")  # first grid index > M_t
    weight = losses.cpu().numpy()
    counts = np.zeros(ascending.size + 1)
    np.add.at(counts, begin.ravel(), weight.ravel())
    np.add.at(counts, stop.ravel(), -weight.ravel())
    summed = np.rint(np.cumsum(counts)[:-1]).astype(np.int64)  # per ascending threshold
    return summed[np.searchsorted(ascending, grid)]


def _fixed_sequence(
    scores: Tensor, answers: Tensor, target: Tensor | None, risk: Risk, epsilon: float, delta: float
) -> tuple[float | None, float | None]:
    """Walk ``threshold_grid`` from 1.0 down, rejecting while the p-value is <= delta: the last rejected and its p."""
    grid = threshold_grid()
    sums = grid_losses(scores, answers, target, risk, grid)
    p_values = binomial_cdf_table(scores.shape[1], epsilon)[sums]
    failed = np.flatnonzero(p_values > delta)
    last = (failed[0] if failed.size else grid.size) - 1  # the walk stops at the first hypothesis not rejected
    if last < 0:
        return None, None
    return float(grid[last]), float(p_values[last])


def calibrate(
    logits: Tensor,
    target: Tensor | None = None,
    *,
    epsilon: float,
    delta: float = 0.05,
    rule: Rule = "confidence",
    risk: Risk = "disagreement",
    split: str = "val",
) -> ExitRule:
    """The exit rule whose risk is at most ``epsilon`` with probability at least 1 - ``delta`` (Learn-then-Test).

    Args:
        logits: ``[T, N, K]`` per-step outputs on the calibration samples (never the test set).
        target: ``[N]`` labels (needed for ``accuracy_drop`` only).
        epsilon: the risk bound, e.g. 0.01 for at most 1% of answers changed by exiting early.
        delta: the probability that the bound fails over the draw of the calibration samples.
        rule: the score thresholded (``confidence`` or ``margin``).
        risk: ``disagreement`` (early answer differs from the answer at T) or ``accuracy_drop`` (early answer
            wrong where the answer at T is right).
        split: the name of the calibration data, recorded in the rule.

    Returns:
        The rule, with its calibration record.
    """
    check_rule_options(rule, risk, epsilon, delta)
    if logits.dim() != 3 or logits.shape[1] == 0:
        raise ConfigError(f"calibration needs logits [T, N, K] of at least one sample, got {list(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise ConfigError("calibration logits are not all finite (NaN or inf): the model's outputs cannot be ranked")
    logits = logits.double()
    scores, answers = running_scores(logits, rule)
    threshold, p = _fixed_sequence(scores, answers, target, risk, epsilon, delta)
    exits = exit_steps(scores, threshold)
    return ExitRule(
        rule=rule,
        threshold=threshold,
        num_steps=logits.shape[0],
        risk=risk,
        epsilon=epsilon,
        delta=delta,
        split=split,
        num_samples=logits.shape[1],
        calibration_risk=exit_losses(answers, exits, target, risk).mean().item(),
        calibration_steps=(exits.double() + 1).mean().item(),
        p_value=p,
    )


def empirical_threshold(
    logits: Tensor, target: Tensor | None, *, epsilon: float, rule: Rule = "confidence", risk: Risk = "disagreement"
) -> float | None:
    """The lowest grid threshold whose empirical risk on these samples is <= ``epsilon``: no guarantee.

    What tuning a threshold on a validation set by eye does; the study compares it with ``calibrate``.
    """
    scores, answers = running_scores(logits.double(), rule)
    grid = threshold_grid()
    risks = grid_losses(scores, answers, target, risk, grid) / scores.shape[1]
    allowed = grid[risks <= epsilon]
    return float(allowed.min()) if allowed.size else None


def evaluate_rule(rule: ExitRule, logits: Tensor, target: Tensor) -> dict[str, Any]:
    """What a rule does on labelled data (the test set): steps used, accuracy, and its realised risk.

    Returns:
        JSON-ready: ``mean_steps``, ``steps_histogram`` (samples exiting at t = 1..T), ``accuracy`` (of the early
        answers), ``full_accuracy`` (at T), ``risk`` (realised, of ``rule.risk``), ``accuracy_drop`` (full minus
        early accuracy), ``epsilon`` and ``within_bound``.
    """
    if logits.shape[0] != rule.num_steps:
        raise ConfigError(f"the rule was calibrated at T={rule.num_steps}; these logits have T={logits.shape[0]}")
    scores, answers = running_scores(logits.double(), rule.rule)
    exits = exit_steps(scores, rule.threshold)
    early = answers.gather(0, exits.long().unsqueeze(0)).squeeze(0)
    realised = exit_losses(answers, exits, target, rule.risk).mean().item()
    accuracy = (early == target).double().mean().item()
    full = (answers[-1] == target).double().mean().item()
    return {
        "mean_steps": (exits.double() + 1).mean().item(),
        "steps_histogram": torch.bincount(exits.long(), minlength=rule.num_steps).tolist(),
        "accuracy": accuracy,
        "full_accuracy": full,
        "risk": realised,
        "accuracy_drop": full - accuracy,
        "epsilon": rule.epsilon,
        "within_bound": realised <= rule.epsilon,
        "num_samples": int(target.shape[0]),
    }


def exit_stream(rule: ExitRule, steps: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """Apply a rule to per-step logits as a network produces them; stop reading once every sample has exited.

    A deployment runs one step, passes its logits here, and stops the network when the rule says so (for one
    sample, at its exit; for a batch, once all have exited). Each sample's answer is frozen at its exit.

    Args:
        rule: a calibrated ``ExitRule`` (from ``tks calibrate``, a checkpoint or an exported graph's metadata).
        steps: the logits ``[B, K]`` of step 1, 2, ... (at most ``rule.num_steps`` are read).

    Returns:
        ``(answers [B], steps_used [B])``, steps counted from 1.

    Example:
        >>> answers, used = exit_stream(rule, (model_step(x) for _ in range(rule.num_steps)))
    """
    total = answers = used = None
    for t, out in enumerate(steps, start=1):
        total = out.double() if total is None else total + out
        probs = (total / t).softmax(-1)
        if answers is None:
            answers = torch.zeros(out.shape[0], dtype=torch.long, device=out.device)
            used = torch.zeros(out.shape[0], dtype=torch.long, device=out.device)
        live = used == 0
        confident = score(probs, rule.rule) >= rule.threshold if rule.threshold is not None else torch.zeros_like(live)
        leaving = live & confident
        if t >= rule.num_steps:
            leaving = live
        answers = torch.where(leaving, probs.argmax(-1), answers)
        used = torch.where(leaving, torch.full_like(used, t), used)
        if bool((used > 0).all()):
            break
    if answers is None:
        raise ValueError("exit_stream needs at least one step of logits")
    live = used == 0  # a stream shorter than T: the last step read answers for those still running
    answers = torch.where(live, probs.argmax(-1), answers)
    return answers, torch.where(live, torch.full_like(used, t), used)
