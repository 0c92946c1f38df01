"""``tks sweep``: a grid of tiny digits runs on each executor; skip, resume, failures, validation, listings."""

import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tks.checkpoint import load_checkpoint
from tks.cli import main
from tks.config import dump_config, load_config
from tks.locks import acquire
from tks.sweep import experiment_key, load_sweep
from tks.sweep.command import local_capacity
from tks.sweep.folders import RunFolders, claim_path

ROOT = Path(__file__).parents[1]
BASE = {
    "optim": {"epochs": 1, "warmup_epochs": 0},
    "data": {"num_steps": 1},
    "run": {"progress": False, "name": "tiny"},
}
GRID = {  # 2 losses x 2 seeds; seed 0 is also evaluated at T = 1, 2
    "base": BASE,
    "out_dir": "out",
    "name": "tiny-{loss.name}-s{run.seed}",
    "grid": {"loss.name": ["ce", "tks"], "run.seed": [0, 1]},
    "eval": [{"args": "--steps 1 2", "when": {"run.seed": 0}}],
}
NAMES = ["tiny-ce-s0", "tiny-ce-s1", "tiny-tks-s0", "tiny-tks-s1"]


def write(folder: Path, sweep: dict, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def tks_sweep(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``tks sweep`` as a user runs it, with this interpreter (and so this tks)."""
    command = [sys.executable, "-m", "tks", "sweep", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def run_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if (p / "config.yaml").is_file())


def prefix(folder: Path) -> str:
    return folder.name.rsplit("-", 2)[0]  # <name>-YYYYmmdd-HHMMSS


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory):
    """The grid swept once on the local executor: two runs at a time, one thread each."""
    work = tmp_path_factory.mktemp("grid")
    write(work, GRID)
    first = tks_sweep("sweep.yaml", "--parallel", "2", "--threads-per-run", "1", cwd=work)
    return work, first


@pytest.mark.slow
def test_local_sweep_trains_evaluates_and_compares_every_run(finished_grid):
    work, first = finished_grid
    assert first.returncode == 0, first.stdout + first.stderr
    runs = run_folders(work / "out")
    assert [prefix(r) for r in runs] == NAMES
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["epoch"] == 1 and "top1" in metrics
        evaluated = set(metrics.get("eval", {}).get("checkpoint.pt", {}).get("steps", {}))
        assert evaluated == ({"1", "2"} if run.name.split("-")[2] == "s0" else set()), run.name
        sessions = json.loads((run / "provenance.json").read_text())["sessions"]
        assert sessions[0]["torch_threads"] == 1  # OMP_NUM_THREADS of the run's process
        assert load_config(run / "config.yaml").run.out_dir == "out"  # as the user named it, relative
    assert (
        "tks sweep: 4 runs, 0 finished already, 4 to do; executor local, 2 at a time, 1 thread(s) each" in first.stdout
    )
    assert "[4 done, 0 running, 0 failed, 0 left] " in first.stdout
    assert "| Baseline |" in first.stdout and "| TKS |" in first.stdout  # the tks compare table of the folder
    assert (work / "out" / ".sweep" / "logs" / "tiny-ce-s0.log").is_file()


@pytest.mark.slow
def test_second_sweep_skips_the_finished_runs(finished_grid):
    work, _ = finished_grid
    before = run_folders(work / "out")
    again = tks_sweep("sweep.yaml", cwd=work)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 runs, 4 finished already, 0 to do" in again.stdout and "started" not in again.stdout
    assert run_folders(work / "out") == before


def test_dry_run_lists_states_folders_and_differences(finished_grid):
    work, _ = finished_grid
    sweep = dict(GRID, grid={"loss.name": ["ce", "tks", "tet"], "run.seed": [0, 1]})  # two new runs
    sweep["eval"] = [*GRID["eval"], "--steps 1 3"]  # every finished run lacks T=3
    write(work, sweep, "more.yaml")
    listing = tks_sweep("more.yaml", "--dry-run", cwd=work)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    row = next(line for line in lines if " tiny-ce-s0 " in line).split()
    assert row[0] == "evaluate" and row[2].startswith("tiny-ce-s0-") and row[3:] == ["loss.name=ce"]
    assert next(line for line in lines if " tiny-tet-s1 " in line).split() == [
        "start", "tiny-tet-s1", "-", "loss.name=tet", "run.seed=1"
    ]  # fmt: skip
    assert "then tks eval --steps 1 2; --steps 1 3" in listing.stdout  # seed 0: both calls
    assert lines[-1] == "0 finished, 4 to evaluate, 0 to resume, 2 to start, 0 in use by another process"
    assert list((work / "out" / ".sweep" / "claims").iterdir()) == [] and len(run_folders(work / "out")) == 4


@pytest.mark.slow
def test_killed_run_is_resumed_by_the_next_sweep(tmp_path):
    sweep = {"base": dict(BASE, optim={"epochs": 3, "warmup_epochs": 0}, data={"num_steps": 4}), "out_dir": "out"}
    write(tmp_path, sweep)
    driver = subprocess.Popen(
        [sys.executable, "-m", "tks", "sweep", "sweep.yaml"], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not glob.glob(str(tmp_path / "out" / "*" / "checkpoint.pt")) and time.monotonic() < deadline:
        time.sleep(0.02)
    (run,) = run_folders(tmp_path / "out")
    os.kill(int((run / ".lock").read_text()), signal.SIGKILL)  # the training process, after its first epoch
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 1, output
    assert "tiny: FAILED: tks train was killed by SIGKILL" in output
    # The checkpoint is written before its log line, so the kill may come between them: count its epochs
    epochs = load_checkpoint(run / "checkpoint.pt").epoch
    assert 1 <= epochs < 3, "the run ended before it could be killed; make its epochs longer"

    listing = tks_sweep("sweep.yaml", "--dry-run", cwd=tmp_path)
    rows = [line.split() for line in listing.stdout.splitlines()]  # (the checks and the compute come first)
    assert ["resume", "tiny", run.name] in [row[:3] for row in rows], listing.stdout
    again = tks_sweep("sweep.yaml", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"tiny: resuming {run.name}" in again.stdout
    assert run_folders(tmp_path / "out") == [run]
    assert json.loads((run / "metrics.json").read_text())["epoch"] == 3
    assert len((run / "log.jsonl").read_text().splitlines()) == 3
    sessions = json.loads((run / "provenance.json").read_text())["sessions"]
    assert [s["first_epoch"] for s in sessions] == [0, epochs]


@pytest.mark.slow
def test_failing_run_is_reported_while_the_others_finish(tmp_path):
    # Valid in the config, fails at run time: digits has 1,437 training images, fewer than one batch of 4,096.
    write(tmp_path, {"base": BASE, "out_dir": "out", "grid": {"data.batch_size": [64, 4096]}})
    result = tks_sweep("sweep.yaml", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "tiny-batch_size=4096: FAILED: tks train exited with status 2: data.batch_size 4096 is larger" in result.stdout
    )
    assert "1 finished, 1 failed" in result.stdout and "| TKS |" in result.stdout
    assert [prefix(r) for r in run_folders(tmp_path / "out")] == ["tiny-batch_size=64"]


@pytest.mark.slow
def test_a_run_that_crashes_after_finishing_its_folder_is_kept(tmp_path):
    """A training process that exits non-zero once its run folder is whole (a DDP rank crashing at teardown): the sweep
    keeps the results, says so, and a rerun does not train it again."""
    plugin = tmp_path / "exit_late.py"
    plugin.write_text("import atexit, os, sys\n\nif 'train' in sys.argv:\n    atexit.register(os._exit, 3)\n")
    write(tmp_path, {"base": BASE | {"run": BASE["run"] | {"plugins": [str(plugin)]}}, "out_dir": "out"})
    result = tks_sweep("sweep.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tiny: finished in" in result.stdout, result.stdout
    assert "; tks train exited with status 3 after its run folder was finished: results kept (log: " in result.stdout
    assert "1 finished, 0 failed" in result.stdout
    again = tks_sweep("sweep.yaml", cwd=tmp_path)
    assert "1 finished already, 0 to do" in again.stdout, again.stdout


@pytest.mark.slow
def test_claimed_run_is_left_to_the_sweep_that_holds_it(tmp_path):
    """A second sweep of the same file skips what the first is working on (here the test holds one claim)."""
    path = write(tmp_path, dict(GRID, grid={"run.seed": [0, 1]}, name="tiny-s{run.seed}", eval=[]))
    taken = load_sweep(path).runs[0]
    claim = claim_path(taken)
    claim.parent.mkdir(parents=True)
    with acquire(claim, wait=False):
        result = tks_sweep("sweep.yaml", cwd=tmp_path)
        listing = tks_sweep("sweep.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"tiny-s0: in use: claimed by another sweep (process {os.getpid()})" in result.stdout
    assert "1 finished, 0 failed, 1 left to other processes" in result.stdout
    assert [prefix(r) for r in run_folders(tmp_path / "out")] == ["tiny-s1"]
    assert ["in", "use"] in [line.split()[:2] for line in listing.stdout.splitlines()], listing.stdout


@pytest.mark.slow
def test_two_sweeps_of_one_file_at_once_train_each_run_once(tmp_path):
    write(tmp_path, dict(GRID, grid={"run.seed": [0, 1]}, name="tiny-s{run.seed}", eval=[]))
    command = [sys.executable, "-m", "tks", "sweep", "sweep.yaml", "--parallel", "1"]
    first, second = (subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True) for _ in range(2))
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert first.returncode == second.returncode == 0, outputs
    assert sum(o.count(": started") for o in outputs) == 2, outputs  # each run by one of them
    assert [prefix(r) for r in run_folders(tmp_path / "out")] == ["tiny-s0", "tiny-s1"]
    assert all("top1" in json.loads((r / "metrics.json").read_text()) for r in run_folders(tmp_path / "out"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gird": {}}, "unknown sweep key 'gird' (did you mean 'grid'?)"),
        ({"grid": {"loss.nmae": ["ce", "tks"]}}, "unknown config key 'loss.nmae' (did you mean 'loss.name'?)"),
        ({"grid": {"seed": [0, 1]}}, "grid key 'seed' is not a config key (section.key) (did you mean 'run.seed'?)"),
        ({"grid": {"loss.tks.alpha": [0.5, 2.0]}}, "loss.tks.alpha must be in [0, 1], got 2.0"),  # only the second cell
        ({"eval": ["--stepz 1"]}, "eval, entry 1: tks eval --stepz 1: unrecognized arguments: --stepz 1"),
        ({"eval": ["--steps 0 2"]}, "tks eval --steps 0 2: steps must all be >= 1 (tks eval --steps), got [0, 2]"),
        ({"eval": [{"args": "--steps 1", "when": {"run.sed": 0}}]}, "(did you mean 'run.seed'?)"),
        ({"name": "tiny-{loss.nam}"}, "{loss.nam} is not a config key (did you mean '{loss.name}'?)"),
        ({"name": "tiny"}, "two runs are named tiny"),
        ({"grid": {"run.device": ["auto", "cpu"]}, "name": "{run.device}"}, "are the same experiment"),
        ({"runs": [{"name": "x", "sett": {}}]}, "runs, entry 1: unknown key 'sett' (did you mean 'set'?)"),
    ],
)
def test_invalid_sweep_is_refused_before_anything_starts(tmp_path, capsys, change, message):
    path = write(tmp_path, {**GRID, "out_dir": str(tmp_path / "out"), **change})
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tks: error: {path}: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_options_of_another_executor_are_refused(tmp_path, capsys):
    path = write(tmp_path, GRID)
    assert main(["sweep", str(path), "--address", "auto"]) == 2
    assert "--address is an option of --executor ray, not of local" in capsys.readouterr().err


def test_identity_is_the_experiment_not_where_or_how_it_runs():
    base = load_config(None)
    same = load_config(None, ["run.name=other", "run.out_dir=elsewhere", "run.progress=false", "run.device=cpu"])
    assert experiment_key(same) == experiment_key(base)
    assert experiment_key(load_config(None, ["data.num_workers=2", "data.root=/data"])) == experiment_key(base)
    for change in ("run.seed=1", "loss.name=ce", "optim.epochs=3", "run.precision=bf16"):
        assert experiment_key(load_config(None, [change])) != experiment_key(base), change


def test_identity_of_a_config_written_before_newer_keys_existed(tmp_path):
    """Keys added later take their defaults, as in a new run: an old run folder is still recognised."""
    text = dump_config(load_config(None))
    old = "\n".join(line for line in text.splitlines() if "val_size" not in line and "select_on" not in line)
    (tmp_path / "config.yaml").write_text(old)
    assert experiment_key(load_config(tmp_path / "config.yaml")) == experiment_key(load_config(None))


def test_run_folders_read_a_config_again_once_it_is_written(tmp_path):
    """A folder whose config another process has not written yet is recognised once it is there."""
    config = load_config(None, ["run.seed=3"])
    folder = tmp_path / "started-20260101-000000"
    folder.mkdir()
    folders = RunFolders(tmp_path)
    assert folders.of(experiment_key(config)) == []
    (folder / "config.yaml").write_text("data:\n  name: digits\n")  # half written: another experiment so far
    assert folders.of(experiment_key(config)) == []
    (folder / "config.yaml").write_text(dump_config(config))
    assert folders.of(experiment_key(config)) == [folder]


@pytest.mark.parametrize(
    ("cores", "parallel", "threads", "expected"),
    [(2, None, None, (2, 1)), (2, 1, None, (1, 2)), (16, 4, None, (4, 4)), (16, None, 2, (8, 2)), (2, 3, 2, (3, 2))],
)
def test_local_capacity_fills_the_cores_with_one_thread_runs(cores, parallel, threads, expected):
    assert local_capacity(cores, parallel, threads) == expected


def test_committed_study_results_are_recognised_as_finished():
    studies = ["fashion_mnist", "digits_dvs", "ablations", "successors_digits"]
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "results").rglob("*")}
    result = tks_sweep(*(f"studies/{s}.yaml" for s in studies), "--dry-run", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    summaries = [line for line in result.stdout.splitlines() if "in use by another process" in line]
    assert summaries == [
        f"{n} finished, 0 to evaluate, 0 to resume, 0 to start, 0 in use by another process" for n in (15, 6, 7, 21)
    ], result.stdout
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "results").rglob("*")} == before  # a listing writes nothing


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='pip install -e ".[ray]"')
@pytest.mark.slow
def test_ray_executor_runs_the_grid_on_a_local_ray(tmp_path):
    write(tmp_path, dict(GRID, eval=[]))
    # Four Ray workers on two cores: minutes when the machine is busy (300 s timed out under a load of 4)
    result = tks_sweep("sweep.yaml", "--executor", "ray", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "executor ray, 4 at a time, 1 thread(s) each" in result.stdout
    assert [prefix(r) for r in run_folders(tmp_path / "out")] == NAMES
    assert Path(load_config(run_folders(tmp_path / "out")[0] / "config.yaml").run.out_dir).is_absolute()


@pytest.mark.skipif(importlib.util.find_spec("submitit") is None, reason='pip install -e ".[slurm]"')
@pytest.mark.slow
def test_slurm_executor_runs_the_grid_through_submitits_local_executor(tmp_path):
    write(tmp_path, dict(GRID, grid={"loss.name": ["ce", "tks"]}, name="tiny-{loss.name}", eval=[]))
    result = tks_sweep("sweep.yaml", "--executor", "slurm", "--slurm-cluster", "local", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [prefix(r) for r in run_folders(tmp_path / "out")] == ["tiny-ce", "tiny-tks"]
    assert list((tmp_path / "out" / ".sweep" / "submitit").glob("*_result.pkl"))
