"""``tks compare --anytime``: which loss saves the most steps under a calibrated early exit (docs/anytime.md).

It reads the ``anytime.json`` that ``tks calibrate --study`` wrote in each run folder (no model, no data) and
tabulates, per bound epsilon: the calibrated rule's mean steps on the test set, its realised risk and how many runs
exceed the bound there, beside the uncorrected threshold (chosen on the same calibration split without a
correction) and the fixed thresholds picked by hand; then the paired differences of the calibrated mean steps
against a reference method, over the seeds both ran.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tks.compare.groups import Group, mean_std, paired_difference
from tks.compare.runs import Run, RunFolderError
from tks.compare.tables import format_paired, format_stat, md_escape

ANYTIME_FILE = "anytime.json"


def read_anytime(run: Run) -> dict[str, Any]:
    """A run's ``anytime.json``.

    Raises:
        RunFolderError: when it is missing (``tks calibrate --study`` has not run there) or not JSON.
    """
    path = run.path / ANYTIME_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing: run tks calibrate {run.path} --study first") from None
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path} cannot be read ({exc}): rerun tks calibrate --study there") from None


def anytime_markdown(groups: Sequence[Group], reference: str | None = None) -> str:
    """The tables of the study, one per block of the comparison (dataset, model, trained T).

    Args:
        groups: from ``group_runs``; every run needs its ``anytime.json``.
        reference: a method label; adds the paired differences of the calibrated mean steps against it.
    """
    studies = {id(run): read_anytime(run) for group in groups for run in group.runs}
    parts = []
    for block in dict.fromkeys(g.block for g in groups):
        members = [g for g in groups if g.block == block]
        first = studies[id(members[0].runs[0])]
        title = (
            f"{block[0]} / {block[1]}, T={block[2]}: early exit by {first['rule']}, risk {first['risk']}, "
            f"delta {first['delta']:g}, calibrated on the {first['split']} split"
        )
        parts.append(_bounds_table(title, members, studies))
        parts.append(_fixed_table(members, studies))
        if reference is not None and any(g.method == reference for g in members):
            parts.append(_paired_steps(members, studies, reference))
    return "\n".join(parts) + "\n" + NOTE


NOTE = (
    "Mean steps on the test set, mean ± sample standard deviation over seeds; risk: the realised risk on the test set "
    "(mean, and the largest over seeds); above: runs whose test risk exceeds epsilon. Calibrated: Learn-then-Test on "
    "the calibration split (risk <= epsilon with probability >= 1 - delta); uncorrected: the lowest threshold whose "
    "calibration risk is <= epsilon, no guarantee. Paired differences: mean [95% t-interval], * excludes 0.\n"
)


def _bounds_table(title: str, members: Sequence[Group], studies: dict[int, dict[str, Any]]) -> str:
    lines = [
        f"{title}:",
        "",
        "| Method | epsilon | calibrated steps | risk (mean, max) | above "
        "| uncorrected steps | risk (mean, max) | above |",
        "|:---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group in members:
        per_bound = _by_epsilon([studies[id(r)] for r in group.runs])
        for epsilon, entries in per_bound.items():
            cells = [_kind_cells([e["calibrated"]["test"] for e in entries], epsilon)]
            cells.append(_kind_cells([e["empirical"]["test"] for e in entries], epsilon))
            lines.append(f"| {md_escape(group.method)} | {epsilon:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _by_epsilon(studies: Sequence[dict[str, Any]]) -> dict[float, list[dict[str, Any]]]:
    """Each bound's entries over the runs, for the bounds every run measured."""
    shared = set.intersection(*({b["epsilon"] for b in s["bounds"]} for s in studies))
    return {e: [next(b for b in s["bounds"] if b["epsilon"] == e) for s in studies] for e in sorted(shared)}


def _kind_cells(tests: Sequence[dict[str, Any]], epsilon: float) -> str:
    steps = format_stat(mean_std([t["mean_steps"] for t in tests]))
    risks = [t["risk"] for t in tests]
    above = sum(r > epsilon for r in risks)
    return f"{steps} | {sum(risks) / len(risks):.4f}, {max(risks):.4f} | {above}/{len(risks)}"


def _fixed_table(members: Sequence[Group], studies: dict[int, dict[str, Any]]) -> str:
    bounds = sorted({b["epsilon"] for g in members for r in g.runs for b in studies[id(r)]["bounds"]})
    head = "| Method | fixed threshold | steps | risk (mean, max) | " + " | ".join(f"above {e:g}" for e in bounds)
    lines = ["Thresholds picked by hand (SEENN-I style), on the test set:", "", head + " |"]
    lines.append("|:---|---:|---:|---:|" + "---:|" * len(bounds))
    for group in members:
        fixed = [studies[id(r)]["fixed"] for r in group.runs]
        for i, entry in enumerate(fixed[0]):
            tests = [f[i]["test"] for f in fixed]
            risks = [t["risk"] for t in tests]
            above = [f"{sum(r > e for r in risks)}/{len(risks)}" for e in bounds]
            steps = format_stat(mean_std([t["mean_steps"] for t in tests]))
            risk = f"{sum(risks) / len(risks):.4f}, {max(risks):.4f}"
            lines.append(
                f"| {md_escape(group.method)} | {entry['threshold']:g} | {steps} | {risk} | " + " | ".join(above) + " |"
            )
    return "\n".join(lines) + "\n"


def _paired_steps(members: Sequence[Group], studies: dict[int, dict[str, Any]], reference: str) -> str:
    ref = next(g for g in members if g.method == reference)
    by_seed = {r.seed: r for r in ref.runs}
    lines = [
        f"Calibrated mean steps, each method minus {reference}, paired by seed (negative: fewer steps):",
        "",
        "| Method | epsilon | pairs | difference |",
        "|:---|---:|---:|---:|",
    ]
    for other in (g for g in members if g is not ref):
        pairs = [(r, by_seed[r.seed]) for r in other.runs if r.seed in by_seed]
        if not pairs:
            continue
        mine = _by_epsilon([studies[id(a)] for a, _ in pairs])
        theirs = _by_epsilon([studies[id(b)] for _, b in pairs])
        for epsilon in sorted(set(mine) & set(theirs)):
            a = [e["calibrated"]["test"]["mean_steps"] for e in mine[epsilon]]
            b = [e["calibrated"]["test"]["mean_steps"] for e in theirs[epsilon]]
            diff = format_paired(paired_difference(a, b))
            lines.append(f"| {md_escape(other.method)} | {epsilon:g} | {len(pairs)} | {diff} |")
    return "\n".join(lines) + "\n"
