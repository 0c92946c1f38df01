"""The paper's figures from run folders, and training curves (``tks plot``).

Fig. 3: accuracy against the test T; Fig. 4: accuracy of each single step; Fig. 5: t-SNE of penultimate features.

Reads run files only (``tks.compare``), never a model or a dataset, so a figure can be redrawn anywhere. Figures are
built with matplotlib's object API (``matplotlib.figure.Figure``, drawn by the Agg canvas when saved): no pyplot,
no global backend switch, nothing to close. Every drawing function returns its ``Figure`` so that tests and the
report can inspect or embed it; ``save_figure`` writes it as PNG and PDF.

* ``style``: what every figure shares (sizes, colours per method, panels, error bars, saving);
* ``figures``: Fig. 3, Fig. 4, the training curves and the convergence curves (train, validation, test);
* ``tsne``: Fig. 5 and the t-SNE embedding it draws;
* ``command``: ``tks plot``, every figure the runs allow.
"""

from tks.extras import require

require("matplotlib", "figures (tks plot, tks report)")  # one line naming the extra, before the imports below fail

from tks.plots.command import make_figures, plot_runs  # noqa: E402
from tks.plots.figures import (  # noqa: E402
    convergence_curves,
    fig3_accuracy_vs_steps,
    fig4_per_step_accuracy,
    training_curves,
)
from tks.plots.style import NamedFigure, method_colors, png_bytes, save_figure  # noqa: E402
from tks.plots.tsne import fig5_tsne, load_features, tsne_embedding, tsne_panels  # noqa: E402

__all__ = [
    "NamedFigure",
    "convergence_curves",
    "fig3_accuracy_vs_steps",
    "fig4_per_step_accuracy",
    "fig5_tsne",
    "load_features",
    "make_figures",
    "method_colors",
    "plot_runs",
    "png_bytes",
    "save_figure",
    "training_curves",
    "tsne_embedding",
    "tsne_panels",
]
