import ast
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from run_folders import clustered_features, fake_run

from tks.cli import main
from tks.compare import group_runs, read_runs
from tks.plots import (
    convergence_curves,
    fig3_accuracy_vs_steps,
    fig4_per_step_accuracy,
    fig5_tsne,
    make_figures,
    plot_runs,
    training_curves,
    tsne_embedding,
)

STEMS = ["fig3_accuracy_vs_steps", "fig4_per_step_accuracy", "fig5_tsne", "training_curves"]
SRC = Path(__file__).parents[1] / "src" / "tks"


def _eval(*top1_by_t):
    return {"eval": {"steps": {str(t): {"top1": v} for t, v in top1_by_t}}}


@pytest.fixture
def runs(tmp_path):
    """Baseline seeds 0, 1 and TKS seed 0 trained at T=4 and evaluated at T=1, 2, 4; one of each at T=1."""
    fake_run(
        tmp_path, "ce0", steps=4, metrics={"top1": 0.8, "per_step": [0.5, 0.6, 0.7, 0.8], **_eval((1, 0.5), (2, 0.7))}
    )
    fake_run(
        tmp_path,
        "ce1",
        steps=4,
        seed=1,
        metrics={"top1": 0.9, "per_step": [0.7, 0.6, 0.9, 1.0], **_eval((1, 0.7), (2, 0.8))},
    )
    fake_run(tmp_path, "tks0", steps=4, loss="tks", metrics={"top1": 0.95, "per_step": [0.9] * 4, **_eval((1, 0.9))})
    log = [
        {"epoch": 1, "train": {"loss": 3.0}, "test": {"top1": 0.25}},
        {"epoch": 2, "train": {"loss": 1.5}, "test": {"top1": 0.5}},
    ]
    fake_run(tmp_path, "ce-t1", steps=1, metrics={"top1": 0.6, "per_step": [0.6]}, log=log)
    fake_run(tmp_path, "tks-t1", steps=1, loss="tks", metrics={"top1": 0.75, "per_step": [0.75]})
    return group_runs(read_runs([tmp_path]))


def _series(ax):
    """{legend label: (x, y, error bar half-widths or None)} of the error-bar plots drawn on ``ax``."""
    out = {}
    for container in ax.containers:
        line, _, bars = container.lines
        half = [abs(seg[1][1] - seg[0][1]) / 2 for seg in bars[0].get_segments()] if bars else None
        out[container.get_label()] = (list(line.get_xdata()), list(line.get_ydata()), half)
    return out


def test_fig3_draws_mean_and_std_over_seeds_at_each_test_t(runs):
    fig = fig3_accuracy_vs_steps(runs)
    assert fig.get_suptitle().startswith("Fig. 3:") and "trained at T=4" in fig.get_suptitle()
    (ax,) = fig.axes
    series = _series(ax)
    assert set(series) == {"Baseline", "TKS"}  # the T=1 models only with trained_at_each_t
    x, y, half = series["Baseline"]
    assert x == [1, 2, 4]
    assert y == pytest.approx([60.0, 75.0, 85.0])
    assert half == pytest.approx([math.sqrt(2 * 10.0**2), math.sqrt(2 * 5.0**2), math.sqrt(2 * 5.0**2)])
    assert series["TKS"][:2] == ([1, 4], pytest.approx([90.0, 95.0])) and series["TKS"][2] is None  # one seed
    assert ax.get_xlabel() == "test time steps T" and ax.get_ylabel() == "top-1 accuracy (%)"


def test_fig3_can_add_the_models_trained_at_each_t(runs):
    series = _series(fig3_accuracy_vs_steps(runs, trained_at_each_t=True).axes[0])
    x, y, _ = series["Baseline, trained at each T"]
    assert x == [1, 4] and y == pytest.approx([60.0, 85.0])  # each model at its own T
    assert series["TKS, trained at each T"][1] == pytest.approx([75.0, 95.0])


