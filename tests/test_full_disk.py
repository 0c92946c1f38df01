"""A full disk, simulated by a file-size limit (RLIMIT_FSIZE) on a real ``tks`` process: every file tks writes is
whole or absent, and the command says which file and why in one line (issue 27, points 4 and 5).

With SIGXFSZ ignored, a write past the limit fails with EFBIG ("File too large") where a full disk fails with
ENOSPC: the same code path, reached without filling a disk.
"""

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from run_folders import fake_run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
FAST = ["--set", "data.num_steps=2", "--set", "run.progress=false", "--set", "optim.warmup_epochs=0"]


def tks_limited(argv: list[str], limit: int, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``tks argv`` with every file it writes limited to ``limit`` bytes."""

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "TKS_CACHE": str(cwd / "cache")}
    command = [sys.executable, "-m", "tks", *argv]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, preexec_fn=limit_files, env=env)


def one_line_error(result: subprocess.CompletedProcess, path: Path) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tks: error:")]
    assert errors == [f"tks: error: cannot write {path}: File too large"], result.stderr
    assert "Traceback" not in result.stderr


def leftovers(folder: Path) -> list[str]:
    """Temporary or empty files left in ``folder`` (none may be)."""
    return sorted(
        p.name for p in folder.rglob("*") if p.is_file() and (p.name.endswith(".tmp") or not p.stat().st_size)
    )


@pytest.fixture
def runs(tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path / "runs", f"ce{seed}", seed=seed)
        fake_run(tmp_path / "runs", f"tks{seed}", seed=seed, loss="tks")
    return tmp_path / "runs"


def test_compare_writes_its_tables_whole_or_not_at_all(runs, tmp_path):
    out = tmp_path / "tables"
    one_line_error(tks_limited(["compare", str(runs), "--out", str(out)], 300, tmp_path), out / "compare.md")
    assert not (out / "compare.md").exists() and leftovers(out) == []


def test_report_is_whole_or_absent(runs, tmp_path):
    out = tmp_path / "report.html"
    one_line_error(tks_limited(["report", str(runs), "--out", str(out)], 4000, tmp_path), out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_figures_are_whole_or_absent(runs, tmp_path):
    out = tmp_path / "figures"
    result = tks_limited(["plot", str(runs), "--out", str(out)], 4000, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("tks: error:")]
    assert error.startswith(f"tks: error: cannot write {out}/") and error.endswith(": File too large")
    assert leftovers(out) == []


@pytest.mark.slow
def test_training_and_evaluation_on_a_full_disk(tmp_path):
    """A new run that cannot write its config leaves no folder; features.npz cut short is not left behind."""
    train = ["train", *FAST, "--set", "optim.epochs=1", "--set", f"run.out_dir={tmp_path / 'runs'}"]
    result = tks_limited(train, 100, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "config.yaml: File too large" in result.stderr
    assert not any((tmp_path / "runs").iterdir())  # no empty folder with a lone .lock

    assert subprocess.run([sys.executable, "-m", "tks", *train], capture_output=True, cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = (run_dir / "metrics.json").read_text()
    checkpoint = run_dir / "checkpoint.pt"
    result = tks_limited(["eval", str(checkpoint), "--features"], 2 * len(metrics) + 4000, tmp_path)
    one_line_error(result, run_dir / "features.npz")
    assert "top-1" in result.stdout  # the results were shown before the write failed
    assert not (run_dir / "features.npz").exists() and leftovers(run_dir) == []
    assert (run_dir / "metrics.json").read_text() == metrics


def test_generating_digits_dvs_on_a_full_disk_leaves_nothing_half_written(tmp_path):
    root = tmp_path / "dvs"
    result = tks_limited(["prepare", "digits-dvs", "--root", str(root), "--steps", "2"], 1000, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().endswith(f"tks: error: cannot write digits-dvs into {root}: File too large")
    assert not root.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith("dvs")] == []


@pytest.mark.slow
def test_the_frame_cache_on_a_full_disk_is_one_line_and_absent(tmp_path):
    root, cache = tmp_path / "dvs", tmp_path / "frames"
    prepare = ["prepare", "digits-dvs", "--root", str(root), "--steps", "2", "--cache", str(cache)]
    result = tks_limited(prepare, 200_000, tmp_path)  # the recordings fit, the frames do not
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("tks: error:")]
    assert error.startswith(f"tks: error: cannot write the frame cache {cache}/") and error.endswith("File too large")
    assert [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []


def test_a_lock_file_that_cannot_be_written_is_one_line(tmp_path):
    """The sweep's claims, the run folder's lock and the caches' build locks all take ``acquire``."""
    code = (
        "import resource, signal, sys\n"
        "from tks.locks import LockFileError, acquire, lock_run_dir\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))\n"  # not even the pid fits
        "try:\n"
        "    acquire(sys.argv[1] + '/claim.lock', wait=False)\n"
        "except LockFileError as exc:\n"
        "    print(exc)\n"
        "try:\n"
        "    lock_run_dir(sys.argv[1])\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.stdout.splitlines() == [
        f"cannot write the lock file {tmp_path / 'claim.lock'}: File too large",
        f"RunFolderLockError run folder {tmp_path} cannot be locked: File too large (.lock)",
    ], result.stderr


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_is_one_line(tmp_path):
    out = tmp_path / "runs"
    train = ["train", *FAST, "--set", "optim.epochs=1", "--set", f"run.out_dir={out}"]
    result = tks_limited(train, 4000, tmp_path)  # the config fits, the checkpoint does not
    (run_dir,) = out.iterdir()
    one_line_error(result, run_dir / "checkpoint.pt")
    assert not (run_dir / "checkpoint.pt").exists() and leftovers(run_dir) == []


def test_a_sweep_job_that_cannot_write_its_log_fails_in_one_line(tmp_path):
    from tks.sweep.jobs import Job, execute_job

    (tmp_path / "logs").write_text("a file where the log folder should be")
    log = tmp_path / "logs" / "run.log"
    job = Job("run", "0123", "start", str(tmp_path), "data: {}\n", None, (), str(log), 1)
    result = execute_job(job)
    assert not result.ok and result.folder is None
    assert result.message.startswith(f"cannot write {tmp_path / 'logs'}: ") and "\n" not in result.message


@pytest.mark.slow
def test_export_on_a_full_disk_and_with_an_overflowing_dt(tmp_path):
    pytest.importorskip("nir")
    train = ["train", *FAST, "--set", "optim.epochs=1", "--set", f"run.out_dir={tmp_path / 'runs'}"]
    assert subprocess.run([sys.executable, "-m", "tks", *train], capture_output=True, cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    out = tmp_path / "model.nir"
    export = ["export", str(run_dir / "checkpoint.pt"), "--out", str(out)]
    result = tks_limited(export, 3000, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("tks: error:")]
    assert error.startswith(f"tks: error: cannot write {out}: "), error
    assert not out.exists() and leftovers(tmp_path) == []
    overflow = subprocess.run([sys.executable, "-m", "tks", *export, "--dt", "1e308"], capture_output=True, text=True)
    assert overflow.returncode == 2 and not out.exists()
    assert overflow.stderr.strip().startswith("tks: error: dt=1e+308 makes tau of node "), overflow.stderr
    assert "non-finite (tau x dt overflows)" in overflow.stderr
