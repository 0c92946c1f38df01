"""Run folders read and checked: the files ``tks train`` and ``tks eval`` write, as ``Run`` records.

Only the files a run writes are read (docs/run-files.md): no model is built and no data is loaded, so this package
imports neither torch nor the models.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tks.config import Config, ConfigError, load_config
from tks.config.identity import changed_settings, describe_changes
from tks.errors import TKSError, TKSWarning
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
    recorded = metrics.get("experiment")  # what training ran (tks 0.x runs before this record: not checked)
    if isinstance(recorded, dict) and (changes := changed_settings(recorded, config)):
        what = describe_changes(changes, "metrics.json", "config.yaml")
        raise RunFolderError(
            f"{path / 'config.yaml'} was changed after training ({what}): it no longer describes what was measured; "
            "put it back, or move the folder away"
        )
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
            "compare its final model (tks compare --model final; model='final' in Python)"
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
