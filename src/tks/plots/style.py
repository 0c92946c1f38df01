"""What every figure shares: sizes, colours per method, panel grids, error bars, integer axes, saving."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tks.compare import Group, Stat
from tks.paths import atomic_file

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
# The three data splits of a convergence plot: train, validation, test.
SPLIT_COLORS = ("#8c8c8c", "#4c72b0", "#c44e52")


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


def panels(n: int, title: str) -> tuple[Figure, list[Axes]]:
    """A figure titled ``title`` with ``n`` panels, two per row; the axes of the panels, in order."""
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


def split_groups(groups: Sequence[Group], key: str) -> dict[tuple, list[Group]]:
    """Groups split by ``section`` (dataset, model) or ``block`` (dataset, model, trained T), in order."""
    out: dict[tuple, list[Group]] = {}
    for g in groups:
        out.setdefault((g.dataset, g.model) if key == "section" else g.block, []).append(g)
    return out


def errorbar(
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


def integer_x(ax: Axes, values: Iterable[int]) -> None:
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


def save_figure(figure: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` (150 dpi) and ``<stem>.pdf`` into ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        with atomic_file(path) as tmp:
            figure.savefig(tmp, dpi=DPI, format=path.suffix[1:])  # the temporary name says no format
    return paths


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes (150 dpi), for embedding."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
