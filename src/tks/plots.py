"""The paper's figures from run folders, and training curves.

Fig. 3: accuracy against the test T; Fig. 4: accuracy of each single step; Fig. 5: t-SNE of penultimate features.

Reads run files only (``tks.compare``), never a model or a dataset, so a figure can be redrawn anywhere. Figures are
built with matplotlib's object API (``matplotlib.figure.Figure``, drawn by the Agg canvas when saved): no pyplot,
no global backend switch, nothing to close. Every drawing function returns its ``Figure`` so that tests and the
report can inspect or embed it; ``save_figure`` writes it as PNG and PDF.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from tks.compare import (
    Group,
    Run,
    RunFolderError,
    Stat,
    accuracy_by_test_steps,
    group_runs,
    per_step_accuracy,
    read_runs,
    summarize,
)
from tks.paths import check_writable_folder

TSNE_SEED = 20150101  # random_state of the official t-SNE call
PANEL = (5.6, 4.2)  # inches per panel: readable at 150 dpi without overlapping labels
WIDE = 8.0  # inches: the width of a one-panel figure
DPI = 150
# Fixed colours for the paper's methods, so that a method looks the same in every figure; others take the rest.
METHOD_COLORS = {
    "Baseline": "#4c72b0",
    "LS": "#dd8452",
    "TET": "#55a868",
    "TKS": "#c44e52",
    "Strong2Weak": "#8172b3",
    "Weak2Strong": "#937860",
}
OTHER_COLORS = ("#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd", "#17becf", "#bcbd22")
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = (".", "x", "+", "^")


@dataclass(frozen=True)
class NamedFigure:
    """A figure with the file stem it is saved under and a one-sentence caption."""

    stem: str
    caption: str
    figure: Figure


def method_colors(labels: Iterable[str]) -> dict[str, str]:
    """A colour per method label: the paper's methods fixed, the others (variants) in order of first appearance."""
    colors: dict[str, str] = {}
    others = iter(OTHER_COLORS * 4)
    for label in labels:
        if label not in colors:
            colors[label] = METHOD_COLORS.get(label) or next(others)
    return colors


