"""Study 1 of docs/results.md, shortened (a Fashion-MNIST subset, one epoch), swept end to end as a user reruns it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tks.data.static import FASHION_MNIST_DEBIAN

ROOT = Path(__file__).parents[1]
TKS = [sys.executable, "-m", "tks"]  # this interpreter, so this tks
METHODS = ("ce", "ls", "tet", "tks", "tks-paper")
SHORT = ["--set", "data.train_limit=2048", "--set", "data.test_limit=256", "--set", "optim.epochs=1"]


@pytest.mark.skipif(not FASHION_MNIST_DEBIAN.is_dir(), reason="apt-get install dataset-fashion-mnist")
@pytest.mark.slow
def test_study_1_reruns_end_to_end_and_compares(tmp_path):
    env = {**os.environ, "TKS_CACHE": str(tmp_path / "cache")}
    folder = tmp_path / "fashion-mnist"
    study = str(ROOT / "studies" / "fashion_mnist.yaml")
    sweep = [*TKS, "sweep", study, "--out", str(folder), "--only", "*-s0", *SHORT]  # seed 0 of every method
    result = subprocess.run(sweep, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    runs = sorted(p for p in folder.iterdir() if (p / "config.yaml").is_file())
    assert [r.name.rsplit("-", 2)[0] for r in runs] == sorted(f"fmnist-{m}-s0" for m in METHODS)
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        evaluated = metrics["eval"]["checkpoint.pt"]
        assert sorted(int(t) for t in evaluated["steps"]) == [1, 2, 3, 4], run.name
        assert {"early_exit", "activity"} <= set(evaluated) and (run / "features.npz").is_file()  # seed 0 only
        assert len(metrics["per_step"]) == 4
        assert 0.4 < metrics["top1"] <= 1.0, (run.name, metrics["top1"])  # far above chance (0.1) after 2,048 images

    # A run stopped after its last checkpoint but before its final metrics (and evaluations) were written: the
    # next sweep resumes that one, evaluates it again and trains nothing else.
    stopped = next(r for r in runs if r.name.startswith("fmnist-ce-s0-"))
    (stopped / "metrics.json").unlink()
    again = subprocess.run(sweep, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "5 runs, 4 finished already, 1 to do" in again.stdout, again.stdout
    assert f"fmnist-ce-s0: resuming {stopped.name}" in again.stdout and "started" not in again.stdout
    assert "steps" in json.loads((stopped / "metrics.json").read_text())["eval"]["checkpoint.pt"]
    assert sorted(p for p in folder.iterdir() if (p / "config.yaml").is_file()) == runs

    def tks(verb: str, out: str) -> subprocess.CompletedProcess:
        command = [*TKS, verb, str(folder), "--out", str(tmp_path / out)]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)

    compare = tks("compare", "tables")
    assert compare.returncode == 0, compare.stderr
    table = (tmp_path / "tables" / "compare.md").read_text()
    main_table = table.split("\n\n")[0]  # the step tables follow after a blank line
    rows = [line for line in main_table.splitlines() if line.startswith("| ")][1:]  # one row per method
    assert len(rows) == len(METHODS), table
    for label in ("Baseline", "LS", "TET", "TKS", "TKS (paper Eq. 5-7)"):
        assert any(f"| {label} |" in row for row in rows), (label, table)
    plot = tks("plot", "figures")
    assert plot.returncode == 0, plot.stderr
    assert len(list((tmp_path / "figures").glob("*.png"))) >= 3
    assert "top-1 (%) at each test T:" in table and "| TKS (paper Eq. 5-7) | " in table.split("each single step")[1]
    # With one epoch TKS's weight ramps from 0 and stays 0 (official schedule): TKS trains exactly as mean CE.
    assert rows[0].split("|")[5:] == rows[3].split("|")[5:], table
