"""The comparison as ``tks compare`` prints it: Markdown in the layout of the paper's Table 4, and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from tks.compare.groups import (
    Group,
    PairedStat,
    Row,
    Stat,
    accuracy_by_test_steps,
    paired_difference,
    per_step_accuracy,
)
from tks.compare.paper import PAPER_METRICS, paper_target
from tks.compare.runs import METRICS, Run

TABLE_NOTE = (
    "Test set at the trained T. Mean ± sample standard deviation (n - 1) over the runs of a row; a row of one run "
    "shows no ±. Best of each block in bold (higher top-1/top-5, lower AURC/E-AURC/ECE)."
)


def format_stat(stat: Stat) -> str:
    """``"84.72 ± 1.23"``, or ``"84.72"`` for a single run."""
    return f"{stat.mean:.2f}" if stat.std is None else f"{stat.mean:.2f} ± {stat.std:.2f}"


TABLE_HEADER = ("Dataset", "Model", "T", "Method", *(m.header for m in METRICS), "seeds")


def table_note(runs: Sequence[Run], model: str = "final") -> str:
    """``TABLE_NOTE`` and which model of each run the table reports.

    For selected models (runs read through ``selected_model``) the note names the set that chose them.
    """
    if model == "final":
        return f"{TABLE_NOTE} Final model of each run (last epoch, checkpoint.pt)."
    sets = sorted({run.metrics["selected_on"] for run in runs})
    chooser = {
        "val": "the best validation top-1",
        "test": "the best test top-1, which makes the test numbers optimistic",
    }
    counts = {s: sum(r.metrics["selected_on"] == s for r in runs) for s in sets}
    chosen = "; ".join(f"{chooser[s]} ({n} run{'' if n == 1 else 's'})" for s, n in counts.items())
    return f"{TABLE_NOTE} Selected model of each run (best.pt, the epoch of {chosen})."


def to_markdown(rows: Sequence[Row], note: str = TABLE_NOTE) -> str:
    """The comparison as a Markdown table in the layout of the paper's Table 4, followed by a note on the numbers.

    Dataset, model and T are written on the first row of each block only, as the paper merges those cells.
    """
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * 3 + ":---|" + "---:|" * (len(METRICS) + 1)]
    previous = None
    for row in rows:
        g = row.group
        head = ["", "", ""] if g.block == previous else [g.dataset, g.model, str(g.num_steps)]
        previous = g.block
        cells = [_md_bold(format_stat(row.stats[m.key]), m.key in row.best) for m in METRICS]
        lines.append("| " + " | ".join([*head, md_escape(g.method), *cells, str(len(g.runs))]) + " |")
    return "\n".join(lines) + f"\n\n{note}\n"


def _md_bold(text: str, bold: bool) -> str:
    return f"**{text}**" if bold else text


def md_escape(text: str) -> str:
    """Text for a Markdown table cell: its ``|`` escaped."""
    return text.replace("|", "\\|")


def to_csv(rows: Sequence[Row]) -> str:
    """The comparison as CSV: one row per group, mean and sample std of every metric (std empty for one run).

    The last columns are the paper's numbers for the row (``paper_top1_pct``, ...; empty where the paper prints
    none or has no such row) and the recipe that reproduces it (``tks.compare.paper``).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    stats = [f"{m.column}_{s}" for m in METRICS for s in ("mean", "std")]
    paper = [f"paper_{m.column}" for m in PAPER_METRICS]
    writer.writerow(["dataset", "model", "T", "method", *stats, "n", "seeds", *paper, "paper_recipe"])
    for row in rows:
        g = row.group
        numbers = []
        for m in METRICS:
            stat = row.stats[m.key]
            numbers += [repr(stat.mean), "" if stat.std is None else repr(stat.std)]
        seeds = ";".join(map(str, g.seeds))
        writer.writerow([g.dataset, g.model, g.num_steps, g.method, *numbers, len(g.runs), seeds, *_paper_cells(g)])
    return out.getvalue()


