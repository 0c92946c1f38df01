"""Read run folders and aggregate them over seeds: the paper's Table 4 and the numbers behind its figures.

Table 4 compares methods by top-1 / top-5 / AURC. Only the files a run writes are read (docs/run-files.md): no model
is built and no data is loaded, so this module imports neither torch nor the models. Runs whose configs differ only
in the ``run`` section (seed, name, device, precision, ...) and in where or how data are read (``data.root``,
``data.num_workers``, ``data.eval_batch_size``) are repetitions of one experiment: a ``Group``. Its statistics are
the mean and the sample standard deviation (denominator n - 1) over its runs; a group of one run has no standard
deviation (``None``, shown as no ``±``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tks.config import (
    TKS_VARIANT_FIELDS,
    Config,
    ConfigError,
    LossConfig,
    StrongWeakOptions,
    TKSOptions,
    flatten,
    load_config,
    to_dict,
)
from tks.errors import TKSError, TKSWarning
from tks.paths import check_writable_folder
from tks.runfiles import RunFileError, final_evaluation, is_finished, read_metrics


class RunFolderError(TKSError):
    """A path that is not a run folder, or a run folder with a missing or broken file."""


@dataclass(frozen=True)
class Metric:
    """A number of ``metrics.json`` as the paper prints it."""

    key: str
    """Key in ``metrics.json`` (a fraction)."""
    header: str
    """Column header, with the unit."""
    column: str
    """CSV column stem, with the unit."""
    scale: float
    """Factor from the stored fraction to the printed unit."""
    higher_is_better: bool


METRICS = (
    Metric("top1", "top-1 (%)", "top1_pct", 100.0, True),
    Metric("top5", "top-5 (%)", "top5_pct", 100.0, True),
    Metric("aurc", "AURC (x10^3)", "aurc_x1e3", 1000.0, False),
    Metric("e_aurc", "E-AURC (x10^3)", "e_aurc_x1e3", 1000.0, False),
    Metric("ece", "ECE (%)", "ece_pct", 100.0, False),
)
REQUIRED_METRICS = tuple(m.key for m in METRICS) + ("per_step", "num_steps")

# Method labels of loss.name, in the paper's row order (Table 4); strong_weak is named by its direction.
METHOD_LABELS = {"ce": "Baseline", "ls": "LS", "tet": "TET", "tks": "TKS"}
STRONG_WEAK_LABELS = {
    "strong2weak": "Strong2Weak",
    "weak2strong": "Weak2Strong",
    "both": "Strong2Weak+Weak2Strong",
    "cascade": "Strong2Weak cascade",
}
METHOD_ORDER = (*METHOD_LABELS.values(), *STRONG_WEAK_LABELS.values())
# The loss options that make a TKS run a variant of the official TKS (docs/run-files.md).
# Config keys that do not change the experiment: runs differing only in these are repetitions.
NOT_EXPERIMENT = ("data.root", "data.num_workers", "data.eval_batch_size")

TABLE_NOTE = (
    "Test set at the trained T. Mean ± sample standard deviation (n - 1) over the runs of a row; a row of one run "
    "shows no ±. Best of each block in bold (higher top-1/top-5, lower AURC/E-AURC/ECE)."
)
MODELS = ("final", "selected")
"""Which model of a run ``tks compare`` reports: the last epoch's, or the one chosen as ``best.pt``."""


