"""One self-contained HTML page for a set of runs: the comparison table, every figure, and each run's config.

The page needs nothing but itself: figures are embedded as base64 PNG, the style sheet is inline, and no script,
font or link points outside it. Every piece of text from the run files is HTML-escaped. Like ``tks.compare`` and
``tks.plots`` it reads run files only.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path

from tks.compare import (
    METRICS,
    PAPER_HEADER,
    PAPER_NOTE,
    TABLE_HEADER,
    TABLE_NOTE,
    Row,
    Run,
    format_stat,
    group_runs,
    paper_rows,
    read_runs,
    table_rows,
)
from tks.config import dump_config
from tks.paths import atomic_file, check_writable_file
from tks.plots import NamedFigure, make_figures, png_bytes

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; padding: 0 1em; color: #222; }
h1, h2 { font-weight: 600; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35em 0.7em; text-align: right; }
th { background: #f4f4f4; }
td.text, th.text { text-align: left; }
figure { margin: 2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: 0.92em; }
details { margin: 0.4em 0; }
summary { cursor: pointer; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(text: str, *, header: bool = False, left: bool = False, bold: bool = False) -> str:
    tag = "th" if header else "td"
    css = ' class="text"' if left else ""
    body = f"<strong>{_e(text)}</strong>" if bold else _e(text)
    return f"<{tag}{css}>{body}</{tag}>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left_columns: int) -> str:
    """An HTML table whose first ``left_columns`` columns are text (left-aligned); cells are already HTML."""
    head = "".join(_cell(h, header=True, left=i < left_columns) for i, h in enumerate(header))
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def comparison_html(rows: Sequence[Row]) -> str:
    """The comparison table (paper Table 4 layout), best value of each block in bold."""
    cells = []
    for row in rows:
        g = row.group
        texts = [g.dataset, g.model, str(g.num_steps), g.method]
        numbers = [_cell(format_stat(row.stats[m.key]), bold=m.key in row.best) for m in METRICS]
        cells.append([*(_cell(t, left=True) for t in texts), *numbers, _cell(str(len(g.runs)))])
    return _table(TABLE_HEADER, cells, left_columns=4) + f'<p class="note">{_e(TABLE_NOTE)}</p>'


def paper_html(rows: Sequence[Row]) -> str:
    """The rows of the comparison that the TKS paper reports, beside its numbers; "" when it reports none."""
    cells = paper_rows(rows)
    if not cells:
        return ""
    left = (0, 1, 2, 3, 4, len(PAPER_HEADER) - 1)
    table = _table(PAPER_HEADER, [[_cell(c, left=i in left) for i, c in enumerate(r)] for r in cells], left_columns=5)
    return "<h2>Against the paper</h2>" + table + f'<p class="note">{_e(PAPER_NOTE)}</p>'


def figure_html(figure: NamedFigure) -> str:
    """A figure as an inline base64 PNG with its caption."""
    data = base64.b64encode(png_bytes(figure.figure)).decode("ascii")
    caption = _e(figure.caption)
    return (
        f'<figure id="{_e(figure.stem)}"><img src="data:image/png;base64,{data}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def runs_html(runs: Sequence[Run]) -> str:
    """A table of the runs, then each run's resolved config in a collapsible block."""
    methods = {id(r): g.method for g in group_runs(runs) for r in g.runs}
    header = [
        "run folder",
        "method",
        "dataset",
        "model",
        "T",
        "seed",
        "epochs",
        "top-1 (%)",
        "selected model: test top-1 (%)",
    ]
    rows = []
    for run in runs:
        m = run.metrics
        texts = [run.path, methods[id(run)], run.config.data.name, run.config.model.name]
        numbers = [run.num_steps, run.seed, len(run.log), f"{100 * m['top1']:.2f}"]
        rows.append(
            [*(_cell(str(t), left=True) for t in texts), *(_cell(str(n)) for n in numbers), _cell(_selected(m))]
        )
    configs = "".join(
        f"<details><summary>{_e(run.path)}: {_e(methods[id(run)])}, seed {run.seed}</summary>"
        f"<pre>{_e(dump_config(run.config))}</pre></details>"
        for run in runs
    )
    return _table(header, rows, left_columns=4) + "<h3>Configs</h3>" + configs


def _selected(metrics: dict) -> str:
    """The selected model's test top-1, its epoch and the set that chose it (runs before ``selected``: best test)."""
    selected = metrics.get("selected")
    if selected is not None:
        return f"{100 * selected['top1']:.2f} (epoch {selected['epoch']}, chosen on {selected['selected_on']})"
    if "best_top1" in metrics:  # written before the selected model was recorded, when test top-1 chose it
        return f"{100 * metrics['best_top1']:.2f} (epoch {metrics['best_epoch']}, chosen on test)"
    return "–"


def build_report(runs: Sequence[Run], *, trained_at_each_t: bool = False) -> tuple[str, list[str]]:
    """The HTML page for ``runs``, and the notes of ``make_figures`` (also shown on the page)."""
    figures, notes = make_figures(runs, trained_at_each_t=trained_at_each_t)
    groups = group_runs(runs)
    rows = table_rows(groups)
    notes_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    body = [
        f"<h1>TKS runs: {len(runs)} run(s) in {len(groups)} experiment(s)</h1>",
        '<p class="note">Made by <code>tks report</code> from the run folders\' files only (config.yaml, '
        "metrics.json, log.jsonl, features.npz).</p>",
        "<h2>Comparison (paper Table 4)</h2>",
        comparison_html(rows),
        paper_html(rows),
        "<h2>Figures</h2>",
        f'<ul class="note">{notes_html}</ul>' if notes else "",
        *(figure_html(f) for f in figures),
        "<h2>Runs</h2>",
        runs_html(runs),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>TKS report: {len(runs)} run(s)</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    return page, notes


def report_runs(
    paths: Iterable[str | Path], out: str | Path, *, trained_at_each_t: bool = False
) -> tuple[Path, list[str]]:
    """What ``tks report`` runs: write the page for the runs in ``paths`` to ``out``.

    Returns:
        The file written, and notes on what the figures left out.
    """
    check_writable_file(out, "out")
    page, notes = build_report(read_runs(paths), trained_at_each_t=trained_at_each_t)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # checked writable before the runs were read
    with atomic_file(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out, notes