def test_fig3_adds_a_dashed_line_for_re_binned_event_frames(tmp_path):
    rebin = {"steps": {"1": {"top1": 0.5}}, "steps_rebin": {"1": {"top1": 0.2}, "2": {"top1": 0.6}}}
    fake_run(tmp_path, "dvs", steps=4, metrics={"top1": 0.8, "per_step": [0.8] * 4, "eval": rebin})
    series = _series(fig3_accuracy_vs_steps(group_runs(read_runs([tmp_path]))).axes[0])
    assert set(series) == {"Baseline", "Baseline, frames re-binned"}
    assert series["Baseline"][:2] == ([1, 4], pytest.approx([50.0, 80.0]))
    assert series["Baseline, frames re-binned"][:2] == ([1, 2, 4], pytest.approx([20.0, 60.0, 80.0]))


def test_fig4_draws_each_steps_accuracy_per_method(runs):
    fig = fig4_per_step_accuracy(runs)
    assert fig.get_suptitle().startswith("Fig. 4:")
    assert [ax.get_title() for ax in fig.axes] == ["digits / spiking_cnn, T=1", "digits / spiking_cnn, T=4"]
    x, y, half = _series(fig.axes[1])["Baseline"]
    assert y == pytest.approx([60.0, 60.0, 80.0, 90.0])
    assert np.round(x) == pytest.approx([1, 2, 3, 4])  # shifted a little per method
    assert half == pytest.approx([math.sqrt(2 * 10.0**2), 0.0, math.sqrt(2 * 10.0**2), math.sqrt(2 * 10.0**2)])
    assert fig.axes[1].get_xlabel() == "time step t"


def _val_log(train, val, test):
    return [
        {"epoch": e, "train": {"loss": 1.0, "acc": a}, "val": {"top1": v}, "test": {"top1": s}}
        for e, (a, v, s) in enumerate(zip(train, val, test, strict=True), start=1)
    ]


def test_convergence_curves_draw_train_validation_and_test_means_per_method(tmp_path):
    fake_run(tmp_path, "ce0", log=_val_log([0.5, 0.9], [0.6, 0.8], [0.55, 0.75]))
    fake_run(tmp_path, "ce1", seed=1, log=_val_log([0.7, 0.9], [0.6, 0.9], [0.65, 0.85]))
    fake_run(tmp_path, "tks0", loss="tks", log=_val_log([0.4], [0.5], [0.45]))  # one epoch
    fake_run(tmp_path, "ls0", loss="ls")  # no validation split: no panel
    groups = group_runs(read_runs([tmp_path]))
    fig = convergence_curves(groups)
    assert [ax.get_title() for ax in fig.axes] == ["Baseline, 2 runs", "TKS, 1 run"]
    baseline = _series(fig.axes[0])
    assert set(baseline) == {"train (running)", "validation", "test"}
    x, y, half = baseline["train (running)"]
    assert x == [1, 2] and y == pytest.approx([60.0, 90.0])
    assert half == pytest.approx([math.sqrt(2 * 10.0**2), 0.0])  # sample std of 50 and 70, of 90 and 90
    assert baseline["validation"][1] == pytest.approx([60.0, 85.0])
    assert baseline["test"][1] == pytest.approx([60.0, 80.0])
    assert _series(fig.axes[1])["validation"][:2] == ([1], pytest.approx([50.0]))
    assert fig.axes[0].get_xlim() == (0.5, 2.5) and fig.axes[1].get_xlim() == (0.5, 1.5)  # each its own epochs
    assert _series(fig.axes[1])["test"][2] is None  # one run: no error bars


def test_convergence_curves_are_made_only_for_runs_with_a_validation_split(tmp_path, runs):
    figures, _ = make_figures([r for g in runs for r in g.runs])
    assert "convergence_curves" not in [f.stem for f in figures]
    fake_run(tmp_path / "with-val", "ce0", log=_val_log([0.5], [0.6], [0.55]))
    figures, _ = make_figures(read_runs([tmp_path / "with-val"]))
    assert "convergence_curves" in [f.stem for f in figures]


def test_training_curves_draw_every_run_from_its_log(runs):
    fig = training_curves(runs)
    loss_ax, acc_ax = fig.axes[:2]
    label = "Baseline (digits/spiking_cnn, T=1), seed 0"
    (loss_line,) = [line for line in loss_ax.lines if line.get_label() == label]
    (acc_line,) = [line for line in acc_ax.lines if line.get_label() == label]
    assert list(loss_line.get_xdata()) == [1, 2] and list(loss_line.get_ydata()) == [3.0, 1.5]
    assert list(acc_line.get_ydata()) == pytest.approx([25.0, 50.0])
    assert len(loss_ax.lines) == 5  # one line per run
    assert len({(line.get_color(), line.get_linestyle(), line.get_marker()) for line in loss_ax.lines}) == 5


