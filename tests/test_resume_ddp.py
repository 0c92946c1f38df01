"""A two-process DDP run of a sweep, stopped in its second epoch and resumed by rerunning the sweep, ends bit for bit
as the same sweep's uninterrupted run: under ``torchrun`` (the local executor) and as the tasks of a SLURM job
(submitit's local executor).

The training inputs are random: the plugin digits of ``tests/test_resume_random.py``, augmented from Python's,
NumPy's and PyTorch's global generators and shuffled by ``DistributedSampler``, here drawing as many more numbers as
the label modulo 3. The two ranks see different images, so they end each epoch with different generator states: a
resume that gave both rank 0's would differ. The stop is a real interruption on every rank: the plugin raises
``KeyboardInterrupt`` after an optimizer step when ``STOP_AFTER_STEP`` is set, as a Ctrl-C there would; the rerun,
without it, resumes from epoch 1.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from test_resume_random import PLUGIN, final_metrics, logged

from tks.checkpoint import load_checkpoint

EPOCHS, STOP_AFTER = 3, 1
TRAIN, BATCH, PROCS = 256, 64, 2
STEPS_PER_EPOCH = TRAIN // (BATCH * PROCS)  # each rank's share of the training set

# Appended to tests/test_resume_random.py's plugin: Python's generator drawn from as many more times as the label
# modulo 3, after each augmentation; and the stop, when asked for.
MORE = """
import itertools
import os

from torch.optim.optimizer import register_optimizer_step_post_hook

_augment = Jittered.__getitem__


def _label_draws(self, index):
    x, y = _augment(self, index)
    for _ in range(int(y) % 3):
        random.random()
    return x, y


Jittered.__getitem__ = _label_draws

if "STOP_AFTER_STEP" in os.environ:  # a Ctrl-C after that optimizer step, in every process that trains
    _steps = itertools.count(1)

    def _interrupt(optimizer, args, kwargs):
        if next(_steps) == int(os.environ["STOP_AFTER_STEP"]):
            raise KeyboardInterrupt

    register_optimizer_step_post_hook(_interrupt)
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """The plugin file that every run of the module names."""
    path = tmp_path_factory.mktemp("plugin") / "ddp_digits.py"
    path.write_text(textwrap.dedent(PLUGIN) + MORE)
    return path


def sweep(folder: Path, plugin: Path, *options: str, stop_after_step: int | None = None) -> str:
    """``tks sweep`` of the one run in ``folder`` (its ``out``) with two processes; its output."""
    base = {
        "data": {"name": "own-digits", "train_limit": TRAIN, "batch_size": BATCH, "test_limit": 64, "num_steps": 2},
        "optim": {"epochs": EPOCHS, "warmup_epochs": 0},
        "run": {"deterministic": True, "progress": False, "device": "cpu", "seed": 3, "name": "ddp"},
    }
    base["run"] |= {"plugins": [str(plugin)]}
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"base": base, "out_dir": "out"}, sort_keys=False))
    env = {key: value for key, value in os.environ.items() if key != "STOP_AFTER_STEP"}
    if stop_after_step is not None:
        env["STOP_AFTER_STEP"] = str(stop_after_step)
    command = [sys.executable, "-m", "tks", "sweep", "sweep.yaml", "--procs-per-run", str(PROCS)]
    command += ["--threads-per-run", "1", *options]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600, env=env)
    code = 1 if stop_after_step is not None else 0
    assert result.returncode == code, result.stdout[-3000:] + result.stderr[-2000:]
    return result.stdout


def only_run(folder: Path) -> Path:
    (run_dir,) = [p for p in (folder / "out").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


@pytest.fixture(scope="module")
def straight(tmp_path_factory, plugin) -> Path:
    """The uninterrupted run's folder."""
    folder = tmp_path_factory.mktemp("straight")
    sweep(folder, plugin)
    return only_run(folder)


EXECUTORS = {
    "torchrun": (),
    "slurm-tasks": ("--executor", "slurm", "--slurm-cluster", "local"),
}


@pytest.mark.slow
@pytest.mark.parametrize("executor", EXECUTORS)
def test_ddp_run_stopped_and_resumed_by_the_sweep_equals_the_uninterrupted_run(executor, tmp_path, plugin, straight):
    if executor == "slurm-tasks" and importlib.util.find_spec("submitit") is None:
        pytest.skip('pip install -e ".[slurm]"')
    # in the middle of epoch STOP_AFTER + 1: its batches have drawn augmentations, but only epoch 1 is kept
    stop_at = STOP_AFTER * STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2
    sweep(tmp_path, plugin, *EXECUTORS[executor], stop_after_step=stop_at)
    run_dir = only_run(tmp_path)
    stopped = load_checkpoint(run_dir / "checkpoint.pt")
    assert stopped.epoch == STOP_AFTER
    assert len(stopped.rng_ranks) == PROCS and stopped.rng_ranks[0]["python"] != stopped.rng_ranks[1]["python"]
    assert [r["epoch"] for r in logged(run_dir)] == list(range(1, STOP_AFTER + 1))

    assert f"resuming {run_dir.name}" in sweep(tmp_path, plugin, *EXECUTORS[executor])
    assert only_run(tmp_path) == run_dir
    resumed = final_metrics(run_dir)
    assert resumed["world_size"] == PROCS and resumed["epoch"] == EPOCHS
    assert resumed == final_metrics(straight)
    assert logged(run_dir) == logged(straight)
    ours, reference = (load_checkpoint(run / "checkpoint.pt").model for run in (run_dir, straight))
    differ = [k for k in reference if not torch.equal(ours[k], reference[k])]
    assert not differ, f"resumed weights differ from the uninterrupted run's: {differ}"
