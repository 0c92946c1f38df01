"""``tks compare``: read run folders, group them, print the tables and optionally write them to a folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tks.compare.anytime import anytime_markdown
from tks.compare.groups import group_runs, table_rows
from tks.compare.paper import paper_markdown
from tks.compare.runs import MODELS, RunFolderError, read_runs, selected_model
from tks.compare.tables import paired_markdown, steps_markdown, table_note, to_csv, to_markdown
from tks.paths import atomic_file, check_writable_folder


def compare_runs(
    paths: Iterable[str | Path],
    out_dir: str | Path | None = None,
    model: str = "final",
    *,
    paired: str | None = None,
    anytime: bool = False,
) -> str:
    """What ``tks compare`` runs: the Markdown table of the runs in ``paths``.

    The table is followed by its rows that the paper reports, beside the published numbers (``paper_markdown``;
    left out when the paper has none of them), then by the accuracy at each test T and of each single step
    (``steps_markdown``), and with ``paired`` (a method label such as ``TKS``) by the paired differences against
    it (``paired_markdown``). With ``out_dir`` the Markdown is also written there as ``compare.md``, and the main
    table as ``compare.csv``.

    Args:
        paths: run folders, or folders holding them.
        out_dir: where to write ``compare.md`` and ``compare.csv`` (None: nowhere).
        model: ``final`` (the last epoch's model, the top level of ``metrics.json``) or ``selected`` (``best.pt``,
            the ``selected`` entry; the test-T table then shows the trained T only). The note under the table
            says which.
        paired: a method label (e.g. ``TKS``): add its paired differences to every other method over seeds.
        anytime: add the early-exit study of each run's ``anytime.json`` (``tks calibrate --study``;
            ``tks.compare.anytime``), paired against ``paired`` when given; written as ``anytime.md`` too.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {model!r}")
    if out_dir is not None:
        check_writable_folder(out_dir, "out_dir")
    runs = read_runs(paths)
    if model == "selected":
        runs = [selected_model(run) for run in runs]
    groups = group_runs(runs)
    rows = table_rows(groups)
    against_paper = paper_markdown(rows)
    markdown = to_markdown(rows, table_note(runs, model)) + "\n" + (against_paper and against_paper + "\n")
    markdown += steps_markdown(groups)
    if paired is not None:
        if not any(g.method == paired for g in groups):
            raise RunFolderError(
                f"paired={paired!r}: no such method; the methods are {sorted({g.method for g in groups})}"
            )
        markdown += "\n" + paired_markdown(groups, paired)
    files = {"compare.md": markdown, "compare.csv": to_csv(rows)}
    if anytime:
        files["anytime.md"] = anytime_markdown(groups, paired)
        markdown += "\n" + files["anytime.md"]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            with atomic_file(out / name) as tmp:
                tmp.write_text(text, encoding="utf-8")
    return markdown