def test_tsne_separates_clusters_and_subsamples():
    features, labels = clustered_features()
    embedding, index = tsne_embedding(features)
    assert embedding.shape == (60, 2) and list(index) == list(range(60))
    # each point's nearest neighbour in the embedding has its class: the clusters survived
    dist = ((embedding[:, None] - embedding[None]) ** 2).sum(-1) + np.diag(np.full(60, np.inf))
    assert (labels[dist.argmin(1)] == labels).mean() > 0.95
    embedding, index = tsne_embedding(features, max_points=25)
    assert embedding.shape == (25, 2) and len(set(index)) == 25 and list(index) == sorted(index)


def test_fig5_colours_each_point_by_its_class(tmp_path):
    features, labels = clustered_features()
    run = fake_run(tmp_path, "run", features=(features, labels))
    (group,) = group_runs(read_runs([run]))
    fig = fig5_tsne([("Baseline, seed 0", group.runs[0])])
    assert fig.get_suptitle().startswith("Fig. 5:")
    (scatter,) = fig.axes[0].collections
    assert scatter.get_offsets().shape == (60, 2)
    assert list(scatter.get_array()) == list(labels)
    assert fig.axes[0].get_title() == "(a) Baseline, seed 0"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["0", "1", "2"]


def _assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600
    assert (pixels[..., :3] < 0.5).mean() > 0.005  # ink on the page, not a blank image


def test_plot_runs_writes_png_and_pdf_of_every_figure(tmp_path):
    features = clustered_features()
    fake_run(tmp_path / "runs", "ce", features=features)
    fake_run(tmp_path / "runs", "tks", loss="tks")  # no features: left out of Fig. 5, with a note
    files, notes = plot_runs([tmp_path / "runs"], tmp_path / "out")
    assert sorted(f.name for f in files) == sorted(f"{s}.{e}" for s in STEMS for e in ("png", "pdf"))
    for path in files:
        if path.suffix == ".png":
            _assert_png(path)
        else:
            assert path.read_bytes()[:5] == b"%PDF-"
    assert any("Fig. 5 leaves out TKS" in n for n in notes)


def test_notes_say_what_is_missing(tmp_path):
    fake_run(tmp_path, "ce", steps=2)
    fake_run(tmp_path, "ce-t1", steps=1)
    figures, notes = make_figures(read_runs([tmp_path]))
    assert [f.stem for f in figures] == ["fig3_accuracy_vs_steps", "fig4_per_step_accuracy", "training_curves"]
    assert any(n.startswith("Fig. 5 skipped: no run has features.npz") for n in notes)
    assert any("1 run(s) trained at a smaller T appear only with --trained-at-each-t" in n for n in notes)
    assert any("tks eval CHECKPOINT --steps" in n for n in notes)


def test_cli_plot_from_real_digits_runs(digits_runs, tmp_path, capsys):
    root, _ = digits_runs
    assert main(["plot", str(root), "--out", str(tmp_path), "--trained-at-each-t"]) == 0
    assert "wrote" in capsys.readouterr().out
    for stem in STEMS:
        _assert_png(tmp_path / f"{stem}.png")
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize(
    "module",
    sorted(
        str(p.relative_to(SRC))
        for p in [*(SRC / "compare").glob("*.py"), *(SRC / "plots").glob("*.py"), SRC / "report.py"]
    ),
)
def test_presentation_modules_read_files_only(module):
    """They import no torch and none of the modules that build models, data or training."""
    tree = ast.parse((SRC / module).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    forbidden = (
        "torch",
        "tks.models",
        "tks.data",
        "tks.build",
        "tks.checkpoint_model",
        "tks.engine",
        "tks.inference",
        "tks.experiment",
        "tks.evaluation",
        "tks.snn",
        "tks.seeding",
    )
    assert not [n for n in names if n.split(".")[0] == "torch" or n.startswith(forbidden)]
