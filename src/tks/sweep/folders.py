"""What a sweep finds in its output folder: which run folders belong to which run, and what each run still needs.

A run folder belongs to the run whose ``experiment_key`` its ``config.yaml`` resolves to, whatever the folder is
called. Of the folders of one run, the sweep picks, in this order:

1. a finished one (final ``metrics.json``) holding every evaluation the run asks for: **finished**, skipped;
2. one that another process trains in (its lock is held), or the run's claim held by another sweep: **busy**,
   left alone;
3. a finished one lacking an evaluation: **evaluate** (``tks eval`` of what is missing);
4. an unfinished one with a ``checkpoint.pt``: **resume** (``tks train --resume``, then every evaluation);
5. none of these: **start** a new folder; unfinished folders without a checkpoint (stopped before their first
   epoch ended, nothing to resume) are removed first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tks.config import ConfigError, load_config
from tks.config.identity import changed_settings, describe_changes
from tks.data import dataset_info
from tks.errors import TKSWarning
from tks.locks import RUN_LOCK, holder, is_held
from tks.runfiles import FINAL_CHECKPOINT, RunFileError, final_evaluation, is_finished, read_metrics
from tks.sweep.spec import EvalStep, SweepRun, experiment_key

SWEEP_DIR = ".sweep"
"""The sweep's own files inside its output folder: ``claims/`` (locks) and ``logs/`` (one log per run)."""

Action = Literal["finished", "busy", "evaluate", "resume", "start"]


def claim_path(run: SweepRun) -> Path:
    """The lock a sweep holds while it works on ``run``, so that two sweeps never work on the same run."""
    return run.out_dir / SWEEP_DIR / "claims" / f"{run.key}.lock"


def log_path(run: SweepRun) -> Path:
    """Where the output of the run's ``tks train`` and ``tks eval`` goes (appended, session after session)."""
    return run.out_dir / SWEEP_DIR / "logs" / f"{run.name}.log"


class RunFolders:
    """The run folders of one output folder by experiment key; each ``config.yaml`` is read again only if it changed."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._keys: dict[Path, tuple[tuple[int, int], str | None]] = {}

    def of(self, key: str) -> list[Path]:
        """The folders (sorted by name) whose config resolves to the experiment ``key``, as the folder is now."""
        self.refresh()
        return [path for path, (_, k) in self._keys.items() if k == key]

    def refresh(self) -> None:
        """Read the configs of folders that appeared or changed since the last look; forget those that went."""
        children = sorted(p for p in self.out_dir.iterdir() if p.is_dir()) if self.out_dir.is_dir() else []
        keys = {}
        for folder in children:
            # The config of a run another process is starting may be missing or half written: stamped by its size
            # and time, it is read again once it changes.
            stamp = _stamp(folder / "config.yaml")
            cached = self._keys.get(folder)
            keys[folder] = cached if cached is not None and cached[0] == stamp else (stamp, _key(folder))
        self._keys = keys


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (0, -1)
    return (stat.st_mtime_ns, stat.st_size)


def _key(folder: Path) -> str | None:
    """The experiment key of a run folder; None for a folder that is no run of this tks (no or another config)."""
    config = folder / "config.yaml"
    if not config.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TKSWarning)
            loaded = load_config(config, stored=True)
    except ConfigError:
        return None
    try:
        recorded = read_metrics(folder / "metrics.json").get("experiment")
    except RunFileError:
        recorded = None
    if isinstance(recorded, dict) and (changes := changed_settings(recorded, loaded)):
        warnings.warn(
            f"{config} was changed after training ({describe_changes(changes, 'metrics.json', 'config.yaml')}): "
            "the folder is left out, as no run's",
            TKSWarning,
            stacklevel=2,
        )
        return None
    return experiment_key(loaded)


@dataclass(frozen=True)
class Folder:
    """One run folder as the sweep sees it."""

    path: Path
    metrics: dict[str, Any]
    """``metrics.json`` ({} when missing or unreadable: a resume then reports the file)."""
    has_checkpoint: bool
    busy: bool
    """Another process trains in it (``tks.locks``)."""

    @property
    def finished(self) -> bool:
        """Training ended and wrote the final metrics."""
        return is_finished(self.metrics)


def inspect(path: Path) -> Folder:
    """The state of a run folder, read without writing anything."""
    try:
        metrics = read_metrics(path / "metrics.json")
    except RunFileError:
        metrics = {}
    return Folder(path, metrics, (path / FINAL_CHECKPOINT).is_file(), is_held(path / RUN_LOCK))


def evaluation_done(step: EvalStep, folder: Folder, num_steps: int, events: bool) -> bool:
    """Whether ``metrics.json`` (and ``features.npz``) of the final model hold what ``step`` measures.

    Args:
        step: the ``tks eval`` call.
        folder: a finished run folder.
        num_steps: the trained T (``tks eval`` without ``--steps`` measures it).
        events: the data are event data (``--event-steps rebin`` results are kept apart from the others).
    """
    options = step.options
    entry = final_evaluation(folder.metrics)
    key = "steps_rebin" if events and options.event_steps == "rebin" else "steps"
    if not all(str(t) in entry.get(key, {}) for t in options.steps or [num_steps]):
        return False
    if options.early_exit is not None and "early_exit" not in entry:
        return False
    if options.activity and "activity" not in entry:
        return False
    return not options.features or (folder.path / "features.npz").is_file()


@dataclass(frozen=True)
class RunState:
    """What a run needs now, and where."""

    action: Action
    folder: Path | None = None
    """The folder that is finished, evaluated or resumed (None for start, and for busy runs without one)."""
    evals: tuple[EvalStep, ...] = ()
    """The ``tks eval`` calls still to make."""
    stale: tuple[Path, ...] = ()
    """Unfinished folders without a checkpoint, removed before a start."""
    pid: int | None = None
    """The process a busy run is in use by, when known."""


def run_state(run: SweepRun, folders: list[Path], claimed_by: int | None | Literal[False] = False) -> RunState:
    """What ``run`` needs, given the folders of its experiment (module docstring for the order).

    Args:
        run: the run.
        folders: the run folders whose config is the run's experiment (``RunFolders.of``).
        claimed_by: False when no other sweep claims the run; else the claiming process (None when unknown).
    """
    seen = [inspect(path) for path in folders]
    finished = [f for f in seen if f.finished]
    events = bool(finished) and _is_events(run.config.data.name)
    missing = {
        f.path: tuple(e for e in run.evals if not evaluation_done(e, f, run.config.data.num_steps, events))
        for f in finished
    }
    for folder in finished:
        if not missing[folder.path]:
            return RunState("finished", folder.path)
    busy = [f for f in seen if f.busy]
    if claimed_by is not False or busy:
        pid = claimed_by if claimed_by is not False else holder(busy[0].path / RUN_LOCK)
        return RunState("busy", busy[0].path if busy else None, pid=pid)
    if finished:
        return RunState("evaluate", finished[0].path, missing[finished[0].path])
    resumable = [f for f in seen if f.has_checkpoint]
    if resumable:
        latest = max(resumable, key=lambda f: (f.path / FINAL_CHECKPOINT).stat().st_mtime)
        return RunState("resume", latest.path, run.evals)
    return RunState("start", None, run.evals, stale=tuple(f.path for f in seen))


def _is_events(name: str) -> bool:
    try:
        return dataset_info(name).kind == "events"
    except KeyError:  # an unknown dataset cannot have trained: its folder holds no evaluation to tell apart
        return False
