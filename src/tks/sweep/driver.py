"""``tks sweep``: list a sweep's runs with what each needs, or work through them on an executor.

The driver claims a run (a lock in ``<out_dir>/.sweep/claims``) before it looks at the run's folders and holds
the claim until the run's job ends, so that two sweeps started at once, even of different files writing into the
same folder, never train or evaluate the same run twice: the second one reports the run as busy and goes on with
the others. Run folders in use by a ``tks train`` outside any sweep are left alone the same way (``tks.locks``).
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from tks.config import dump_config
from tks.errors import TKSError
from tks.locks import (
    RUN_LOCK,
    FileLock,
    LockHeldError,
    RunFolderInUseError,
    RunFolderLockError,
    acquire,
    describe,
    holder,
    is_held,
    lock_run_dir,
)
from tks.runfiles import FINAL_CHECKPOINT
from tks.sweep.executors import Executor
from tks.sweep.folders import RunFolders, RunState, claim_path, log_path, run_state
from tks.sweep.jobs import Job, JobResult
from tks.sweep.spec import Sweep, SweepRun, format_value

ACTION_WORDS = {
    "finished": "finished",
    "busy": "in use",
    "evaluate": "evaluate",
    "resume": "resume",
    "start": "start",
}


def shown_path(path: Path) -> str:
    """A path relative to the working folder when it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def current_states(sweep: Sweep) -> list[RunState]:
    """What each run of ``sweep`` needs now, found without writing anything (``--dry-run``)."""
    folders = RunFolders(sweep.out_dir)
    states = []
    for run in sweep.runs:
        claim = claim_path(run)
        claimed = holder(claim) if is_held(claim) else False
        states.append(run_state(run, folders.of(run.key), claimed))
    return states


def format_listing(sweep: Sweep, states: Sequence[RunState]) -> str:
    """The ``--dry-run`` table: each run, what it needs, its folder and its settings that differ from the base."""
    counts = {action: sum(s.action == action for s in states) for action in ACTION_WORDS}
    lines = [
        f"{sweep.path}: {_count(len(sweep.runs), 'run')} in {shown_path(sweep.out_dir)} (base: {sweep.base_name})",
        f"{'state':<10} {'run':<{_width(sweep)}}  {'folder':<{_folder_width(states)}}  differences from the base",
    ]
    for run, state in zip(sweep.runs, states, strict=True):
        what = ACTION_WORDS[state.action]
        if state.action == "busy":
            what = f"in use by {describe(state.pid)}"
        folder = state.folder.name if state.folder is not None else "-"
        changes = " ".join(f"{k}={format_value(v)}" for k, v in run.changes) or "(none)"
        lines.append(f"{what:<10} {run.name:<{_width(sweep)}}  {folder:<{_folder_width(states)}}  {changes}")
        if state.action in ("evaluate", "resume", "start") and state.evals:
            lines.append(f"{'':<10}   then tks eval {'; '.join(map(str, state.evals))}")
        if state.stale:
            lines.append(f"{'':<10}   first removes {', '.join(p.name for p in state.stale)} (no completed epoch)")
    lines.append(
        f"{counts['finished']} finished, {counts['evaluate']} to evaluate, {counts['resume']} to resume, "
        f"{counts['start']} to start, {counts['busy']} in use by another process"
    )
    return "\n".join(lines)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _width(sweep: Sweep) -> int:
    return max([3, *(len(run.name) for run in sweep.runs)])


def _folder_width(states: Sequence[RunState]) -> int:
    return max([6, *(len(s.folder.name) for s in states if s.folder is not None)])


@dataclass
class _Progress:
    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    busy: int = 0

    def line(self, event: str) -> str:
        left = self.total - self.done - self.running - self.failed - self.busy
        busy = f", {self.busy} in use elsewhere" if self.busy else ""
        return f"[{self.done} done, {self.running} running, {self.failed} failed, {left} left{busy}] {event}"


def run_sweep(
    sweeps: Sequence[Sweep],
    executor: Executor,
    parallel: int,
    threads: int,
    *,
    job_out_dir: Callable[[Path], str],
    out: Callable[[str], None] = print,
) -> int:
    """Run every run of ``sweeps`` that is not finished, at most ``parallel`` at a time; returns the exit status.

    Args:
        sweeps: the resolved sweep files.
        executor: where jobs run.
        parallel: jobs at once (in flight with the engine).
        threads: torch threads of each run.
        job_out_dir: ``run.out_dir`` as a job must see it (relative for local runs, absolute for others).
        out: prints one line.

    Returns:
        0 when every run ended finished (or was left to another process that had it), 1 when any failed.
    """
    runs = [run for sweep in sweeps for run in sweep.runs]
    for sweep in sweeps:
        sweep.out_dir.mkdir(parents=True, exist_ok=True)
    folders = {sweep.out_dir: RunFolders(sweep.out_dir) for sweep in sweeps}
    progress = _Progress(len(runs))
    pending: deque[SweepRun] = deque()
    for run in runs:  # the opening count; each run is looked at again when its turn comes
        if run_state(run, folders[run.out_dir].of(run.key)).action == "finished":
            progress.done += 1
        else:
            pending.append(run)
    out(
        f"tks sweep: {_count(len(runs), 'run')}, {progress.done} finished already, {len(pending)} to do; executor "
        f"{executor.name}, {parallel} at a time, {threads} thread(s) each"
    )
    in_flight: dict[int, tuple[SweepRun, FileLock, float]] = {}
    failures: list[tuple[str, str]] = []
    busy: list[tuple[str, str]] = []
    ident = 0
    try:
        while pending or in_flight:
            while pending and len(in_flight) < parallel:
                run = pending.popleft()
                decision = _prepare(run, folders[run.out_dir], threads, job_out_dir)
                if decision.outcome == "submit":
                    ident += 1
                    executor.submit(ident, decision.job, decision.claim)
                    in_flight[ident] = (run, decision.claim, time.monotonic())
                    progress.running += 1
                elif decision.outcome == "finished":
                    progress.done += 1
                elif decision.outcome == "failed":
                    progress.failed += 1
                    failures.append((run.name, decision.note))
                else:
                    progress.busy += 1
                    busy.append((run.name, decision.note))
                out(progress.line(f"{run.name}: {decision.note}"))
            for done_ident, result in executor.wait(timeout=2.0):
                run, claim, started = in_flight.pop(done_ident)
                claim.release()
                progress.running -= 1
                _report(run, result, time.monotonic() - started, progress, failures, out)
    except KeyboardInterrupt:
        out(f"interrupted: stopping {len(in_flight)} run(s); rerun the sweep to resume them")
        executor.stop()
        raise
    finally:
        executor.close()
        for _, claim, _ in in_flight.values():
            claim.release()
    _summary(sweeps, progress, failures, busy, out)
    return 1 if failures else 0


