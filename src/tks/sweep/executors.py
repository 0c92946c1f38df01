"""Where a sweep's jobs run: processes on this machine, Ray tasks, or SLURM jobs through submitit.

Each executor takes jobs (``submit``), reports the ones that ended (``wait``), and stops what still runs when the
sweep is interrupted (``stop``). Scheduling across machines is the engine's: Ray places a task where its CPU and GPU
request fits, SLURM queues a job on a node of the partition. The local executor is a pool of threads, each waiting
on one run's ``tks`` processes. Ray and submitit are optional (the ``ray`` and ``slurm`` extras) and
imported only when asked for.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from tks.extras import require
from tks.locks import FileLock
from tks.sweep.jobs import Job, JobResult, execute_job, execute_task
from tks.sweep.spec import SweepError


@dataclass(frozen=True)
class ExecutorOptions:
    """Where a sweep's runs go and what each run gets: the executor options of ``tks sweep`` (docs/sweeps.md)."""

    name: str = "local"
    """``local``, ``ray`` or ``slurm``."""
    parallel: int | None = None
    """Runs at once (local: cores / threads; ray and slurm: every run, the engine queues them)."""
    threads: int | None = None
    """Torch threads (CPUs) per run (1; on the local executor with ``parallel`` alone: cores / parallel)."""
    gpus: float = 0
    """GPUs per run (Ray takes fractions; local gives each run its own CUDA_VISIBLE_DEVICES)."""
    procs: int | None = None
    """Processes of distributed data parallel training per run (None: one per GPU when ``gpus`` >= 1, else 1)."""
    address: str | None = None
    """Ray cluster address (``ray``; None: a local Ray)."""
    partition: str | None = None
    """SLURM partition (``slurm``)."""
    minutes: int | None = None
    """Time limit of each SLURM job (``slurm``; None: ``tks.sweep.command.SLURM_MINUTES``)."""
    slurm_params: Sequence[str] = ()
    """More submitit parameters as ``key=value`` (``slurm``)."""
    slurm_cluster: str = "slurm"
    """``slurm``, or ``local`` for submitit's local executor (no SLURM needed)."""

    @property
    def on_this_machine(self) -> bool:
        """The runs go to processes of this machine: the local executor, or submitit's local one."""
        return self.name == "local" or (self.name == "slurm" and self.slurm_cluster == "local")

    @property
    def procs_per_run(self) -> int:
        """The processes each run trains with: ``procs``, else one per GPU (at least one)."""
        if self.procs is not None:
            return self.procs
        return max(1, int(self.gpus)) if self.gpus == int(self.gpus) else 1


class Executor(Protocol):
    """What the sweep needs of an engine that runs jobs."""

    name: str

    def submit(self, ident: int, job: Job, claim: FileLock) -> None:
        """Start ``job`` (or queue it with the engine); ``ident`` names it in ``wait``'s answer."""

    def wait(self, timeout: float) -> list[tuple[int, JobResult]]:
        """The jobs that ended, waiting up to ``timeout`` seconds for the first one."""

    def stop(self) -> None:
        """Stop every job still running or queued (the sweep was interrupted)."""

    def close(self) -> None:
        """Let go of the engine."""