@dataclass(frozen=True)
class Run:
    """The files of one run folder, read and checked."""

    path: Path
    config: Config
    metrics: dict[str, Any]
    """``metrics.json``: the final model at the trained T, and ``eval`` (per checkpoint file) from ``tks eval``."""
    log: tuple[dict[str, Any], ...]
    """``log.jsonl``: one record per epoch."""

    @property
    def seed(self) -> int:
        """``run.seed``."""
        return self.config.run.seed

    @property
    def num_steps(self) -> int:
        """The T the run was trained with."""
        return self.config.data.num_steps

    @property
    def features_path(self) -> Path:
        """``features.npz``, written by ``tks eval --features`` (may not exist)."""
        return self.path / "features.npz"

    @property
    def evaluation(self) -> dict[str, Any]:
        """What ``tks eval`` measured on the final model (``tks.runfiles.final_evaluation``); {} when nothing."""
        return final_evaluation(self.metrics)

    def top1_by_steps(self, key: str = "steps") -> dict[int, float]:
        """Top-1 at each test T that was evaluated, always including the trained T.

        Args:
            key: ``"steps"`` (``tks eval --steps``; event data truncated to the first T frames) or ``"steps_rebin"``
                (event data re-binned into T frames, ``--event-steps rebin``).
        """
        steps = {int(t): m["top1"] for t, m in self.evaluation.get(key, {}).items()}
        # The top level is the final model at the trained T, the same model ``tks eval`` loads from checkpoint.pt.
        steps.setdefault(self.num_steps, self.metrics["top1"])
        return dict(sorted(steps.items()))


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders named by ``paths``, each once.

    A folder holding ``config.yaml`` is a run; any other folder stands for its finished subfolders (one level down,
    sorted by name). A subfolder without the final metrics (no ``metrics.json``, or one holding only ``tks eval``
    results of an intermediate checkpoint) is still training, or was stopped: it is left out, so that
    a study can be compared while it runs, and named in a warning.

    Raises:
        RunFolderError: for a path that does not exist, or a folder that is no run and holds none.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise RunFolderError(f"run folder not found: {path}")
        if (path / "config.yaml").is_file():
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if (p / "config.yaml").is_file())
        if not children:
            raise RunFolderError(f"{path} is not a run folder (no config.yaml) and holds no run folders")
        unfinished = [p for p in children if not _finished(p)]
        if unfinished:
            names = ", ".join(p.name for p in unfinished)
            message = f"left out {len(unfinished)} unfinished run(s) (no final metrics.json): {names}"
            warnings.warn(message, TKSWarning, stacklevel=2)
        found.extend(p for p in children if p not in unfinished)
    seen: set[Path] = set()
    unique = []
    for path in found:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique


def _finished(run_dir: Path) -> bool:
    try:
        return is_finished(read_metrics(run_dir / "metrics.json"))
    except RunFileError:
        return True  # finished or not, a broken file is reported by read_run, naming it


def read_run(path: str | Path) -> Run:
    """Read ``config.yaml``, ``metrics.json`` and ``log.jsonl`` of one run folder.

    Raises:
        RunFolderError: naming the file that is missing, is not valid YAML/JSON, or lacks a needed entry.
    """
    path = Path(path)
    _require(path / "config.yaml", "tks train writes it when the run starts")
    try:
        config = load_config(path / "config.yaml", stored=True)
    except ConfigError as exc:  # file-level messages start with the file's name: say it once
        file = str(path / "config.yaml")
        reason = _one_line(exc).removeprefix(f"{file}: ").removeprefix(f"{file} is ").removeprefix(f"{file} ")
        raise RunFolderError(f"{file} is not a valid tks config: {reason}") from None
    metrics = _parse_json(path / "metrics.json", _read(path / "metrics.json", "tks train writes it when it ends"))
    missing = [key for key in REQUIRED_METRICS if key not in metrics]
    if missing:
        raise RunFolderError(f"{path / 'metrics.json'} lacks {', '.join(missing)}")
    log_path = path / "log.jsonl"
    lines = _read(log_path, "tks train writes a line per epoch").splitlines()
    log = tuple(_parse_json(log_path, line, line=i) for i, line in enumerate(lines, 1) if line.strip())
    return Run(path, config, metrics, log)


def selected_model(run: Run) -> Run:
    """The run as its selected model (``best.pt``) measured it.

    ``metrics`` become ``metrics.json``'s ``selected`` entry, without ``eval`` (``tks eval`` measures the final
    model, ``checkpoint.pt``).

    Raises:
        RunFolderError: for a run without the entry (written before tks recorded it).
    """
    selected = run.metrics.get("selected")
    where = run.path / "metrics.json"
    if not isinstance(selected, dict):
        raise RunFolderError(
            f"{where} has no 'selected' metrics (written before tks recorded the selected model); "
            "compare its final model (--model final)"
        )
    missing = [key for key in (*REQUIRED_METRICS, "selected_on") if key not in selected]
    if missing:
        raise RunFolderError(f"{where}: 'selected' lacks {', '.join(missing)}")
    return replace(run, metrics=dict(selected))


