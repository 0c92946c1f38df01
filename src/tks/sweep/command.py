"""What ``tks sweep`` runs: read the sweep files, choose how many runs go at once, build the executor, run."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from tks.plugins import load_plugins
from tks.sweep.driver import current_states, format_listing, run_sweep, shown_path
from tks.sweep.executors import (
    Executor,
    ExecutorOptions,
    LocalExecutor,
    RayExecutor,
    SlurmExecutor,
    available_cores,
)
from tks.sweep.folders import SWEEP_DIR
from tks.sweep.spec import Sweep, SweepError, load_sweep

EXECUTORS = ("local", "ray", "slurm")
SLURM_MINUTES = 24 * 60
"""Time limit of a SLURM job unless ``--time`` says otherwise (submitit's own default is 5 minutes)."""


def sweep(
    paths: Sequence[str | Path],
    executor: ExecutorOptions | None = None,
    *,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    only: Sequence[str] = (),
    dry_run: bool = False,
    measure: bool = False,
    plugins: Sequence[str] = (),
    data_root: str | Path | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Run (or with ``dry_run`` list) the runs of the sweep files; returns the exit status (1: a run failed).

    Args:
        paths: sweep files.
        executor: where the runs go, how many at once and what each gets (None: ``ExecutorOptions()``, the
            local executor sized to this machine's cores).
        overrides: ``section.key=value`` for every run, applied after the grid.
        out_dir: replaces the file's ``out_dir`` (one sweep file only).
        only: shell patterns; only the runs whose name matches one are listed or run.
        dry_run: list the runs and what each needs; start nothing, write nothing.
        measure: with ``dry_run``, estimate the compute from steps timed here (``tks.sweep.measure``) instead of
            from counted FLOPs at an assumed rate.
        plugins: plugins (module names or paths) loaded here and by every run, besides its config's own.
        data_root: the folder holding the datasets: each run's ``data.root`` becomes ``data_root/<its last
            folder>`` (``load_sweep``).
        out: prints one line.

    Raises:
        SweepError: for invalid files or options, before any run starts.
    """
    executor = executor or ExecutorOptions()
    _check_options(executor, out_dir, paths)
    if measure and not dry_run:
        raise SweepError("--measure goes with --dry-run: it times a few steps of each model and starts no run")
    sweeps = [_with_plugins(load_sweep(path, overrides, out_dir, data_root), plugins) for path in paths]
    if only:
        sweeps = _only(sweeps, only)
    _check_shared_folders(sweeps)
    if not dry_run and executor.on_this_machine:
        _check_data_roots(sweeps)
    procs = executor.procs_per_run
    if executor.on_this_machine:  # submitit's local executor, too, starts every job it gets at once
        parallel, threads = local_capacity(max(1, available_cores() // procs), executor.parallel, executor.threads)
    else:  # the engine queues what does not fit
        threads = executor.threads or 1
        parallel = executor.parallel or sum(len(one.runs) for one in sweeps)
    if dry_run:  # steps are measured with the threads a run gets
        return _dry_run(sweeps, out, threads if measure else None)
    gpus = executor.gpus
    engine: Executor
    if executor.name == "local":
        slots = _gpu_slots(int(gpus)) if gpus else None
        if slots is not None:
            parallel = min(parallel, len(slots))
        engine = LocalExecutor(parallel, slots, procs)
    elif executor.name == "ray":
        engine = RayExecutor(threads, gpus, executor.address, procs)
    else:
        params = dict(_param(item) for item in executor.slurm_params)
        folder = sweeps[0].out_dir / SWEEP_DIR / "submitit"
        minutes = executor.minutes or SLURM_MINUTES
        engine = SlurmExecutor(
            folder, threads, int(gpus), executor.partition, minutes, params, executor.slurm_cluster, procs
        )
    # Local runs write run.out_dir as the user sees it (relative below the working folder); remote ones need it whole.
    job_out_dir = shown_path if executor.name == "local" else str
    return run_sweep(sweeps, engine, parallel, threads, job_out_dir=job_out_dir, out=out)


def _dry_run(sweeps: Sequence[Sweep], out: Callable[[str], None], measure_threads: int | None = None) -> int:
    """What a queue would stumble on and the compute, then each sweep's runs; 1 when a data root is missing.

    The configs, grid values, ``eval`` options and plugins were checked when the sweeps were loaded (an error
    there is raised before this); here the data roots are looked at and the compute is counted (``preflight``),
    or with ``measure_threads`` estimated from steps timed here with that many threads (``measure``).
    The listing comes last, so that its last line still counts the runs' states.
    """
    from tks.sweep.measure import format_measured
    from tks.sweep.preflight import data_problems, format_compute

    runs = sum(len(one.runs) for one in sweeps)
    plugins = {spec for one in sweeps for run in one.runs for spec in run.config.run.plugins}
    problems = data_problems(sweeps)
    roots = "every data root found"
    if problems:
        roots = f"{len(problems)} data root(s) missing (give --data-root DIR or set data.root):"
    out(f"checked: {runs} run config(s), their eval options, {len(plugins)} plugin(s); {roots}")
    for line in [f"  {p}" for p in problems]:
        out(line)
    for line in format_compute(sweeps) if measure_threads is None else format_measured(sweeps, measure_threads):
        out(line)  # a measured line as soon as it is known: measuring a table can take many minutes
    for one in sweeps:
        out("\n" + format_listing(one, current_states(one)))
    return 1 if problems else 0


def _with_plugins(one: Sweep, extra: Sequence[str]) -> Sweep:
    """The sweep with its runs' plugins and ``extra`` loaded here, and every run naming both (paths made absolute)."""
    runs = []
    for run in one.runs:
        specs = tuple(dict.fromkeys(p.spec for p in load_plugins((*run.config.run.plugins, *extra))))
        runs.append(replace(run, config=replace(run.config, run=replace(run.config.run, plugins=specs))))
    return replace(one, runs=tuple(runs))


def local_capacity(cores: int, parallel: int | None, threads: int | None) -> tuple[int, int]:
    """Runs at once (N) and threads per run (K) on this machine: N x K = the cores unless both are given.

    Without either, K = 1 and N = the cores: the small networks of this project gain little from a second thread
    (on 2 cores, two one-thread runs got through 1.35x the samples per second of one two-thread run), so runs side
    by side beat threads within a run.
    """
    threads = threads or (max(1, cores // parallel) if parallel else 1)
    return parallel or max(1, cores // threads), threads


def _check_options(executor: ExecutorOptions, out_dir: str | Path | None, paths: Sequence[str | Path]) -> None:
    if executor.name not in EXECUTORS:
        raise SweepError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor.name!r}")
    for option, value in (
        ("--parallel", executor.parallel),
        ("--threads-per-run", executor.threads),
        ("--time", executor.minutes),
        ("--procs-per-run", executor.procs),
    ):
        if value is not None and value < 1:
            raise SweepError(f"{option} must be >= 1, got {value}")
    if executor.gpus < 0 or (executor.name != "ray" and executor.gpus != int(executor.gpus)):
        raise SweepError(f"--gpus-per-run must be a whole number >= 0 (fractions only on Ray), got {executor.gpus}")
    _check_procs(executor)
    if out_dir is not None and len(paths) > 1:
        raise SweepError("--out names the folder of one sweep: give one sweep file with it")
    wrong = [
        (option, needs)
        for option, value, needs in (
            ("--address", executor.address, "ray"),
            ("--partition", executor.partition, "slurm"),
            ("--time", executor.minutes, "slurm"),
            ("--slurm-param", executor.slurm_params, "slurm"),
        )
        if value and executor.name != needs
    ]
    if wrong:
        option, needs = wrong[0]
        raise SweepError(f"{option} is an option of --executor {needs}, not of {executor.name} (docs/sweeps.md)")


def _check_procs(executor: ExecutorOptions) -> None:
    """With GPUs, a run's training processes hold one GPU each: ``--procs-per-run`` must then equal the GPUs."""
    procs, gpus = executor.procs, executor.gpus
    if procs is None or procs == 1 or gpus == 0:
        return
    if gpus != procs:
        raise SweepError(
            f"--procs-per-run {procs} with --gpus-per-run {format(gpus, 'g')}: each training process holds one GPU, "
            f"give as many processes as GPUs (or --gpus-per-run alone)"
        )


def _only(sweeps: list[Sweep], patterns: Sequence[str]) -> list[Sweep]:
    def wanted(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)

    kept = [replace(s, runs=tuple(r for r in s.runs if wanted(r.name))) for s in sweeps]
    if not any(s.runs for s in kept):
        names = ", ".join(r.name for s in sweeps for r in s.runs)
        raise SweepError(f"no run matches --only {' '.join(patterns)}; the runs are: {names}")
    return [s for s in kept if s.runs]


def _check_shared_folders(sweeps: Sequence[Sweep]) -> None:
    """Two sweep files writing into one folder must not hold the same run twice."""
    seen: dict[tuple[Path, str], Sweep] = {}
    for one in sweeps:
        for run in one.runs:
            other = seen.setdefault((one.out_dir, run.key), one)
            if other is not one:
                raise SweepError(f"{other.path} and {one.path} both hold the run {run.name} in {one.out_dir}")


def _check_data_roots(sweeps: Sequence[Sweep]) -> None:
    """Every run whose dataset is read from a folder has that folder here (checked for runs of this machine only).

    Raises:
        SweepError: naming the first run whose folder is unset or missing, and ``--data-root``.
    """
    from tks.data import dataset_info  # imports torch: only when runs are about to start

    for one in sweeps:
        for run in one.runs:
            data = run.config.data
            try:
                needs_root = dataset_info(data.name).needs_root
            except (KeyError, ValueError):  # an unknown dataset: its run says so itself
                continue
            if needs_root and (data.root is None or not Path(data.root).is_dir()):
                where = "no data.root" if data.root is None else f"data.root {data.root}, which is not a folder"
                raise SweepError(
                    f"{one.path}: run {run.name} reads {data.name} from {where}: give --data-root DIR, the folder "
                    f"holding the datasets' folders (docs/sweeps.md), or set data.root"
                )


def _gpu_slots(per_run: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each run slot: the visible GPUs in groups of ``per_run``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [i.strip() for i in visible.split(",") if i.strip()]
    else:
        import torch

        ids = [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if len(ids) < per_run:
        raise SweepError(f"--gpus-per-run {per_run}: this machine shows {len(ids)} GPU(s)")
    return [",".join(ids[i : i + per_run]) for i in range(0, len(ids) - per_run + 1, per_run)]


def _param(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise SweepError(f"--slurm-param {item!r} must look like key=value, e.g. slurm_mem_gb=16")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value
