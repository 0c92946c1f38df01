"""What ``tks sweep --dry-run --measure`` prints: each run's compute from step times measured on this machine.

The count of ``tks.sweep.preflight`` turns FLOPs into hours at an assumed rate; this module times the steps
instead. For each distinct setup among the runs (model, dataset, T, batch sizes, loss, optimizer, precision,
layout, device) the run's training objects are built as training builds them (``tks.experiment.build_training``)
and, on random input of the dataset's shape, the training loop's own step (``tks.engine.train_one_epoch`` over one
batch: encoding, forward, loss, backward, optimizer step) and its test pass (``tks.inference.predict`` over one
batch of ``data.eval_batch_size``) are timed: one warm-up call each, not counted, then at most ``MAX_TIMED`` calls,
fewer once ``BUDGET_S`` seconds are spent. A run's hours are then (training step x steps + test batch x batches)
x epochs, without data loading. The time holds for this machine: another machine, or runs sharing this one, take
other times.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from tks.config import Config, DataConfig
from tks.sweep.preflight import epoch_samples
from tks.sweep.spec import Sweep

if TYPE_CHECKING:
    import torch

    from tks.data import DatasetInfo

MAX_TIMED = 3
"""Timed calls of each step at the most (after the warm-up)."""
BUDGET_S = 10.0
"""Once the timed calls of a step add up to this many seconds, no more are made (at least one is)."""


@dataclass(frozen=True)
class StepTimes:
    """The median seconds of one training step and of one test batch of a setup, measured here."""

    train_s: float
    test_s: float


def setup_of(cfg: Config) -> tuple:
    """What a step's time depends on: runs that agree on it (seeds, augmentation, schedules) are timed once."""
    data, run = cfg.data, cfg.run
    shape = (data.name, data.frame_size, data.num_steps, data.batch_size, data.eval_batch_size)
    return cfg.model, cfg.loss, cfg.optim.name, shape, (run.device, run.precision, run.channels_last, run.compile)


def random_batch(info: DatasetInfo, num_steps: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of a loader batch: images ``[B, C, H, W]``, or sparse binary events ``[B, T, C, H, W]``."""
    import torch

    shape = (info.in_channels, *info.input_size)
    if info.kind == "events":
        x = (torch.rand(batch, num_steps, *shape) < 0.1).float()
    else:
        x = torch.rand(batch, *shape)
    return x, torch.randint(0, info.num_classes, (batch,))


def step_times(cfg: Config) -> StepTimes:
    """Time a training step and a test batch of ``cfg`` on the device it would train on here.

    Raises:
        Exception: whatever stops the setup from being built or run here (too little memory: ``ConfigError``).
    """
    import torch

    from tks.data import check_options
    from tks.data.loading import data_options
    from tks.engine import train_one_epoch
    from tks.experiment import build_training, check_step_fits, training_device
    from tks.inference import predict

    cfg = replace(cfg, run=replace(cfg.run, progress=False))
    info = check_options(cfg.data.name, data_options(cfg.data))
    device = training_device(cfg)
    check_step_fits(cfg, info, device)  # an out-of-memory CPU process is killed, not told: refuse it first
    torch.manual_seed(cfg.run.seed)
    training, _ = build_training(cfg, info, device)
    train = [random_batch(info, cfg.data.num_steps, cfg.data.batch_size)]
    test = [random_batch(info, cfg.data.num_steps, cfg.data.eval_batch_size)]
    test_pass = partial(predict, training.model, test, encode=training.encode, device=device)
    train_s = _median_seconds(partial(train_one_epoch, training, train, 0), device)
    test_s = _median_seconds(partial(test_pass, precision=training.precision), device)
    return StepTimes(train_s, test_s)


def _median_seconds(step: Callable[[], object], device: torch.device) -> float:
    """Median wall time of ``step`` after a warm-up call (allocation, kernel choice, compilation)."""
    import torch

    def timed() -> float:
        start = time.perf_counter()
        step()
        if device.type == "cuda":  # kernels run asynchronously: wait for them
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    timed()
    times = [timed()]
    while len(times) < MAX_TIMED and sum(times) < BUDGET_S:
        times.append(timed())
    return statistics.median(times)


def eval_batches(data: DataConfig, test: int) -> int:
    """Batches evaluated after every epoch: the test set, and the validation and train-eval sets when set."""
    sets = (test, data.val_size or 0, data.train_eval_size or 0)
    return sum(math.ceil(n / data.eval_batch_size) for n in sets)


def format_measured(sweeps: Sequence[Sweep], threads: int) -> Iterator[str]:
    """The lines of ``--dry-run --measure``, each as soon as it is known: each run's steps and hours, the total.

    Args:
        sweeps: the sweeps whose runs are estimated.
        threads: torch's CPU threads while measuring: those a run gets (``--threads-per-run``; 1 on a CPU
            machine shared by one run a core), since more threads than free cores slow a step down many times.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield from _measured_lines(sweeps)
    finally:
        torch.set_num_threads(before)