def read_runs(paths: Iterable[str | Path]) -> list[Run]:
    """``read_run`` of every run folder named by ``paths`` (see ``expand_run_dirs``); at least one."""
    dirs = expand_run_dirs(paths)
    if not dirs:
        raise RunFolderError("no run folders given")
    return [read_run(d) for d in dirs]


def _require(path: Path, hint: str) -> None:
    if not path.is_file():
        raise RunFolderError(f"{path} is missing ({hint})")


def _read(path: Path, hint: str) -> str:
    _require(path, hint)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunFolderError(f"{path} is not UTF-8 text; tks writes JSON there") from None


def _parse_json(path: Path, text: str, line: int | None = None) -> dict[str, Any]:
    where = f"{path}, line {line}" if line is not None else str(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{where} must hold a JSON object, got {type(value).__name__}")
    return value


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def method_label(loss: LossConfig) -> str:
    """The paper's name of a run's method: Baseline, LS, TET, TKS, or a TKS variant with what differs.

    The paper's own equations (mean teacher, time-averaged student at temperature tau) read "TKS (paper Eq. 5-7)".
    ``strong_weak`` runs are named by their direction (Weak2Strong, Strong2Weak, ...), with the options that differ
    from the paper's, e.g. "Weak2Strong (selection=sample)".
    """
    if loss.name == "strong_weak":
        sw, paper_sw = loss.strong_weak, StrongWeakOptions()
        changed = [
            f.name for f in fields(sw) if f.name != "direction" and getattr(sw, f.name) != getattr(paper_sw, f.name)
        ]
        base = STRONG_WEAK_LABELS[sw.direction]
        return f"{base} ({', '.join(_setting(f, getattr(sw, f)) for f in changed)})" if changed else base
    base = METHOD_LABELS[loss.name]
    if loss.name != "tks":
        return base
    tks, official = loss.tks, TKSOptions()
    changed = [f for f in TKS_VARIANT_FIELDS if getattr(tks, f) != getattr(official, f)]
    if not changed:
        return base
    paper = {"teacher": "mean", "student": "mean", "student_temperature": tks.temperature}
    if set(changed) == set(paper) and all(getattr(tks, f) == v for f, v in paper.items()):
        return f"{base} (paper Eq. 5-7)"
    return f"{base} ({', '.join(_setting(f, getattr(tks, f)) for f in changed)})"


def _setting(key: str, value: Any) -> str:
    return key if value is True else f"{key}={value}"


def experiment_settings(config: Config) -> dict[str, Any]:
    """The flattened config without the keys that do not define the experiment.

    Left out: ``run.*``, ``NOT_EXPERIMENT`` and the options of the losses the run did not use (``loss.<other>.*``).
    """
    flat = flatten(to_dict(config))
    unused = tuple(f"loss.{f.name}." for f in fields(LossConfig) if f.name not in ("name", config.loss.name))
    return {k: v for k, v in flat.items() if not k.startswith(("run.", *unused)) and k not in NOT_EXPERIMENT}


@dataclass(frozen=True)
class Group:
    """Runs of one experiment that differ only in seed (and other ``run`` settings)."""

    dataset: str
    model: str
    num_steps: int
    """Trained T."""
    method: str
    """Display label: ``method_label``, plus the settings that tell apart groups of the same label and block."""
    runs: tuple[Run, ...]

    @property
    def block(self) -> tuple[str, str, int]:
        """The (dataset, model, trained T) block of the table this group is a row of."""
        return self.dataset, self.model, self.num_steps

    @property
    def seeds(self) -> list[int]:
        """The seed of each run, in order."""
        return [r.seed for r in self.runs]


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group runs by experiment; sorted by dataset, model, T, then the paper's method order.

    Two groups of one block whose methods share a label (e.g. TKS at temperature 3 and at 5) get the settings in
    which they differ appended to the label, e.g. ``TKS (loss.tks.temperature=5.0)``.
    """
    by_key: dict[str, list[Run]] = {}
    for run in runs:  # JSON text as the key: settings may hold lists, which cannot be hashed
        by_key.setdefault(json.dumps(experiment_settings(run.config), sort_keys=True), []).append(run)
    labelled: dict[tuple, list[list[Run]]] = {}
    for members in by_key.values():
        cfg = members[0].config
        block_and_label = (cfg.data.name, cfg.model.name, cfg.data.num_steps, method_label(cfg.loss))
        labelled.setdefault(block_and_label, []).append(members)
    groups = []
    for (dataset, model, steps, label), same in labelled.items():
        settings = [experiment_settings(members[0].config) for members in same]
        differing = _differing_settings(settings)
        for members, setting in zip(same, settings, strict=True):
            suffix = ", ".join(f"{k}={setting.get(k)}" for k in differing)
            name = f"{label} ({suffix})" if suffix else label
            groups.append(Group(dataset, model, steps, name, tuple(sorted(members, key=lambda r: r.seed))))
    return sorted(groups, key=lambda g: (g.block, _method_rank(g.method), g.method))


def _differing_settings(settings: list[dict[str, Any]]) -> list[str]:
    keys = sorted(set().union(*settings))
    return [k for k in keys if len({repr(s.get(k)) for s in settings}) > 1]


def _method_rank(label: str) -> int:
    base = label.split(" (")[0]
    return METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of a value over n runs (``std`` is None when n = 1)."""

    mean: float
    std: float | None
    n: int


def mean_std(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (denominator n - 1) of at least one value."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


def summarize(group: Group) -> dict[str, Stat]:
    """``Stat`` of each of ``METRICS`` over the group's runs, in the printed unit (% or x10^3)."""
    return {m.key: mean_std([m.scale * r.metrics[m.key] for r in group.runs]) for m in METRICS}


def accuracy_by_test_steps(group: Group, key: str = "steps") -> dict[int, Stat]:
    """Top-1 (%) at each test T (paper Fig. 3), over the runs evaluated at that T (``key``: see ``top1_by_steps``)."""
    values: dict[int, list[float]] = {}
    for run in group.runs:
        for t, top1 in run.top1_by_steps(key).items():
            values.setdefault(t, []).append(100.0 * top1)
    return {t: mean_std(v) for t, v in sorted(values.items())}


def per_step_accuracy(group: Group) -> list[Stat]:
    """Accuracy (%) of each single step t = 1..T at the trained T (paper Fig. 4), over the runs."""
    per_run = [r.metrics["per_step"] for r in group.runs]
    return [mean_std([100.0 * acc[t] for acc in per_run]) for t in range(group.num_steps)]


@dataclass(frozen=True)
class Row:
    """One row of the comparison table."""

    group: Group
    stats: dict[str, Stat]
    best: frozenset[str]
    """Keys of ``METRICS`` in which this row is the best of its block (only in blocks of several rows)."""


def table_rows(groups: Sequence[Group]) -> list[Row]:
    """Rows of the comparison table, with the best value of each block marked as the paper's boldface."""
    stats = [summarize(g) for g in groups]
    rows = []
    for group, stat in zip(groups, stats, strict=True):
        block = [s for g, s in zip(groups, stats, strict=True) if g.block == group.block]
        best = set()
        if len(block) > 1:
            for m in METRICS:
                pick = max if m.higher_is_better else min
                if stat[m.key].mean == pick(s[m.key].mean for s in block):
                    best.add(m.key)
        rows.append(Row(group, stat, frozenset(best)))
    return rows


def format_stat(stat: Stat) -> str:
    """``"84.72 ± 1.23"``, or ``"84.72"`` for a single run."""
    return f"{stat.mean:.2f}" if stat.std is None else f"{stat.mean:.2f} ± {stat.std:.2f}"


TABLE_HEADER = ("Dataset", "Model", "T", "Method", *(m.header for m in METRICS), "seeds")


def table_note(runs: Sequence[Run], model: str = "final") -> str:
    """``TABLE_NOTE`` and which model of each run the table reports.

    For selected models (runs read through ``selected_model``) the note names the set that chose them.
    """
    if model == "final":
        return f"{TABLE_NOTE} Final model of each run (last epoch, checkpoint.pt)."
    sets = sorted({run.metrics["selected_on"] for run in runs})
    chooser = {
        "val": "the best validation top-1",
        "test": "the best test top-1, which makes the test numbers optimistic",
    }
    counts = {s: sum(r.metrics["selected_on"] == s for r in runs) for s in sets}
    chosen = "; ".join(f"{chooser[s]} ({n} run{'' if n == 1 else 's'})" for s, n in counts.items())
    return f"{TABLE_NOTE} Selected model of each run (best.pt, the epoch of {chosen})."


def to_markdown(rows: Sequence[Row], note: str = TABLE_NOTE) -> str:
    """The comparison as a Markdown table in the layout of the paper's Table 4, followed by a note on the numbers.

    Dataset, model and T are written on the first row of each block only, as the paper merges those cells.
    """
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * 3 + ":---|" + "---:|" * (len(METRICS) + 1)]
    previous = None
    for row in rows:
        g = row.group
        head = ["", "", ""] if g.block == previous else [g.dataset, g.model, str(g.num_steps)]
        previous = g.block
        cells = [_md_bold(format_stat(row.stats[m.key]), m.key in row.best) for m in METRICS]
        lines.append("| " + " | ".join([*head, _md_escape(g.method), *cells, str(len(g.runs))]) + " |")
    return "\n".join(lines) + f"\n\n{note}\n"


def _md_bold(text: str, bold: bool) -> str:
    return f"**{text}**" if bold else text


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_csv(rows: Sequence[Row]) -> str:
    """The comparison as CSV: one row per group, mean and sample std of every metric (std empty for one run)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    stats = [f"{m.column}_{s}" for m in METRICS for s in ("mean", "std")]
    writer.writerow(["dataset", "model", "T", "method", *stats, "n", "seeds"])
    for row in rows:
        g = row.group
        numbers = []
        for m in METRICS:
            stat = row.stats[m.key]
            numbers += [repr(stat.mean), "" if stat.std is None else repr(stat.std)]
        seeds = ";".join(map(str, g.seeds))
        writer.writerow([g.dataset, g.model, g.num_steps, g.method, *numbers, len(g.runs), seeds])
    return out.getvalue()


def steps_markdown(groups: Sequence[Group]) -> str:
    """Markdown tables of the accuracy at each test T (Fig. 3) and of each single step (Fig. 4), one per block.

    The test-T table appears for blocks where some run was evaluated at a T other than the trained one; event
    runs evaluated with ``--event-steps rebin`` get a second one for the re-binned frames.
    """
    parts = []
    for block in dict.fromkeys(g.block for g in groups):
        members = [g for g in groups if g.block == block]
        name = f"{block[0]} / {block[1]}, trained at T={block[2]}"
        for key, what in (("steps", "top-1 (%) at each test T"), ("steps_rebin", "the same, frames re-binned")):
            by_steps = {g.method: accuracy_by_test_steps(g, key) for g in members}
            if all(len(v) == 1 for v in by_steps.values()):
                continue  # evaluated at the trained T only
            parts.append(_stat_table(f"{name}: {what}", "T", by_steps))
        per_step = {g.method: dict(enumerate(per_step_accuracy(g), start=1)) for g in members}
        parts.append(_stat_table(f"{name}: accuracy (%) of each single step t", "t", per_step))
    return "\n".join(parts)


def _stat_table(title: str, symbol: str, rows: dict[str, dict[int, Stat]]) -> str:
    columns = sorted(set().union(*rows.values()))
    lines = [f"{title}:", "", "| Method | " + " | ".join(f"{symbol}={c}" for c in columns) + " |"]
    lines.append("|:---|" + "---:|" * len(columns))
    for method, stats in rows.items():
        cells = [format_stat(stats[c]) if c in stats else "" for c in columns]
        lines.append(f"| {_md_escape(method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PairedStat:
    """Mean of paired differences over n seeds with its 95% confidence interval (None when n = 1)."""

    mean: float
    low: float | None
    high: float | None
    n: int


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedStat:
    """Mean of a_i - b_i with the t-interval of 95%: mean ± t_{0.975, n-1} * sd / sqrt(n), sd with n - 1.

    With 3 pairs t_{0.975, 2} = 4.30, so the interval is wide unless the differences agree closely.
    """
    from scipy.stats import t as student_t  # scipy is slow to import; only this table needs it

    stat = mean_std([x - y for x, y in zip(a, b, strict=True)])
    if stat.std is None:
        return PairedStat(stat.mean, None, None, 1)
    half = float(student_t.ppf(0.975, stat.n - 1)) * stat.std / math.sqrt(stat.n)
    return PairedStat(stat.mean, stat.mean - half, stat.mean + half, stat.n)


def paired_markdown(groups: Sequence[Group], reference: str) -> str:
    """The paired difference, over the seeds both ran, between ``reference`` and every other method of its block.

    Runs of one seed share the initialisation and data order across methods, so seed-wise differences remove that
    source of variance. An interval that excludes 0 is marked with ``*``. Blocks without ``reference`` are left out.

    Args:
        groups: from ``group_runs``.
        reference: a method label as the table prints it, e.g. ``TKS``.
    """
    lines = []
    for block in dict.fromkeys(g.block for g in groups):
        members = [g for g in groups if g.block == block]
        ref = next((g for g in members if g.method == reference), None)
        if ref is None:
            continue
        by_seed = {r.seed: r for r in ref.runs}
        for other in (g for g in members if g is not ref):
            pairs = [(by_seed[r.seed], r) for r in other.runs if r.seed in by_seed]
            if not pairs:
                continue
            cells = [
                _format_paired(
                    paired_difference(
                        [m.scale * a.metrics[m.key] for a, _ in pairs], [m.scale * b.metrics[m.key] for _, b in pairs]
                    )
                )
                for m in METRICS
            ]
            label = _md_escape(f"{reference} − {other.method}")
            lines.append(f"| {block[0]} / {block[1]} / T={block[2]} | {label} | {len(pairs)} | {' | '.join(cells)} |")
    if not lines:
        return ""
    head = "| Block | Difference | pairs | " + " | ".join(m.header for m in METRICS) + " |"
    rule = "|:---|:---|---:|" + "---:|" * len(METRICS)
    note = (
        f"Paired differences {reference} minus each method over the seeds both ran: mean [95% confidence interval, "
        "t-distribution with n - 1 degrees of freedom]; * marks an interval that excludes 0. Positive is better for "
        "top-1/top-5, negative for AURC/E-AURC/ECE."
    )
    return "\n".join([head, rule, *lines]) + f"\n\n{note}\n"


def _format_paired(d: PairedStat) -> str:
    if d.low is None:
        return f"{d.mean:+.2f}"
    star = "*" if d.low > 0 or d.high < 0 else ""
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]{star}"


def compare_runs(
    paths: Iterable[str | Path],
    out_dir: str | Path | None = None,
    model: str = "final",
    *,
    paired: str | None = None,
) -> str:
    """What ``tks compare`` runs: the Markdown table of the runs in ``paths``.

    The table is followed by the accuracy at each test T and of each single step (``steps_markdown``), and with
    ``paired`` (a method label such as ``TKS``) by the paired differences against it (``paired_markdown``). With
    ``out_dir`` the Markdown is also written there as ``compare.md``, and the main table as ``compare.csv``.

    Args:
        paths: run folders, or folders holding them.
        out_dir: where to write ``compare.md`` and ``compare.csv`` (None: nowhere).
        model: ``final`` (the last epoch's model, the top level of ``metrics.json``) or ``selected`` (``best.pt``,
            the ``selected`` entry; the test-T table then shows the trained T only). The note under the table
            says which.
        paired: a method label (e.g. ``TKS``): add its paired differences to every other method over seeds.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {model!r}")
    if out_dir is not None:
        check_writable_folder(out_dir, "--out")
    runs = read_runs(paths)
    if model == "selected":
        runs = [selected_model(run) for run in runs]
    groups = group_runs(runs)
    rows = table_rows(groups)
    markdown = to_markdown(rows, table_note(runs, model)) + "\n" + steps_markdown(groups)
    if paired is not None:
        if not any(g.method == paired for g in groups):
            raise RunFolderError(
                f"--paired {paired!r}: no such method; the methods are {sorted({g.method for g in groups})}"
            )
        markdown += "\n" + paired_markdown(groups, paired)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(markdown)
        (out / "compare.csv").write_text(to_csv(rows))
    return markdown
