"""Runs grouped into experiments, and statistics over their seeds: the numbers behind Table 4 and the figures.

Runs whose configs differ only in the ``run`` section (seed, name, device, precision, ...) and in where or how data
are read (``data.root``, ``data.num_workers``, ``data.eval_batch_size``) are repetitions of one experiment: a
``Group``. Its statistics are the mean and the sample standard deviation (denominator n - 1) over its runs; a group
of one run has no standard deviation (``None``, shown as no ``±``). Paired differences between two methods are
taken over the seeds both ran.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from tks.compare.runs import METRICS, Run
from tks.config import TKS_VARIANT_FIELDS, Config, LossConfig, StrongWeakOptions, TKSOptions, flatten, to_dict
from tks.config.identity import experiment_settings
from tks.errors import TKSWarning

# Method labels of loss.name, in the paper's row order (Table 4); strong_weak is named by its direction.
METHOD_LABELS = {"ce": "Baseline", "ls": "LS", "tet": "TET", "tks": "TKS"}
STRONG_WEAK_LABELS = {
    "strong2weak": "Strong2Weak",
    "weak2strong": "Weak2Strong",
    "both": "Strong2Weak+Weak2Strong",
    "cascade": "Strong2Weak cascade",
}
METHOD_ORDER = (*METHOD_LABELS.values(), *STRONG_WEAK_LABELS.values())
# Every setting of the default config, flattened: what a group's label leaves unsaid.
_DEFAULTS = flatten(to_dict(Config()))


def method_label(loss: LossConfig) -> str:
    """The paper's name of a run's method: Baseline, LS, TET, TKS, or a TKS variant with what differs.

    The paper's own equations (mean teacher, time-averaged student at temperature tau) read "TKS (paper Eq. 5-7)".
    ``strong_weak`` runs are named by their direction (Weak2Strong, Strong2Weak, ...), with the options that differ
    from the paper's, e.g. "Weak2Strong (selection=sample)".
    """
    if loss.name == "strong_weak":
        sw, paper_sw = loss.strong_weak, StrongWeakOptions()
        changed = [
            f.name for f in fields(sw) if f.name != "direction" and getattr(sw, f.name) != getattr(paper_sw, f.name)
        ]
        base = STRONG_WEAK_LABELS[sw.direction]
        return f"{base} ({', '.join(_setting(f, getattr(sw, f)) for f in changed)})" if changed else base
    base = METHOD_LABELS.get(loss.name, loss.name)  # a loss of one's own is named as registered
    if loss.name != "tks":
        return base
    tks, official = loss.tks, TKSOptions()
    changed = [f for f in TKS_VARIANT_FIELDS if getattr(tks, f) != getattr(official, f)]
    if not changed:
        return base
    paper = {"teacher": "mean", "student": "mean", "student_temperature": tks.temperature}
    if set(changed) == set(paper) and all(getattr(tks, f) == v for f, v in paper.items()):
        return f"{base} (paper Eq. 5-7)"
    return f"{base} ({', '.join(_setting(f, getattr(tks, f)) for f in changed)})"


def _setting(key: str, value: Any) -> str:
    return key if value is True else f"{key}={value}"


@dataclass(frozen=True)
class Group:
    """Runs of one experiment that differ only in seed (and other ``run`` settings)."""

    dataset: str
    model: str
    num_steps: int
    """Trained T."""
    method: str
    """Display label: ``method_label``, plus the settings that tell apart groups of the same label and block."""
    runs: tuple[Run, ...]

    @property
    def block(self) -> tuple[str, str, int]:
        """The (dataset, model, trained T) block of the table this group is a row of."""
        return self.dataset, self.model, self.num_steps

    @property
    def seeds(self) -> list[int]:
        """The seed of each run, in order."""
        return [r.seed for r in self.runs]


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group runs by experiment; sorted by dataset, model, T, then the paper's method order.

    Two groups of one block whose methods share a label (e.g. TKS at temperature 3 and at 5) are told apart by the
    settings in which they differ: each gets those of them where it departs from the defaults of ``Config``
    appended to its label, e.g. ``TKS (loss.tks.temperature=5.0)``, and the group at the defaults keeps the plain
    label (``TKS``), so that ``--paired TKS`` still names it. The labels stay distinct: two groups with the same
    departures would agree on every differing setting.
    """
    by_key: dict[str, list[Run]] = {}
    for run in runs:  # JSON text as the key: settings may hold lists, which cannot be hashed
        by_key.setdefault(json.dumps(experiment_settings(run.config), sort_keys=True), []).append(run)
    labelled: dict[tuple, list[list[Run]]] = {}
    for members in by_key.values():
        cfg = members[0].config
        block_and_label = (cfg.data.name, cfg.model.name, cfg.data.num_steps, method_label(cfg.loss))
        labelled.setdefault(block_and_label, []).append(members)
    groups = []
    for (dataset, model, steps, label), same in labelled.items():
        settings = [experiment_settings(members[0].config) for members in same]
        differing = _differing_settings(settings)
        for members, setting in zip(same, settings, strict=True):
            departures = [k for k in differing if repr(setting.get(k)) != repr(_DEFAULTS.get(k))]
            suffix = ", ".join(f"{k}={setting.get(k)}" for k in departures)
            name = f"{label} ({suffix})" if suffix else label
            groups.append(Group(dataset, model, steps, name, one_run_per_seed(members, name)))
    return sorted(groups, key=lambda g: (g.block, _method_rank(g.method), g.method))