def _measured_lines(sweeps: Sequence[Sweep]) -> Iterator[str]:
    yield (
        f"compute (measured here: a training step and a test batch of each model, T and batch size, timed on "
        f"{machine()}; another machine takes other times; data loading not included):"
    )
    start = time.perf_counter()
    measured: dict[tuple, StepTimes | str] = {}
    total, estimated, unknown = 0.0, 0, []
    for run in (run for one in sweeps for run in one.runs):
        samples, setup = epoch_samples(run.config.data), setup_of(run.config)
        if samples is None:  # no hours to estimate: not worth measuring
            unknown.append(run.name)
            continue
        if setup not in measured:
            measured[setup] = _measure_or_why(run.config)
        times = measured[setup]
        if isinstance(times, str):
            yield f"  {run.name}: not measured: {times}"
        else:
            line, hours = _run_line(run.config, times, samples)
            yield f"  {run.name}: {line}"
            total, estimated = total + hours, estimated + 1
    yield f"total: {_hours(total)} h for {estimated} run(s)"
    if unknown:
        yield f"  not estimated (a dataset of unknown size): {', '.join(unknown)}"
    yield f"measuring {len(measured)} setup(s) took {time.perf_counter() - start:.0f} s"


def _measure_or_why(cfg: Config) -> StepTimes | str:
    """The setup's step times, or why they could not be measured here, in one line."""
    import torch

    try:
        return step_times(cfg)
    except Exception as exc:  # noqa: BLE001 - any failure is this setup's line, and the others are still measured
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return reason[:300]
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the setup's model is gone: the next one gets its memory


def _run_line(cfg: Config, times: StepTimes, samples: tuple[int, int]) -> tuple[str, float]:
    """A run's estimate, with the numbers it is made of, and its hours."""
    train, test = samples
    steps = train // cfg.data.batch_size  # the training loader drops the last incomplete batch
    batches = eval_batches(cfg.data, test)
    epochs = cfg.optim.epochs
    hours = (times.train_s * steps + times.test_s * batches) * epochs / 3600
    return (
        f"training step {times.train_s:.4g} s x {steps} steps + test batch {times.test_s:.4g} s x {batches} "
        f"batches, x {epochs} epochs = {_hours(hours)} h"
    ), hours


def _hours(hours: float) -> str:
    return f"{hours:.0f}" if hours >= 100 else f"{hours:.3g}"  # three significant digits, without 1.2e+03


def machine() -> str:
    """The devices runs train on here, named: the GPU (``run.device`` auto or cuda) and the CPU with torch's threads."""
    import torch

    from tks.provenance import cpu_model

    threads = torch.get_num_threads()
    cpu = f"cpu ({cpu_model() or 'unknown model'}, {threads} thread{'s' if threads > 1 else ''})"
    gpu = f"cuda ({torch.cuda.get_device_name()}), else " if torch.cuda.is_available() else ""
    return f"{gpu}{cpu}, torch {torch.__version__}"
