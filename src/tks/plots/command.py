"""``tks plot``: every figure the runs allow, with notes on what was left out, saved as PNG and PDF."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tks.compare import (
    Run,
    group_runs,
    read_runs,
)
from tks.paths import check_writable_folder
from tks.plots.figures import (
    convergence_curves,
    fig3_accuracy_vs_steps,
    fig4_per_step_accuracy,
    has_validation,
    training_curves,
)
from tks.plots.style import NamedFigure, save_figure, split_groups
from tks.plots.tsne import fig5_tsne, tsne_panels


def make_figures(
    runs: Sequence[Run], *, trained_at_each_t: bool = False, tsne_points: int = 2000
) -> tuple[list[NamedFigure], list[str]]:
    """Every figure the runs allow, and notes on what was left out and why (to print to the user)."""
    groups = group_runs(runs)
    notes = []
    figures = [
        NamedFigure(
            "fig3_accuracy_vs_steps",
            "Fig. 3: top-1 accuracy against the number of test time steps T, for the models trained at the largest "
            "T" + (" (dashed: the models trained at each T, at their own T)" if trained_at_each_t else "") + ".",
            fig3_accuracy_vs_steps(groups, trained_at_each_t=trained_at_each_t),
        ),
        NamedFigure(
            "fig4_per_step_accuracy",
            "Fig. 4: accuracy of the output of each single time step at the trained T.",
            fig4_per_step_accuracy(groups),
        ),
    ]
    sections = split_groups(groups, "section").values()
    others = [g for gs in sections for g in gs if g.num_steps < max(x.num_steps for x in gs)]
    if others and not trained_at_each_t:
        notes.append(
            f"Fig. 3 draws the models trained at the largest T; {sum(len(g.runs) for g in others)} run(s) trained "
            "at a smaller T appear only with --trained-at-each-t"
        )
    if all(len(r.top1_by_steps()) == 1 for r in runs):
        notes.append("Fig. 3 has one point per line: run tks eval CHECKPOINT --steps 1 2 ... to add test T")
    chosen, missing = tsne_panels(groups)
    if chosen:
        caption = "Fig. 5: t-SNE of the time-averaged penultimate features of the test set, coloured by class."
        figures.append(NamedFigure("fig5_tsne", caption, fig5_tsne(chosen, max_points=tsne_points)))
    else:
        notes.append("Fig. 5 skipped: no run has features.npz (tks eval CHECKPOINT --features writes it)")
    if chosen and missing:
        names = ", ".join(f"{g.method} ({g.dataset}/{g.model}, T={g.num_steps})" for g in missing)
        notes.append(f"Fig. 5 leaves out {names}: no run of theirs has features.npz")
    caption = "Training curves: training loss and test top-1 accuracy per epoch, one line per run."
    figures.append(NamedFigure("training_curves", caption, training_curves(groups)))
    if any(has_validation(g) for g in groups):
        caption = (
            "Convergence: running train accuracy, validation and test top-1 per epoch, mean over each method's runs "
            "(runs with a validation split only)."
        )
        figures.append(NamedFigure("convergence_curves", caption, convergence_curves(groups)))
    return figures, notes


def plot_runs(
    paths: Iterable[str | Path], out_dir: str | Path, *, trained_at_each_t: bool = False
) -> tuple[list[Path], list[str]]:
    """What ``tks plot`` runs: every figure of the runs in ``paths`` as PNG and PDF in ``out_dir``.

    Returns:
        The files written, and notes on what was left out.
    """
    check_writable_folder(out_dir, "out_dir")
    figures, notes = make_figures(read_runs(paths), trained_at_each_t=trained_at_each_t)
    files = [p for f in figures for p in save_figure(f.figure, Path(out_dir), f.stem)]
    return files, notes
