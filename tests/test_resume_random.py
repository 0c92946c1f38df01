"""A run stopped at an epoch and resumed ends bit for bit as the uninterrupted run, with augmentation and shuffling on.

Plain digits has no augmentation (``official`` is ``none`` for it, and it takes no other preset), so the random
training inputs come from two other datasets:

- digits-dvs with ``crop_flip_rotate``, a built-in augmentation (torchvision: PyTorch's generator);
- a plugin's digits (``own-digits``) whose augmentation draws from Python's ``random``, NumPy's and PyTorch's
  global generators, one draw each per sample, so that a resume that forgot any one of them is seen.

Training batches are shuffled by ``DistributedSampler`` (seeded by ``(run.seed, epoch)``). Each run is stopped by
a real interruption that leaves its checkpoint behind: a Ctrl-C (``KeyboardInterrupt``) in the middle of the next
epoch on the CLI path, the caller's ``on_epoch_end`` raising at the end of the epoch on the Python path.
"""

import itertools
import json
import random
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import tks
from tks import plugins
from tks.checkpoint import load_checkpoint
from tks.cli import main
from tks.data import DATASETS
from tks.data.loading import load_training_data, make_loader
from tks.distributed import Dist

EPOCHS, STOP_AFTER = 3, 1
TRAIN, BATCH = 256, 64
STEPS_PER_EPOCH = TRAIN // BATCH  # incomplete batches are dropped
QUICK = [
    f"data.train_limit={TRAIN}",
    f"data.batch_size={BATCH}",
    "data.test_limit=64",
    "data.num_steps=2",
    f"optim.epochs={EPOCHS}",
    "run.deterministic=true",  # resume's documented bit-for-bit promise on the CPU
    "run.progress=false",
    "run.device=cpu",
]

# An augmentation of the user's own: each sample is shifted (random), noised (NumPy) and maybe flipped (PyTorch).
PLUGIN = '''
"""digits with a random augmentation that draws from Python's, NumPy's and PyTorch's global generators."""

import random

import numpy as np
import torch
from torch.utils.data import Dataset

import tks
from tks.data.digits import digits


class Jittered(Dataset):
    def __init__(self, base):
        self.base, self.targets = base, base.tensors[1]

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        x, y = self.base[index]
        x = torch.roll(x, random.randint(-1, 1), dims=-1)
        x = x + torch.from_numpy(np.random.normal(0.0, 0.1, tuple(x.shape)).astype(np.float32))
        return (x.flip(-1) if torch.rand(()) < 0.5 else x), y


@tks.register_dataset("own-digits", num_classes=10, in_channels=1, input_size=(8, 8))
def own_digits(split, root, *, options):
    base = digits(split)
    return Jittered(base) if split == "train" and not options.eval_transform else base
'''


@pytest.fixture(scope="module")
def frames_cache(tmp_path_factory):
    """One digits-dvs frame cache for the module's runs."""
    return tmp_path_factory.mktemp("frames")


# digits-dvs frames every recording into the cache on first use and trains a larger input: with the slow tests
# (own-digits, in the fast suite, draws from all three generators)
@pytest.fixture(params=[pytest.param("digits-dvs", marks=pytest.mark.slow), "own-digits"])
def augmented(request, tmp_path, monkeypatch):
    """The overrides of a dataset whose training augmentation draws random numbers, and the generators it uses."""
    if request.param == "digits-dvs":
        overrides = [
            "data.name=digits-dvs",
            f"data.root={request.getfixturevalue('digits_dvs_root')}",
            f"data.frames_cache={request.getfixturevalue('frames_cache')}",
            "data.frame_size=16",
            "data.augment=crop_flip_rotate",
        ]
        return overrides, ("torch",)
    # the plugin's registration and import are forgotten after the test (sys.modules is not swapped for a copy, as
    # in tests/test_plugins.py: torch's lazy imports during training break on a copy)
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    request.addfinalizer(lambda: sys.modules.pop("own_digits", None))
    plugin = tmp_path / "own_digits.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    return ["data.name=own-digits", f'run.plugins=["{plugin}"]'], ("python", "numpy", "torch")