def _paper_cells(group: Group) -> list[str]:
    target = paper_target(group)
    if target is None:
        return [""] * (len(PAPER_METRICS) + 1)
    values = [target.values.get(m.key) for m in PAPER_METRICS]
    return [*("" if v is None else repr(v) for v in values), target.recipe]


def steps_markdown(groups: Sequence[Group]) -> str:
    """Markdown tables of the accuracy at each test T (Fig. 3) and of each single step (Fig. 4), one per block.

    The test-T table appears for blocks where some run was evaluated at a T other than the trained one; event
    runs evaluated with ``--event-steps rebin`` get a second one for the re-binned frames.
    """
    parts = []
    for block in dict.fromkeys(g.block for g in groups):
        members = [g for g in groups if g.block == block]
        name = f"{block[0]} / {block[1]}, trained at T={block[2]}"
        for key, what in (("steps", "top-1 (%) at each test T"), ("steps_rebin", "the same, frames re-binned")):
            by_steps = {g.method: accuracy_by_test_steps(g, key) for g in members}
            if all(len(v) == 1 for v in by_steps.values()):
                continue  # evaluated at the trained T only
            parts.append(_stat_table(f"{name}: {what}", "T", by_steps))
        per_step = {g.method: dict(enumerate(per_step_accuracy(g), start=1)) for g in members}
        parts.append(_stat_table(f"{name}: accuracy (%) of each single step t", "t", per_step))
    return "\n".join(parts)


def _stat_table(title: str, symbol: str, rows: dict[str, dict[int, Stat]]) -> str:
    columns = sorted(set().union(*rows.values()))
    lines = [f"{title}:", "", "| Method | " + " | ".join(f"{symbol}={c}" for c in columns) + " |"]
    lines.append("|:---|" + "---:|" * len(columns))
    for method, stats in rows.items():
        cells = [format_stat(stats[c]) if c in stats else "" for c in columns]
        lines.append(f"| {md_escape(method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_markdown(groups: Sequence[Group], reference: str) -> str:
    """The paired difference, over the seeds both ran, between ``reference`` and every other method of its block.

    Runs of one seed share the initialisation and data order across methods, so seed-wise differences remove that
    source of variance. An interval that excludes 0 is marked with ``*``. Blocks without ``reference`` are left out.

    Args:
        groups: from ``group_runs``.
        reference: a method label as the table prints it, e.g. ``TKS``.
    """
    lines = []
    for block in dict.fromkeys(g.block for g in groups):
        members = [g for g in groups if g.block == block]
        ref = next((g for g in members if g.method == reference), None)
        if ref is None:
            continue
        by_seed = {r.seed: r for r in ref.runs}
        for other in (g for g in members if g is not ref):
            pairs = [(by_seed[r.seed], r) for r in other.runs if r.seed in by_seed]
            if not pairs:
                continue
            cells = [
                format_paired(
                    paired_difference(
                        [m.scale * a.metrics[m.key] for a, _ in pairs], [m.scale * b.metrics[m.key] for _, b in pairs]
                    )
                )
                for m in METRICS
            ]
            label = md_escape(f"{reference} − {other.method}")
            lines.append(f"| {block[0]} / {block[1]} / T={block[2]} | {label} | {len(pairs)} | {' | '.join(cells)} |")
    if not lines:
        return ""
    head = "| Block | Difference | pairs | " + " | ".join(m.header for m in METRICS) + " |"
    rule = "|:---|:---|---:|" + "---:|" * len(METRICS)
    note = (
        f"Paired differences {reference} minus each method over the seeds both ran: mean [95% confidence interval, "
        "t-distribution with n - 1 degrees of freedom]; * marks an interval that excludes 0. Positive is better for "
        "top-1/top-5, negative for AURC/E-AURC/ECE."
    )
    return "\n".join([head, rule, *lines]) + f"\n\n{note}\n"


def format_paired(d: PairedStat) -> str:
    """``"+1.23 [+0.40, +2.06]*"``: the mean difference, its interval, and * when the interval excludes 0."""
    if d.low is None:
        return f"{d.mean:+.2f}"
    star = "*" if d.low > 0 or d.high < 0 else ""
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]{star}"
