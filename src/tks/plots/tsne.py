"""The paper's Fig. 5: t-SNE of the penultimate features that ``tks eval --features`` stored (``features.npz``)."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tks.compare import (
    Group,
    Run,
    RunFolderError,
)
from tks.extras import require
from tks.plots.style import panels

TSNE_SEED = 20150101  # random_state of the official t-SNE call


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
    TSNE = require("sklearn.manifold", "t-SNE (Fig. 5)").TSNE
    threadpool_limits = require("threadpoolctl", "t-SNE (Fig. 5)").threadpool_limits

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
    fig, axes = panels(len(data), "Fig. 5: t-SNE of the penultimate features of the test set, coloured by class")
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