def _panels(n: int, title: str) -> tuple[Figure, list[Axes]]:
    cols = min(n, 2)
    rows = -(-n // cols)
    # A lone panel is drawn wider so that the figure's title fits above it.
    width = PANEL[0] * cols if cols > 1 else WIDE
    fig = Figure(figsize=(width, PANEL[1] * rows + 0.4), layout="constrained")
    fig.suptitle(title, fontsize=13)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _by(groups: Sequence[Group], key: str) -> dict[tuple, list[Group]]:
    """Groups split by ``section`` (dataset, model) or ``block`` (dataset, model, trained T), in order."""
    out: dict[tuple, list[Group]] = {}
    for g in groups:
        out.setdefault((g.dataset, g.model) if key == "section" else g.block, []).append(g)
    return out


def _errorbar(
    ax: Axes,
    x: Sequence[float],
    stats: Sequence[Stat],
    *,
    color: str,
    label: str,
    marker: str = "o",
    dashed: bool = False,
) -> None:
    """Means joined by a line, with error bars of the sample std where there are several runs."""
    # A single run has no spread: draw no bar rather than a zero-length one that suggests zero variance.
    yerr = [s.std or 0.0 for s in stats] if any(s.std is not None for s in stats) else None
    ax.errorbar(
        x,
        [s.mean for s in stats],
        yerr=yerr,
        color=color,
        label=label,
        marker=marker,
        linestyle="--" if dashed else "-",
        capsize=3,
        markersize=5,
        linewidth=1.6,
    )


def _integer_x(ax: Axes, values: Iterable[int]) -> None:
    """Ticks at the integers ``values`` take (time steps, epochs), every one while there are few."""
    values = sorted(set(values))
    ax.grid(alpha=0.3)
    if not values:
        return
    if len(values) <= 12:
        ax.set_xticks(values)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(values[0] - 0.5, values[-1] + 0.5)


def fig3_accuracy_vs_steps(groups: Sequence[Group], *, trained_at_each_t: bool = False) -> Figure:
    """Paper Fig. 3: top-1 (%) against the test T, one line per method, for the models trained at one T.

    In each (dataset, model) panel the models trained at the largest T are drawn at every T they were evaluated at
    (``metrics.json`` ``eval.steps``; mean over seeds, error bars = sample std); event runs also evaluated with
    re-binned frames (``eval.steps_rebin``) get a dashed line for those. With ``trained_at_each_t`` a dashed line
    per method with square markers adds the models trained at each T, each at its own T.
    """
    sections = _by(groups, "section")
    trained = {s: max(g.num_steps for g in gs) for s, gs in sections.items()}
    same_t = len(set(trained.values())) == 1
    title = "Fig. 3: top-1 accuracy against the number of test time steps"
    fig, axes = _panels(len(sections), title + (f" (trained at T={next(iter(trained.values()))})" if same_t else ""))
    colors = method_colors(g.method for g in groups)
    for ax, (section, members) in zip(axes, sections.items(), strict=True):
        t_max = trained[section]
        xs = {t_max}
        for g in (g for g in members if g.num_steps == t_max):
            stats = accuracy_by_test_steps(g)
            xs.update(stats)
            _errorbar(ax, list(stats), list(stats.values()), color=colors[g.method], label=g.method)
            if any("steps_rebin" in r.evaluation for r in g.runs):  # event data re-binned into T frames
                rebin = accuracy_by_test_steps(g, "steps_rebin")
                label = f"{g.method}, frames re-binned"
                _errorbar(ax, list(rebin), list(rebin.values()), color=colors[g.method], label=label, dashed=True)
        if trained_at_each_t:
            for method in dict.fromkeys(g.method for g in members):
                own = sorted((g.num_steps, summarize(g)["top1"]) for g in members if g.method == method)
                label = f"{method}, trained at each T"
                x, stats = [t for t, _ in own], [s for _, s in own]
                xs.update(x)
                _errorbar(ax, x, stats, color=colors[method], label=label, marker="s", dashed=True)
        ax.axvline(t_max, color="0.5", linestyle=":", linewidth=1, label=f"trained T={t_max}")
        ax.set(xlabel="test time steps T", ylabel="top-1 accuracy (%)", title=_section_title(section, t_max, same_t))
        _integer_x(ax, xs)
        ax.legend(fontsize=8, handlelength=3)
    return fig


def _section_title(section: tuple, t_max: int, same_t: bool) -> str:
    dataset, model = section
    return f"{dataset} / {model}" + ("" if same_t else f", trained at T={t_max}")


def fig4_per_step_accuracy(groups: Sequence[Group]) -> Figure:
    """Paper Fig. 4: accuracy (%) of the output of each single step t at the trained T, one line per method.

    One panel per (dataset, model, trained T); mean over seeds, error bars = sample std. Methods are shifted
    slightly along t so that their error bars do not hide each other.
    """
    blocks = _by(groups, "block")
    fig, axes = _panels(len(blocks), "Fig. 4: accuracy of each single time step")
    colors = method_colors(g.method for g in groups)
    for ax, ((dataset, model, steps), members) in zip(axes, blocks.items(), strict=True):
        for i, g in enumerate(members):
            shift = 0.06 * (i - (len(members) - 1) / 2)
            x = [t + 1 + shift for t in range(steps)]
            _errorbar(ax, x, per_step_accuracy(g), color=colors[g.method], label=g.method)
        ax.set(xlabel="time step t", ylabel="accuracy of step t alone (%)", title=f"{dataset} / {model}, T={steps}")
        _integer_x(ax, range(1, steps + 1))
        ax.legend(fontsize=8, handlelength=3)
    return fig


def training_curves(groups: Sequence[Group]) -> Figure:
    """Training loss and test top-1 (%) per epoch from ``log.jsonl``, one line per run.

    Colour = method; line style and marker tell apart the runs of a method (seeds, trained T). The loss is each
    run's own objective (CE, LS, TET or CE + TKS), so its level is not comparable across methods; its trend is.
    """
    fig = Figure(figsize=(2 * PANEL[0], PANEL[1] + 0.9), layout="constrained")
    fig.suptitle("Training curves: training loss and test top-1 per epoch (log.jsonl)", fontsize=13)
    loss_ax, acc_ax = fig.subplots(1, 2)
    colors = method_colors(g.method for g in groups)
    several_blocks = len({g.block for g in groups}) > 1
    runs_of_method: dict[str, int] = {}
    epochs_seen: set[int] = set()
    for g in groups:
        name = f"{g.method} ({g.dataset}/{g.model}, T={g.num_steps})" if several_blocks else g.method
        for run in g.runs:
            i = runs_of_method[g.method] = runs_of_method.get(g.method, -1) + 1
            style, marker = LINE_STYLES[i % len(LINE_STYLES)], MARKERS[i // len(LINE_STYLES) % len(MARKERS)]
            epochs = [r["epoch"] for r in run.log]
            epochs_seen.update(epochs)
            for ax, values in (
                (loss_ax, [r["train"]["loss"] for r in run.log]),
                (acc_ax, [100 * r["test"]["top1"] for r in run.log]),
            ):
                label = f"{name}, seed {run.seed}"
                ax.plot(epochs, values, color=colors[g.method], linestyle=style, marker=marker, label=label)
    loss_ax.set(xlabel="epoch", ylabel="training loss (the run's own objective)", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="test top-1 accuracy (%)", title="test top-1")
    for ax in (loss_ax, acc_ax):
        _integer_x(ax, epochs_seen)
    handles, labels = loss_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, handlelength=4)
    return fig


def load_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``features [N, D]`` and ``labels [N]`` of a ``features.npz``.

    Raises:
        RunFolderError: for a missing or unreadable file, or one without those arrays.
    """
    if not path.is_file():
        raise RunFolderError(f"{path} is missing (tks eval CHECKPOINT --features writes it)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            features, labels = arrays["features"], arrays["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise RunFolderError(f"{path} is not a features file with 'features' and 'labels': {exc}") from None
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise RunFolderError(f"{path}: features must be [N, D] and labels [N], got {features.shape}, {labels.shape}")
    return features, labels


def tsne_embedding(
    features: np.ndarray, *, max_points: int = 2000, seed: int = TSNE_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of ``features [N, D]``: the embedding ``[M, 2]`` and the indices ``[M]`` of the rows embedded.

    At most ``max_points`` rows (a fixed random subset, in order) keep the cost bounded: t-SNE grows as N log N
    and a CIFAR test set has 10,000 samples. The perplexity is 30 (sklearn's default), lowered for small sets
    where it must stay below N.
    """
    # Imported here: sklearn's import costs a second that the other figures need not pay.
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(features)
    index = np.arange(n)
    if n > max_points:
        index = np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))
    perplexity = min(30.0, max(1.0, (len(index) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    # One thread: t-SNE's OpenMP threads spin while they wait, and on a busy machine that costs 30x (360 points on
    # 2 busy cores: 43 s with 2 threads, 1.4 s with one; 2,000 points take 15 s on one).
    with threadpool_limits(1):
        embedding = tsne.fit_transform(features[index].astype(np.float64))
    return embedding, index


def fig5_tsne(runs: Sequence[tuple[str, Run]], *, max_points: int = 2000) -> Figure:
    """Paper Fig. 5: t-SNE of the penultimate features (``features.npz``), one panel per run, coloured by class.

    Args:
        runs: (panel label, run) pairs; each run must have ``features.npz``.
        max_points: samples embedded per panel (see ``tsne_embedding``).
    """
    data = [(label, *load_features(run.features_path)) for label, run in runs]
    num_classes = int(max(labels.max() for *_, labels in data)) + 1
    fig, axes = _panels(len(data), "Fig. 5: t-SNE of the penultimate features of the test set, coloured by class")
    cmap = "tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "turbo"
    scatter = None
    for i, (ax, (label, features, labels)) in enumerate(zip(axes, data, strict=True)):
        embedding, index = tsne_embedding(features, max_points=max_points)
        scatter = ax.scatter(
            embedding[:, 0], embedding[:, 1], c=labels[index], cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5, s=8
        )
        ax.set_title(f"({chr(ord('a') + i)}) {label}", fontsize=10)
        ax.set(xlabel="t-SNE dimension 1 (no unit)", ylabel="t-SNE dimension 2 (no unit)", xticks=[], yticks=[])
    if num_classes <= 20:  # a legend entry per class while it stays readable; a colour bar beyond
        handles = [
            Line2D([], [], marker="o", linestyle="", color=scatter.cmap(scatter.norm(k)), label=str(k))
            for k in range(num_classes)
        ]
        fig.legend(handles=handles, title="class", loc="outside right center", fontsize=8)
    else:
        fig.colorbar(scatter, ax=axes, label="class index")
    return fig


def tsne_panels(groups: Sequence[Group], *, every_run: bool = False) -> tuple[list[tuple[str, Run]], list[Group]]:
    """The (panel label, run) pairs Fig. 5 draws, and the groups left out because none of their runs has features.

    Per group its lowest seed with ``features.npz``, or with ``every_run`` every run that has one.
    """
    several_blocks = len({g.block for g in groups}) > 1
    chosen, missing = [], []
    for g in groups:
        with_features = [r for r in g.runs if r.features_path.is_file()]
        if not with_features:
            missing.append(g)
        for run in with_features if every_run else with_features[:1]:
            where = f", {g.dataset}/{g.model}, T={g.num_steps}" if several_blocks else ""
            chosen.append((f"{g.method}{where}, seed {run.seed}", run))
    return chosen, missing


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
    others = [g for s, gs in _by(groups, "section").items() for g in gs if g.num_steps < max(x.num_steps for x in gs)]
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
    return figures, notes


def save_figure(figure: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` (150 dpi) and ``<stem>.pdf`` into ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=DPI)
    return paths


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes (150 dpi), for embedding."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def plot_runs(
    paths: Iterable[str | Path], out_dir: str | Path, *, trained_at_each_t: bool = False
) -> tuple[list[Path], list[str]]:
    """What ``tks plot`` runs: every figure of the runs in ``paths`` as PNG and PDF in ``out_dir``.

    Returns:
        The files written, and notes on what was left out.
    """
    check_writable_folder(out_dir, "--out")
    figures, notes = make_figures(read_runs(paths), trained_at_each_t=trained_at_each_t)
    files = [p for f in figures for p in save_figure(f.figure, Path(out_dir), f.stem)]
    return files, notes
