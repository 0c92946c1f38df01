"""The paper's Fig. 3 (accuracy against test T) and Fig. 4 (each single step), training and convergence curves."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from tks.compare import (
    Group,
    accuracy_by_test_steps,
    mean_std,
    per_step_accuracy,
    summarize,
)
from tks.plots.style import (
    LINE_STYLES,
    MARKERS,
    PANEL,
    SPLIT_COLORS,
    errorbar,
    integer_x,
    method_colors,
    panels,
    split_groups,
)


def fig3_accuracy_vs_steps(groups: Sequence[Group], *, trained_at_each_t: bool = False) -> Figure:
    """Paper Fig. 3: top-1 (%) against the test T, one line per method, for the models trained at one T.

    In each (dataset, model) panel the models trained at the largest T are drawn at every T they were evaluated at
    (``metrics.json`` ``eval.steps``; mean over seeds, error bars = sample std); event runs also evaluated with
    re-binned frames (``eval.steps_rebin``) get a dashed line for those. With ``trained_at_each_t`` a dashed line
    per method with square markers adds the models trained at each T, each at its own T.
    """
    sections = split_groups(groups, "section")
    trained = {s: max(g.num_steps for g in gs) for s, gs in sections.items()}
    same_t = len(set(trained.values())) == 1
    title = "Fig. 3: top-1 accuracy against the number of test time steps"
    fig, axes = panels(len(sections), title + (f" (trained at T={next(iter(trained.values()))})" if same_t else ""))
    colors = method_colors(g.method for g in groups)
    for ax, (section, members) in zip(axes, sections.items(), strict=True):
        t_max = trained[section]
        xs = {t_max}
        for g in (g for g in members if g.num_steps == t_max):
            stats = accuracy_by_test_steps(g)
            xs.update(stats)
            errorbar(ax, list(stats), list(stats.values()), color=colors[g.method], label=g.method)
            if any("steps_rebin" in r.evaluation for r in g.runs):  # event data re-binned into T frames
                rebin = accuracy_by_test_steps(g, "steps_rebin")
                label = f"{g.method}, frames re-binned"
                errorbar(ax, list(rebin), list(rebin.values()), color=colors[g.method], label=label, dashed=True)
        if trained_at_each_t:
            for method in dict.fromkeys(g.method for g in members):
                own = sorted((g.num_steps, summarize(g)["top1"]) for g in members if g.method == method)
                label = f"{method}, trained at each T"
                x, stats = [t for t, _ in own], [s for _, s in own]
                xs.update(x)
                errorbar(ax, x, stats, color=colors[method], label=label, marker="s", dashed=True)
        ax.axvline(t_max, color="0.5", linestyle=":", linewidth=1, label=f"trained T={t_max}")
        ax.set(xlabel="test time steps T", ylabel="top-1 accuracy (%)", title=_section_title(section, t_max, same_t))
        integer_x(ax, xs)
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
    blocks = split_groups(groups, "block")
    fig, axes = panels(len(blocks), "Fig. 4: accuracy of each single time step")
    colors = method_colors(g.method for g in groups)
    for ax, ((dataset, model, steps), members) in zip(axes, blocks.items(), strict=True):
        for i, g in enumerate(members):
            shift = 0.06 * (i - (len(members) - 1) / 2)
            x = [t + 1 + shift for t in range(steps)]
            errorbar(ax, x, per_step_accuracy(g), color=colors[g.method], label=g.method)
        ax.set(xlabel="time step t", ylabel="accuracy of step t alone (%)", title=f"{dataset} / {model}, T={steps}")
        integer_x(ax, range(1, steps + 1))
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
        integer_x(ax, epochs_seen)
    handles, labels = loss_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, handlelength=4)
    return fig


def has_validation(group: Group) -> bool:
    """Whether every run of ``group`` logged a validation split (``val`` in each ``log.jsonl`` record)."""
    return all(run.log and all("val" in r for r in run.log) for run in group.runs)


def convergence_curves(groups: Sequence[Group]) -> Figure:
    """Train, validation and test top-1 (%) per epoch, one panel per method: has the training converged?

    Each line is the mean over the method's runs (error bars: the sample std where there are several). "train" is
    the running accuracy of each epoch's training batches (``train.acc``: augmented inputs, training-mode
    normalisation, weights changing during the epoch), so it understates the final model's training accuracy; a gap
    between it and validation that opens late, with a flat validation curve, is the over-fitting regime. Runs
    without a validation split are not drawn (``has_validation``).
    """
    drawn = [g for g in groups if has_validation(g)]
    several_blocks = len({g.block for g in drawn}) > 1
    fig, axes = panels(max(len(drawn), 1), "Convergence: train, validation and test top-1 per epoch (log.jsonl)")
    for ax, g in zip(axes, drawn, strict=False):
        for i, (key, part) in enumerate((("train", "acc"), ("val", "top1"), ("test", "top1"))):
            by_epoch: dict[int, list[float]] = {}
            for run in g.runs:
                for record in run.log:
                    by_epoch.setdefault(record["epoch"], []).append(100 * record[key][part])
            epochs = sorted(by_epoch)
            label = {"train": "train (running)", "val": "validation", "test": "test"}[key]
            stats = [mean_std(by_epoch[e]) for e in epochs]
            errorbar(ax, epochs, stats, color=SPLIT_COLORS[i], label=label, marker=MARKERS[i])
        where = f" ({g.dataset}/{g.model}, T={g.num_steps})" if several_blocks else ""
        seeds = f"{len(g.runs)} run{'s' if len(g.runs) > 1 else ''}"
        ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title=f"{g.method}{where}, {seeds}")
        integer_x(ax, (r["epoch"] for run in g.runs for r in run.log))  # each panel its own epochs
        ax.legend(fontsize=8, loc="lower right")
    return fig
