"""Multi-process runs in a sweep: a run given N processes trains as N ranks of DDP, under ``torchrun`` (local, Ray)
or as the N tasks of a SLURM job.

The reference is ``torchrun`` run by hand on the same config: two gloo processes on CPU, one thread each, so the
sweep's run must end with exactly the same numbers (same seed, same shards, same all-reduce order).
"""

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tks.sweep import executors, jobs
from tks.sweep.executors import ExecutorOptions, SlurmExecutor
from tks.sweep.jobs import Job, tks_command

SETTINGS = {  # a tiny digits run: two steps, one epoch, on CPU
    "optim": {"epochs": 1, "warmup_epochs": 0},
    "data": {"num_steps": 2, "batch_size": 32},
    "run": {"progress": False, "device": "cpu", "seed": 3, "name": "ddp"},
}


def sweep_file(folder: Path) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": SETTINGS, "out_dir": "out"}, sort_keys=False))
    return path


def only_metrics(out: Path) -> dict:
    (folder,) = [p for p in out.iterdir() if (p / "metrics.json").is_file()]
    return json.loads((folder / "metrics.json").read_text())


def by_hand(tmp_path: Path) -> dict:
    """The same run with ``torchrun --standalone --nproc_per_node 2 -m tks train``, as a user types it."""
    sets = [f"{section}.{key}={value}" for section, keys in SETTINGS.items() for key, value in keys.items()]
    sets = [s.replace("=False", "=false") for s in sets] + [f"run.out_dir={tmp_path / 'hand'}"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*launcher, "-m", "tks", "train", *(arg for s in sets for arg in ("--set", s))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return only_metrics(tmp_path / "hand")


def swept(tmp_path: Path, *options: str) -> dict:
    sweep_file(tmp_path)
    command = [sys.executable, "-m", "tks", "sweep", "sweep.yaml", "--procs-per-run", "2", *options]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return only_metrics(tmp_path / "out")


def assert_same_run(ours: dict, reference: dict) -> None:
    assert ours["world_size"] == reference["world_size"] == 2
    for key in ("top1", "top5", "aurc", "per_step", "cumulative", "num_samples"):
        assert ours[key] == reference[key], key  # same ranks, seed and threads: bit-identical


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return by_hand(tmp_path_factory.mktemp("hand"))


@pytest.mark.slow
def test_two_process_run_of_a_local_sweep_matches_torchrun_by_hand(tmp_path, reference):
    ours = swept(tmp_path, "--threads-per-run", "1")
    assert_same_run(ours, reference)
    log = (tmp_path / "out" / ".sweep" / "logs" / "ddp.log").read_text()
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m tks train" in log


@pytest.mark.skipif(importlib.util.find_spec("submitit") is None, reason='pip install -e ".[slurm]"')
@pytest.mark.slow
def test_two_task_run_through_submitits_local_executor_matches_torchrun(tmp_path, reference):
    ours = swept(tmp_path, "--threads-per-run", "1", "--executor", "slurm", "--slurm-cluster", "local")
    assert_same_run(ours, reference)
    log = (tmp_path / "out" / ".sweep" / "logs" / "ddp.log").read_text()
    assert "torch.distributed.run" not in log  # each task is a rank: no torchrun
    assert "start ddp (rank 0 of 2, pid" in log and "start ddp (rank 1 of 2, pid" in log


def test_training_takes_torchrun_only_with_more_than_one_process():
    assert tks_command(["train", "a.yaml"]) == [sys.executable, "-m", "tks", "train", "a.yaml"]
    assert tks_command(["train", "a.yaml"], 4) == [
        sys.executable,
        *("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"),
        *("-m", "tks", "train", "a.yaml"),
    ]


@pytest.mark.parametrize(
    ("gpus", "procs", "expected"), [(0, None, 1), (0, 2, 2), (1, None, 1), (4, None, 4), (0.5, None, 1), (2, 2, 2)]
)
def test_a_run_gets_one_process_per_gpu_unless_told(gpus, procs, expected):
    assert ExecutorOptions(gpus=gpus, procs=procs).procs_per_run == expected


def a_job(tmp_path: Path) -> Job:
    return Job("r", "k", "start", str(tmp_path), "", None, (), str(tmp_path / "log"), threads=2)


def slurm_parameters(monkeypatch, tmp_path: Path, procs: int) -> tuple[dict, list]:
    """The sbatch parameters of a SLURM executor of ``procs`` processes per run, and what it submits.

    No SLURM here: a stand-in ``srun`` lets submitit build the parameters.
    """
    pytest.importorskip("submitit")
    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    executor = SlurmExecutor(tmp_path, threads=2, gpus=procs, partition=None, minutes=5, parameters={}, procs=procs)
    submitted = []
    monkeypatch.setattr(executor._executor, "submit", lambda *call: submitted.append(call) or object())
    executor.submit(0, a_job(tmp_path), claim=None)
    return executor._executor._executor.parameters, submitted


def test_a_slurm_job_has_a_task_per_process_each_a_rank(monkeypatch, tmp_path):
    params, [(function, job)] = slurm_parameters(monkeypatch, tmp_path, procs=4)
    assert params["ntasks_per_node"] == 4 and params["cpus_per_task"] == 2 and params["gpus_per_node"] == 4
    assert function is jobs.execute_task and job.procs == 4


def test_a_slurm_job_of_one_process_is_one_task(monkeypatch, tmp_path):
    params, [(function, job)] = slurm_parameters(monkeypatch, tmp_path, procs=1)
    assert params["ntasks_per_node"] == 1 and params["cpus_per_task"] == 2 and params["gpus_per_node"] == 1
    assert function is jobs.execute_job and job.procs == 1


def test_a_tasks_rank_comes_from_the_job_and_its_port_from_the_job_id():
    task = SimpleNamespace(
        global_rank=1, local_rank=1, num_tasks=2, num_nodes=1, hostnames=["n7", "n8"], job_id="123456"
    )
    assert jobs.rank_variables(task) == {
        "RANK": "1",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",  # one node
        "MASTER_PORT": str(20000 + 123456 % 12768),
    }
    task.num_nodes, task.num_tasks, task.global_rank = 2, 4, 3
    assert jobs.rank_variables(task) | {"MASTER_PORT": ""} == {
        **{"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"},
        **{"MASTER_ADDR": "n7", "MASTER_PORT": ""},  # rank 0 listens on the first node
    }
    ports = {jobs.master_port(str(job_id)) for job_id in range(5000, 5000 + 12768)}
    assert len(ports) == 12768 and min(ports) == 20000 and max(ports) == 32767  # below the ephemeral ports
    assert 20000 <= jobs.master_port("123_4") <= 32767  # an array job's id


@pytest.mark.parametrize("rank", ["0", "1"])
def test_every_rank_trains_and_rank_0_alone_evaluates(monkeypatch, tmp_path, rank):
    """Each task runs ``tks train`` as its rank (no torchrun); only rank 0 goes on to ``tks eval``."""
    ran = []
    monkeypatch.setattr(jobs, "_run_tks", lambda argv, out, log, env, *rest: ran.append((argv, env, rest)))
    ranks = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": "2", "MASTER_ADDR": "n7", "MASTER_PORT": "20001"}
    job = replace(a_job(tmp_path), action="resume", folder=str(tmp_path / "run"), evals=(("--steps", "2"),), procs=2)
    result = jobs.execute_job(job, ranks=ranks)
    assert result.ok and result.folder == str(tmp_path / "run")
    (train, env, rest), *evals = ran
    assert train == ["train", "--resume", str(tmp_path / "run")] and len(rest) == 2  # procs left at 1: no torchrun
    assert {key: env[key] for key in ranks} == ranks
    assert [argv for argv, _, _ in evals] == (
        [["eval", str(tmp_path / "run" / "checkpoint.pt"), "--steps", "2"]] if rank == "0" else []
    )
    assert all("RANK" not in env for _, env, _ in evals)  # evaluation is one process of its own
    assert f"resume r (rank {rank} of 2, pid" in (tmp_path / "log").read_text()


def test_a_ray_task_asks_for_the_gpus_and_the_cpus_of_every_process(monkeypatch, tmp_path):
    """No GPUs here: a stand-in for Ray records the resources asked for and the job handed over."""
    asked, submitted = {}, []

    def remote(**resources):
        asked.update(resources)
        return lambda fn: SimpleNamespace(remote=lambda job: submitted.append(job) or object())

    fake_ray = SimpleNamespace(init=lambda **kwargs: None, remote=remote)
    monkeypatch.setattr(executors, "require", lambda *args: fake_ray)
    executor = executors.RayExecutor(threads=2, gpus=4, address=None, procs=4)
    executor.submit(0, a_job(tmp_path), claim=None)
    assert asked == {"num_cpus": 8, "num_gpus": 4, "max_retries": 0}
    assert submitted[0].procs == 4
    assert tks_command(["train", "x.yaml"], submitted[0].procs)[1:6] == [
        *("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4")
    ]


def test_processes_and_gpus_must_agree(tmp_path, capsys):
    from tks.cli import main

    sweep_file(tmp_path)
    code = main(["sweep", str(tmp_path / "sweep.yaml"), "--gpus-per-run", "2", "--procs-per-run", "3", "--dry-run"])
    assert code == 2
    assert "--procs-per-run 3 with --gpus-per-run 2: each training process holds one GPU" in capsys.readouterr().err
