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