def check_inputs_are_random(overrides: list[str], generators: tuple[str, ...]) -> None:
    """The training images are augmented by ``generators``, and the training loader shuffles them anew each epoch."""
    cfg = tks.load_config(None, [*QUICK, *overrides])
    plugins.load_plugins(cfg.run.plugins)
    train = load_training_data(cfg.data).train
    seeds = {"python": random.seed, "numpy": np.random.seed, "torch": torch.manual_seed}

    def first_image(reseeded: str | None = None) -> torch.Tensor:
        for name, seed in seeds.items():
            seed(1 if name == reseeded else 0)
        return train[0][0]

    assert torch.equal(first_image(), first_image())
    for name in generators:
        assert not torch.equal(first_image(name), first_image()), f"the augmentation draws nothing from {name}"
    sampler = make_loader(train, cfg.data, train=True, seed=0, device=torch.device("cpu"), dist=Dist()).sampler
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert orders[0] != sorted(orders[0]) and orders[0] != orders[1], "the training loader does not shuffle"


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def logged(run_dir: Path) -> list[dict]:
    """The run's ``log.jsonl`` records without their timings, which differ from one session to another."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    for record in records:
        del record["elapsed_s"], record["process_cpu_s"], record["train"]["samples_per_s"]
    return records


def final_metrics(run_dir: Path) -> dict:
    """``metrics.json`` without its timings and sessions."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    del metrics["train_seconds"], metrics["provenance"]
    return metrics


def assert_resumed_equals_straight(resumed: Path, straight: Path) -> None:
    sessions = json.loads((resumed / "metrics.json").read_text())["provenance"]["sessions"]
    assert [(s["first_epoch"], s["last_epoch"]) for s in sessions] == [(0, STOP_AFTER), (STOP_AFTER, EPOCHS)]
    ours, reference = (load_checkpoint(run / "checkpoint.pt").model for run in (resumed, straight))
    assert ours.keys() == reference.keys()
    differ = [k for k in ours if not torch.equal(ours[k], reference[k])]
    assert not differ, f"resumed weights differ from the uninterrupted run's: {differ}"
    assert logged(resumed) == logged(straight)
    assert final_metrics(resumed) == final_metrics(straight)


@contextmanager
def ctrl_c_after_optimizer_step(step: int) -> Iterator[None]:
    """A ``KeyboardInterrupt`` right after the process's ``step``-th optimizer step, as a Ctrl-C there would be.

    torch's global optimizer-step hook reaches the training loop's optimizer without any hook in tks itself.
    """
    steps = itertools.count(1)

    def interrupt(optimizer, args, kwargs):
        if next(steps) == step:
            raise KeyboardInterrupt

    handle = register_optimizer_step_post_hook(interrupt)
    try:
        yield
    finally:
        handle.remove()


def test_cli_run_interrupted_mid_epoch_and_resumed_equals_the_uninterrupted_run(augmented, tmp_path):
    augment, generators = augmented
    check_inputs_are_random(augment, generators)
    settings = [arg for value in [*QUICK, *augment] for arg in ("--set", value)]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["train", *settings, "--set", f"run.out_dir={straight}"]) == 0
    # Ctrl-C in the middle of epoch STOP_AFTER + 1: its batches have drawn augmentations, but only the checkpoint
    # of epoch STOP_AFTER is kept
    with ctrl_c_after_optimizer_step(STOP_AFTER * STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2):
        assert main(["train", *settings, "--set", f"run.out_dir={stopped}"]) == 130
    run_dir = only_run(stopped)
    assert load_checkpoint(run_dir / "checkpoint.pt").epoch == STOP_AFTER
    assert [r["epoch"] for r in logged(run_dir)] == list(range(1, STOP_AFTER + 1))
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert_resumed_equals_straight(run_dir, only_run(straight))


def test_python_run_stopped_at_an_epoch_end_and_resumed_equals_the_uninterrupted_run(augmented, tmp_path):
    augment, generators = augmented
    check_inputs_are_random(augment, generators)
    straight = tks.train(tks.load_config(None, [*QUICK, *augment, f"run.out_dir={tmp_path / 'straight'}"]))

    def stop(record: dict) -> None:
        if record["epoch"] == STOP_AFTER:  # after the epoch's checkpoint and log line: hooks run in that order
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tks.train(tks.load_config(None, [*QUICK, *augment, f"run.out_dir={tmp_path / 'stopped'}"]), on_epoch_end=stop)
    run_dir = only_run(tmp_path / "stopped")
    assert load_checkpoint(run_dir / "checkpoint.pt").epoch == STOP_AFTER
    assert [r["epoch"] for r in logged(run_dir)] == list(range(1, STOP_AFTER + 1))
    resumed = tks.experiment.resume(run_dir)
    assert resumed.run_dir == run_dir and not resumed.already_finished
    assert_resumed_equals_straight(run_dir, straight.run_dir)
    returned, reference = resumed.model.state_dict(), straight.model.state_dict()
    assert all(torch.equal(returned[k], reference[k]) for k in reference)  # the models train() hands back too