def one_run_per_seed(runs: Sequence[Run], method: str) -> tuple[Run, ...]:
    """The runs sorted by seed, one per seed: the first folder by path of each seed, with a warning for the others.

    Two runs of one experiment with the same seed (a seed loop run twice, a copied folder) are not independent
    repetitions: counting both would shrink the standard deviation and pair one run of another method twice.
    """
    kept: dict[int, Run] = {}
    for run in sorted(runs, key=lambda r: (r.seed, str(r.path))):
        first = kept.setdefault(run.seed, run)
        if first is not run:
            warnings.warn(
                f"{run.path} repeats seed {run.seed} of {method} ({first.path}): counted once, from {first.path}",
                TKSWarning,
                stacklevel=3,
            )
    return tuple(kept.values())


def _differing_settings(settings: list[dict[str, Any]]) -> list[str]:
    keys = sorted(set().union(*settings))
    return [k for k in keys if len({repr(s.get(k)) for s in settings}) > 1]


def _method_rank(label: str) -> int:
    base = label.split(" (")[0]
    return METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of a value over n runs (``std`` is None when n = 1)."""

    mean: float
    std: float | None
    n: int


def mean_std(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (denominator n - 1) of at least one value."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


def summarize(group: Group) -> dict[str, Stat]:
    """``Stat`` of each of ``METRICS`` over the group's runs, in the printed unit (% or x10^3)."""
    return {m.key: mean_std([m.scale * r.metrics[m.key] for r in group.runs]) for m in METRICS}


def accuracy_by_test_steps(group: Group, key: str = "steps") -> dict[int, Stat]:
    """Top-1 (%) at each test T (paper Fig. 3), over the runs evaluated at that T (``key``: see ``top1_by_steps``)."""
    values: dict[int, list[float]] = {}
    for run in group.runs:
        for t, top1 in run.top1_by_steps(key).items():
            values.setdefault(t, []).append(100.0 * top1)
    return {t: mean_std(v) for t, v in sorted(values.items())}


def per_step_accuracy(group: Group) -> list[Stat]:
    """Accuracy (%) of each single step t = 1..T at the trained T (paper Fig. 4), over the runs."""
    per_run = [r.metrics["per_step"] for r in group.runs]
    return [mean_std([100.0 * acc[t] for acc in per_run]) for t in range(group.num_steps)]


@dataclass(frozen=True)
class Row:
    """One row of the comparison table."""

    group: Group
    stats: dict[str, Stat]
    best: frozenset[str]
    """Keys of ``METRICS`` in which this row is the best of its block (only in blocks of several rows)."""


def table_rows(groups: Sequence[Group]) -> list[Row]:
    """Rows of the comparison table, with the best value of each block marked as the paper's boldface."""
    stats = [summarize(g) for g in groups]
    rows = []
    for group, stat in zip(groups, stats, strict=True):
        block = [s for g, s in zip(groups, stats, strict=True) if g.block == group.block]
        best = set()
        if len(block) > 1:
            for m in METRICS:
                pick = max if m.higher_is_better else min
                if stat[m.key].mean == pick(s[m.key].mean for s in block):
                    best.add(m.key)
        rows.append(Row(group, stat, frozenset(best)))
    return rows


@dataclass(frozen=True)
class PairedStat:
    """Mean of paired differences over n seeds with its 95% confidence interval (None when n = 1)."""

    mean: float
    low: float | None
    high: float | None
    n: int


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedStat:
    """Mean of a_i - b_i with the t-interval of 95%: mean ± t_{0.975, n-1} * sd / sqrt(n), sd with n - 1.

    With 3 pairs t_{0.975, 2} = 4.30, so the interval is wide unless the differences agree closely.
    """
    from scipy.stats import t as student_t  # scipy is slow to import; only this table needs it

    stat = mean_std([x - y for x, y in zip(a, b, strict=True)])
    if stat.std is None:
        return PairedStat(stat.mean, None, None, 1)
    half = float(student_t.ppf(0.975, stat.n - 1)) * stat.std / math.sqrt(stat.n)
    return PairedStat(stat.mean, stat.mean - half, stat.mean + half, stat.n)
