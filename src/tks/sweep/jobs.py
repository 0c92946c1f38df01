"""One run's work as a self-contained job: train it (new or resumed), then evaluate it with ``tks eval``.

``execute_job`` is what every executor runs, in a thread on this machine, in a Ray worker or in a SLURM job: it
starts ``python -m tks`` with the interpreter it runs under (never a ``tks`` found on ``PATH``, which may be another
installation), so that the job trains with the same tks as the process that runs it. Everything it needs travels
in the ``Job`` (the resolved config as text, paths), and the output folder must be the same path where it runs.

A run of several processes trains under ``torchrun`` inside the job, except on SLURM, whose job is one task per
process: each task runs ``execute_task``, one rank of the training, and rank 0 alone does the rest of the job.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from tks.runfiles import FINAL_CHECKPOINT
from tks.sweep.folders import RunFolders, inspect


@dataclass(frozen=True)
class Job:
    """What one run still needs, in plain values (it is pickled to Ray workers and SLURM jobs)."""

    name: str
    key: str
    """The run's ``experiment_key``: how the folder that ``tks train`` made is found afterwards."""
    action: Literal["start", "resume", "evaluate"]
    out_dir: str
    config: str
    """The resolved config as YAML (``start``)."""
    folder: str | None
    """The run folder to resume or evaluate."""
    evals: tuple[tuple[str, ...], ...]
    """The ``tks eval`` arguments (after the checkpoint) of each evaluation still to make."""
    log: str
    """The file that the output of every ``tks`` command of the job is appended to."""
    threads: int
    """OMP_NUM_THREADS and MKL_NUM_THREADS of the job's processes (torch's intra-op threads)."""
    gpus: str | None = None
    """CUDA_VISIBLE_DEVICES of the job's processes; None: as inherited (Ray and SLURM set it themselves)."""
    procs: int = 1
    """Processes of its training: more than one trains with distributed data parallel, under ``torchrun`` or as the
    tasks of a SLURM job (``execute_task``)."""


@dataclass(frozen=True)
class JobResult:
    """How a job ended."""

    ok: bool
    folder: str | None
    """The run folder (None when training failed before it was known)."""
    message: str = ""
    """Why it failed, in one line; for a job that succeeded, what to know of it (empty: nothing)."""
    seconds: float = 0.0


def execute_job(
    job: Job,
    *,
    pass_fds: tuple[int, ...] = (),
    on_process: Callable[[subprocess.Popen], None] | None = None,
    ranks: Mapping[str, str] | None = None,
) -> JobResult:
    """Train and evaluate one run as ``job`` says; failures are returned, not raised.

    Args:
        job: the work.
        pass_fds: file descriptors the ``tks`` processes keep open (the local executor passes the run's claim, so
            that the claim lasts as long as the training even if the sweep itself is killed).
        on_process: called with every process started, so that the caller can stop it.
        ranks: the ``torch.distributed`` variables of one rank of the training, when the engine started the ranks
            itself (``rank_variables``): ``tks train`` runs as that rank instead of under ``torchrun``, and a rank
            other than 0 only trains (rank 0 finds the run folder and evaluates it).
    """
    started = time.monotonic()
    try:
        return _execute_job(job, started, pass_fds, on_process, ranks)
    except OSError as exc:  # the log or the run's config cannot be written (a full disk): this run fails, in a line
        where = exc.filename or job.log
        return JobResult(False, job.folder, f"cannot write {where}: {exc.strerror or exc}", time.monotonic() - started)


def execute_task(job: Job) -> JobResult:
    """One task of a SLURM job of ``job.procs`` tasks (submitit runs it in each): one rank of the run's training.

    The tasks join one process group through the variables that ``torchrun`` would set (``rank_variables``, from
    submitit's view of the job), so each trains as a ``torchrun`` worker does. Rank 0's result is the job's.
    """
    from submitit import JobEnvironment  # only SLURM jobs run this, where submitit is installed

    return execute_job(job, ranks=rank_variables(JobEnvironment()))


def rank_variables(environment: Any) -> dict[str, str]:
    """What ``torchrun`` would set for this task's process (``tks.distributed`` reads it), from a job's tasks.

    Args:
        environment: a ``submitit.JobEnvironment``: its ``global_rank``, ``local_rank``, ``num_tasks``,
            ``num_nodes``, ``hostnames`` (rank 0 listens on the first) and ``job_id`` (the port, ``master_port``).
    """
    # One node (the sweep's jobs): the loopback address, which needs no name lookup, as torchrun --standalone's
    one_node = environment.num_nodes == 1
    return {
        "RANK": str(environment.global_rank),
        "LOCAL_RANK": str(environment.local_rank),
        "WORLD_SIZE": str(environment.num_tasks),
        "LOCAL_WORLD_SIZE": str(environment.num_tasks // environment.num_nodes),
        "MASTER_ADDR": "127.0.0.1" if one_node else environment.hostnames[0],
        "MASTER_PORT": str(master_port(environment.job_id)),
    }


# Below Linux's range of ephemeral ports (32768-60999), which the kernel hands to outgoing connections.
FIRST_PORT, PORTS = 20000, 12768


def master_port(job_id: str) -> int:
    """The port of rank 0's store for job ``job_id``: jobs whose ids are less than ``PORTS`` apart get different ports.

    SLURM's job ids count up, and the local executor's are process ids, so jobs on one node at once do not collide
    (an inherited ``MASTER_PORT`` would give every job of a node the same port).
    """
    number = int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())
    return FIRST_PORT + number % PORTS


