"""Our runs beside the paper's numbers: the published value of each metric and the difference, ours minus it.

A group of runs is the paper's row (``tks.paper``) of the same dataset, model, trained T, method and data
augmentation. Its other settings may differ from the row's recipe (a short run, another batch size): the table
names the recipe that reproduces the row, so that a reader can tell a reproduction from a look.
"""

from __future__ import annotations

from collections.abc import Sequence

from tks.compare.groups import Group, Row, Stat, method_label
from tks.compare.runs import METRICS
from tks.paper import PUBLISHED_FILE, Target, targets

PAPER_METRICS = tuple(m for m in METRICS if m.key in ("top1", "top5", "aurc"))
"""The metrics the paper's tables print."""
PAPER_HEADER = (
    "Dataset",
    "Model",
    "T",
    "Method",
    "Paper",
    *(h for m in PAPER_METRICS for h in (f"{m.header} paper", "ours − paper")),
    "seeds",
    "recipe",
)
PAPER_NOTE = (
    f"Paper: the number the TKS paper publishes for the row of the same dataset, model, T, method and augmentation "
    f"(tks/paper/{PUBLISHED_FILE}; '-' where it prints none); the row's recipe is configs/paper/<recipe>.yaml, and "
    "runs whose other settings differ from it (fewer epochs, another batch) are compared all the same. ours − paper: "
    "our mean minus the published number, ± the sample standard deviation over our seeds (the paper gives one "
    "number and no spread). Positive is better for top-1/top-5, negative for AURC."
)


def paper_target(group: Group) -> Target | None:
    """The paper's numbers for this group's row, or None when the paper has no such row."""
    cfg = group.runs[0].config
    key = (cfg.data.name, cfg.model.name, cfg.data.num_steps, method_label(cfg.loss), cfg.data.augment)
    return targets().get(key)


def format_difference(stat: Stat, published: float) -> str:
    """``"+0.42 ± 0.31"``: our mean minus the published value, ± our standard deviation (none for one run)."""
    diff = f"{stat.mean - published:+.2f}"
    return diff if stat.std is None else f"{diff} ± {stat.std:.2f}"


def paper_cells(row: Row, target: Target) -> list[str]:
    """The cells of ``PAPER_HEADER`` for one row of the comparison and its paper numbers."""
    g = row.group
    cells = [g.dataset, g.model, str(g.num_steps), g.method, ", ".join(target.rows)]
    for m in PAPER_METRICS:
        value = target.values.get(m.key)
        cells += ["-", ""] if value is None else [f"{value:.2f}", format_difference(row.stats[m.key], value)]
    return [*cells, str(len(g.runs)), target.recipe]


def paper_rows(rows: Sequence[Row]) -> list[list[str]]:
    """The cells of every row of the comparison that the paper has numbers for, in the comparison's order."""
    matched = ((row, paper_target(row.group)) for row in rows)
    return [paper_cells(row, target) for row, target in matched if target is not None]


def paper_markdown(rows: Sequence[Row]) -> str:
    """The rows the paper knows as a Markdown table with its note; "" when it knows none of them."""
    cells = paper_rows(rows)
    if not cells:
        return ""
    lines = [
        "Against the paper:",
        "",
        "| " + " | ".join(PAPER_HEADER) + " |",
        "|" + ":---|" * 5 + "---:|" * (2 * len(PAPER_METRICS) + 1) + ":---|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + f"\n\n{PAPER_NOTE}\n"