@dataclass(frozen=True)
class _Decision:
    """What the driver does with a run when its turn comes."""

    outcome: Literal["submit", "finished", "busy", "failed"]
    note: str
    job: Job | None = None
    claim: FileLock | None = None


def _prepare(run: SweepRun, folders: RunFolders, threads: int, job_out_dir: Callable[[Path], str]) -> _Decision:
    """Claim ``run``, look at its folders again and decide: submit a job (holding the claim), or why not."""
    path = claim_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        claim = acquire(path, wait=False)
    except LockHeldError as exc:
        return _Decision("busy", f"in use: claimed by another sweep ({describe(exc.pid)}) or a run it started")
    try:
        decision = _decide(run, folders.of(run.key), threads, job_out_dir)
    except BaseException:
        claim.release()
        raise
    if decision.outcome != "submit":
        claim.release()
        return decision
    return replace(decision, claim=claim)


def _decide(run: SweepRun, folders: list[Path], threads: int, job_out_dir: Callable[[Path], str]) -> _Decision:
    state = run_state(run, folders)
    where = state.folder.name if state.folder is not None else ""
    if state.action == "finished":
        return _Decision("finished", f"finished meanwhile ({where})")
    if state.action == "busy":
        return _Decision("busy", f"in use: {where or 'its folder'} is in use by {describe(state.pid)}")
    if state.action == "evaluate" and not (state.folder / FINAL_CHECKPOINT).is_file():
        missing = "; ".join(map(str, state.evals))
        return _Decision("failed", f"{where} lacks the evaluation {missing} and the {FINAL_CHECKPOINT} to make it")
    for stale in state.stale:
        try:
            with lock_run_dir(stale):
                shutil.rmtree(stale)
        except RunFolderInUseError:  # its training started after all: leave the run to it
            return _Decision("busy", f"in use: {stale.name} is in use by {describe(holder(stale / RUN_LOCK))}")
        except (RunFolderLockError, OSError) as exc:
            return _Decision("failed", f"cannot remove {stale} (no completed epoch): {exc}")
    out_dir = job_out_dir(run.out_dir)
    job = Job(
        name=run.name,
        key=run.key,
        action=state.action,
        out_dir=out_dir,
        config=dump_config(replace(run.config, run=replace(run.config.run, out_dir=out_dir))),
        folder=str(state.folder) if state.folder is not None else None,
        evals=tuple(step.args for step in state.evals),
        log=str(log_path(run)),
        threads=threads,
    )
    note = {"start": "started", "resume": f"resuming {where}", "evaluate": f"evaluating {where}"}[state.action]
    if state.stale:
        note += f" (removed {', '.join(p.name for p in state.stale)}: no completed epoch)"
    return _Decision("submit", note, job)


def _report(
    run: SweepRun,
    result: JobResult,
    seconds: float,
    progress: _Progress,
    failures: list[tuple[str, str]],
    out: Callable[[str], None],
) -> None:
    if result.ok:
        progress.done += 1
        note = f"; {result.message}" if result.message else ""
        out(progress.line(f"{run.name}: finished in {seconds:.0f} s ({Path(result.folder).name}){note}"))
    else:
        progress.failed += 1
        failures.append((run.name, result.message))
        out(progress.line(f"{run.name}: FAILED: {result.message}"))


def _summary(
    sweeps: Sequence[Sweep],
    progress: _Progress,
    failures: list[tuple[str, str]],
    busy: list[tuple[str, str]],
    out: Callable[[str], None],
) -> None:
    from tks.compare import compare_runs

    out(
        f"\ntks sweep: {progress.done} finished, {progress.failed} failed, {progress.busy} left to other processes "
        f"(of {progress.total})"
    )
    for name, message in failures:
        out(f"  failed: {name}: {message}")
    for name, message in busy:
        out(f"  left alone: {name}: {message}")
    if failures or busy:
        out("  rerun the sweep to retry (interrupted runs resume from their last epoch)")
    for out_dir in dict.fromkeys(sweep.out_dir for sweep in sweeps):
        out(f"\ntks compare {shown_path(out_dir)}")
        try:
            out(compare_runs([out_dir]).rstrip("\n"))
        except TKSError as exc:
            out(f"no table: {exc}")