def _execute_job(
    job: Job,
    started: float,
    pass_fds: tuple[int, ...],
    on_process: Callable[[subprocess.Popen], None] | None,
    ranks: Mapping[str, str] | None,
) -> JobResult:
    log = Path(job.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(job.threads), "MKL_NUM_THREADS": str(job.threads)}
    if job.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = job.gpus
    env.setdefault("MLFLOW_EXPERIMENT_NAME", f"tks-sweep-{Path(job.out_dir).name}")  # one sweep, one experiment
    folder = Path(job.folder) if job.folder else None
    rank = "" if ranks is None else f"rank {ranks['RANK']} of {ranks['WORLD_SIZE']}, "
    note = ""

    with open(log, "a", encoding="utf-8") as out:
        out.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.action} {job.name} ({rank}pid {os.getpid()})\n")

        def tks(*argv: str) -> str | None:
            if argv[0] != "train":  # evaluation is one process
                return _run_tks(list(argv), out, log, env, pass_fds, on_process)
            if ranks is not None:
                return _run_tks(list(argv), out, log, {**env, **ranks}, pass_fds, on_process)
            return _run_tks(list(argv), out, log, env, pass_fds, on_process, job.procs)

        error = _train(job, folder, tks)
        if job.action == "start":  # run only while no folder of the run is finished: a finished one now is this job's
            folder = finished_folder(Path(job.out_dir), job.key)
        if error is not None and folder is not None and inspect(folder).finished:
            # whole results from a process that failed after writing them (seen once: a DDP rank aborting as it left
            # its gloo group): kept and said, rather than reported as lost
            how = error.split(": ", 1)[0]  # "tks train exited with status N" or "... was killed by SIG..."
            note = f"{how} after its run folder was finished: results kept (log: {log})"
            out.write(f"== {note}\n")
            error = None
        if ranks is not None and ranks["RANK"] != "0":
            return JobResult(error is None, job.folder, error or note, time.monotonic() - started)
        if error is None and folder is None:
            error = f"tks train ended but no finished run folder of this run is in {job.out_dir}"
        for args in job.evals:
            if error is not None:
                break
            error = tks("eval", str(folder / FINAL_CHECKPOINT), *args)
    if error is not None:
        error = f"{error} (log: {log})"
    return JobResult(error is None, str(folder) if folder else None, error or note, time.monotonic() - started)


def _train(job: Job, folder: Path | None, tks: Callable[..., str | None]) -> str | None:
    """Train the run as ``job.action`` says (an ``evaluate`` job has nothing to train); None, or why it failed."""
    if job.action == "start":
        with tempfile.TemporaryDirectory(prefix="tks-sweep-") as tmp:
            config = Path(tmp) / f"{job.name}.yaml"
            config.write_text(job.config, encoding="utf-8")
            return tks("train", str(config))
    if job.action == "resume":
        return tks("train", "--resume", str(folder))
    return None


def _run_tks(
    argv: list[str],
    out: IO[str],
    log: Path,
    env: dict[str, str],
    pass_fds: tuple[int, ...],
    on_process: Callable[[subprocess.Popen], None] | None,
    procs: int = 1,
) -> str | None:
    """Run ``python -m tks ARGV`` with its output appended to the log; None, or why it failed in one line."""
    command = tks_command(argv, procs)
    shown = f"tks {shlex.join(argv)}" if procs == 1 else shlex.join(["python", *command[1:]])
    out.write(f"$ {shown}\n")
    out.flush()
    offset = out.tell()
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        pass_fds=pass_fds,
    )
    if on_process is not None:
        on_process(process)
    code = process.wait()
    out.seek(0, os.SEEK_END)
    if code == 0:
        return None
    if code < 0:  # a signal: its last line is whatever it printed before, not a reason
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return f"tks {argv[0]} was killed by {name}"
    reason = _reason(log, offset)
    return f"tks {argv[0]} exited with status {code}" + (f": {reason}" if reason else "")


def tks_command(argv: Sequence[str], procs: int = 1) -> list[str]:
    """The command line of ``tks ARGV`` with this interpreter, as ``procs`` processes of one machine.

    With ``procs`` > 1 it is ``torchrun --standalone --nproc_per_node PROCS -m tks ARGV`` (``torch.distributed.run``,
    which sets each process's ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; ``tks.distributed.init_from_env`` joins
    them: NCCL on GPUs, one per process, gloo on CPUs). ``--standalone`` finds a free port, so that several runs can
    train side by side on one machine.
    """
    if procs <= 1:
        return [sys.executable, "-m", "tks", *argv]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    return [sys.executable, *launcher, "-m", "tks", *argv]


def _reason(log: Path, offset: int) -> str:
    """The line that says why a command failed: its ``tks: error:`` line, else its last line (an exception)."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            lines = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line.removeprefix("tks: error: ") for line in lines if line.startswith("tks: error: ")]
    reason = errors[-1] if errors else (lines[-1] if lines else "")
    return reason[:400]


def finished_folder(out_dir: Path, key: str) -> Path | None:
    """The finished run folder of experiment ``key`` in ``out_dir`` written last, or None."""
    finished = [f for f in map(inspect, RunFolders(out_dir).of(key)) if f.finished]
    if not finished:
        return None
    return max(finished, key=lambda f: (f.path / "metrics.json").stat().st_mtime).path