def available_cores() -> int:
    """The CPU cores this process may use (its affinity mask, e.g. a container's or a SLURM allocation's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _failed(exc: BaseException) -> JobResult:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return JobResult(False, None, f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:400])


class LocalExecutor:
    """Up to ``parallel`` runs at once as processes of this machine."""

    name = "local"

    def __init__(self, parallel: int, gpu_slots: list[str] | None = None, procs: int = 1) -> None:
        """A pool of ``parallel`` threads.

        Args:
            parallel: runs at once.
            gpu_slots: CUDA_VISIBLE_DEVICES of each run slot, one run per slot at a time (None: every run sees
                every GPU).
            procs: processes of each run's training (``Job.procs``: more than one runs ``torchrun``).
        """
        self._procs = procs
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="tks-sweep")
        self._futures: dict[concurrent.futures.Future, tuple[int, str | None]] = {}
        self._processes: list[subprocess.Popen] = []
        self._free_gpus = list(gpu_slots) if gpu_slots is not None else None
        self._stopping = False

    def submit(self, ident: int, job: Job, claim: FileLock) -> None:  # noqa: D102
        gpus = self._free_gpus.pop(0) if self._free_gpus is not None else None
        job = replace(job, procs=self._procs)
        if gpus is not None:
            job = replace(job, gpus=gpus)
        fd = claim.fileno()
        # The tks processes inherit the claim: a sweep that is killed leaves its runs claimed while they train.
        future = self._pool.submit(execute_job, job, pass_fds=() if fd is None else (fd,), on_process=self._started)
        self._futures[future] = (ident, gpus)

    def _started(self, process: subprocess.Popen) -> None:
        self._processes.append(process)
        if self._stopping:  # a job whose training ended as the sweep was stopped: no evaluation now
            process.terminate()

    def wait(self, timeout: float) -> list[tuple[int, JobResult]]:  # noqa: D102
        done, _ = concurrent.futures.wait(self._futures, timeout, concurrent.futures.FIRST_COMPLETED)
        ended = []
        for future in done:
            ident, gpus = self._futures.pop(future)
            if gpus is not None:
                self._free_gpus.append(gpus)
            try:
                ended.append((ident, future.result()))
            except Exception as exc:  # noqa: BLE001 - e.g. the log cannot be written: that run fails, others go on
                ended.append((ident, _failed(exc)))
        self._processes = [p for p in self._processes if p.poll() is None]
        return ended

    def stop(self) -> None:  # noqa: D102
        # Ctrl-C reaches the runs' processes too (same process group) and they stop on their own; others get SIGTERM
        self._stopping = True
        deadline = time.monotonic() + 5
        while any(p.poll() is None for p in self._processes) and time.monotonic() < deadline:
            time.sleep(0.1)
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        concurrent.futures.wait(self._futures, 30)

    def close(self) -> None:  # noqa: D102
        self._pool.shutdown(wait=True)


class RayExecutor:
    """Every run a Ray task asking for ``threads`` CPUs and ``gpus`` GPUs, on a cluster or a local Ray."""

    name = "ray"

    def __init__(self, threads: int, gpus: float, address: str | None, procs: int = 1) -> None:
        """Connect to Ray (or start a local one).

        Args:
            threads: CPUs per training process (``num_cpus`` of each task: ``threads`` x ``procs``).
            gpus: GPUs per run (``num_gpus``; fractions share a GPU).
            address: an existing cluster, e.g. ``auto`` or ``ray://head:10001`` (None: start a local Ray).
            procs: processes of each run's training, started by ``torchrun`` inside the task (one node).
        """
        ray = require("ray", "--executor ray")
        self._ray = ray
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise SweepError(f"cannot start or reach {where}: {_one_line(exc)}") from None
        # A failed run is reported, not retried: rerunning the sweep resumes it from its checkpoint.
        self._task = ray.remote(num_cpus=threads * procs, num_gpus=gpus, max_retries=0)(execute_job)
        self._procs = procs
        self._refs: dict[Any, int] = {}

    def submit(self, ident: int, job: Job, claim: FileLock) -> None:  # noqa: D102
        self._refs[self._task.remote(replace(job, procs=self._procs))] = ident

    def wait(self, timeout: float) -> list[tuple[int, JobResult]]:  # noqa: D102
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:  # and any others that ended meanwhile
            ready, _ = self._ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        ended = []
        for ref in ready:
            ident = self._refs.pop(ref)
            try:
                ended.append((ident, self._ray.get(ref)))
            except self._ray.exceptions.RayError as exc:  # the worker died, or the task was cancelled
                ended.append((ident, _failed(exc)))
        return ended

    def stop(self) -> None:  # noqa: D102
        for ref in self._refs:
            self._ray.cancel(ref, force=True)

    def close(self) -> None:  # noqa: D102
        self._ray.shutdown()


class SlurmExecutor:
    """Every run a SLURM job submitted through submitit (or submitit's local executor, which needs no SLURM).

    A run of N > 1 processes is a job of N tasks on one node, each one rank of the training (``execute_task``), as
    SLURM is meant to start the processes of a distributed job; Ray and the local executor run ``torchrun``.
    """

    name = "slurm"

    def __init__(
        self,
        folder: Path,
        threads: int,
        gpus: int,
        partition: str | None,
        minutes: int,
        parameters: Mapping[str, Any],
        cluster: str = "slurm",
        procs: int = 1,
    ) -> None:
        """Check that submitit is there and takes the options; nothing is submitted yet.

        Args:
            folder: submitit's files (job scripts, pickled jobs and results, SLURM output).
            threads: CPUs per training process (``cpus_per_task``).
            gpus: GPUs per run (``gpus_per_node``).
            partition: the SLURM partition (None: the cluster's default).
            minutes: the time limit of each job.
            parameters: more of submitit's parameters, e.g. ``slurm_mem_gb``.
            cluster: ``slurm``, or ``local`` for submitit's local executor.
            procs: processes of each run's training: the job's tasks (``tasks_per_node``; ``threads`` CPUs each),
                which join one process group (``execute_task``); rank 0 alone also evaluates the run.
        """
        submitit = require("submitit", "--executor slurm")
        try:
            executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        except Exception as exc:  # noqa: BLE001 - submitit raises plain exceptions when it finds no SLURM
            raise SweepError(f"cannot submit to {cluster}: {_one_line(exc)}") from None
        options: dict[str, Any] = {"timeout_min": minutes, "cpus_per_task": threads, "tasks_per_node": procs}
        options["name"] = "tks-sweep"
        if gpus:
            options["gpus_per_node"] = gpus
        if partition is not None:
            options["slurm_partition"] = partition
        options.update(parameters)
        try:
            executor.update_parameters(**options)
        except Exception as exc:  # noqa: BLE001 - an unknown or invalid parameter (a NameError, ValueError, ...)
            raise SweepError(f"submitit does not take these options: {_one_line(exc)}") from None
        self._executor = executor
        self._procs = procs
        self._function = execute_task if procs > 1 else execute_job
        self._jobs: dict[Any, int] = {}

    def submit(self, ident: int, job: Job, claim: FileLock) -> None:  # noqa: D102
        self._jobs[self._executor.submit(self._function, replace(job, procs=self._procs))] = ident

    def wait(self, timeout: float) -> list[tuple[int, JobResult]]:  # noqa: D102
        deadline = time.monotonic() + timeout
        while True:
            done = [job for job in self._jobs if job.done()]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        ended = []
        for job in done:
            ident = self._jobs.pop(job)
            try:
                ended.append((ident, job.results()[0]))  # rank 0's: the only task that evaluates
            except Exception as exc:  # noqa: BLE001 - the job failed, timed out or was cancelled
                ended.append((ident, _failed(exc)))
        return ended

    def stop(self) -> None:  # noqa: D102
        for job in self._jobs:
            job.cancel(check=False)

    def close(self) -> None:  # noqa: D102
        self._jobs.clear()


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]
