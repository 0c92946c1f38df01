"""What ``tks sweep --dry-run`` checks before a queue would: every data root and its layout, and each run's compute.

A run whose dataset is read from a folder needs that folder, laid out as its loader expects; the check lists the
folder (event datasets: the class folders their loader looks for) without reading the data, and names the expected
layout in the loader's own words (``tks.data.errors.missing``). The compute of a run is counted, not timed:
``FlopCounterMode`` counts the FLOPs of one training sample (forward and backward) and one test sample (forward) of
the run's model at its T, on the meta device (no memory, no arithmetic); times the dataset's published split
sizes (``SPLIT_SIZES``, or ``data.train_limit`` / ``test_limit``) and the epochs. The time is that count at an
assumed rate (``ASSUMED_FLOPS``), which is an assumption and not a measurement, as in docs/reproduce.md;
``--measure`` times steps on this machine instead (``tks.sweep.measure``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tks.config import DataConfig, ModelConfig
from tks.sweep.spec import Sweep, SweepRun

ASSUMED_FLOPS = 50e12
"""FLOP/s a GPU is assumed to sustain on these convolutions (docs/reproduce.md): an assumption, not a measurement."""

SPLIT_SIZES = {
    "digits": (1437, 360),
    "fashion-mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "cifar10-dvs": (9000, 1000),  # 10,000 recordings, 9:1 per class
    "ncaltech101": (7838, 871),  # 8,709 recordings, 9:1 per class (rounded per class: about)
    "imagenet": (1281167, 50000),
    "cub200": (5994, 5794),
    "stanford-dogs": (12000, 8580),
    "stanford-cars": (8144, 8041),
}
"""Training and test samples of each built-in dataset's official split (the published sizes)."""


def layout_of(name: str) -> str:
    """The layout a built-in dataset's loader expects under ``data.root``, in its own error's words."""
    from tks.data import events, static

    layouts = {
        **static.CIFAR_LAYOUT,
        "fashion-mnist": static.FASHION_MNIST_LAYOUT,
        "imagenet": static.IMAGENET_LAYOUT,
        "cub200": static.CUB_LAYOUT,
        "stanford-dogs": static.DOGS_LAYOUT,
        "stanford-cars": static.CARS_LAYOUT,
        **{spec.name: spec.layout for spec in (events.CIFAR10_DVS, events.NCALTECH101)},
    }
    return layouts.get(name, "the layout its loader names")


def root_problem(data: DataConfig) -> str | None:
    """Why a run's dataset cannot be read from its ``data.root``, in one line; None when it can (or needs none).

    Event datasets are looked for as their loader does (``find_recordings``: the class folders, listed but not
    read); image datasets need their root to be a folder (the files in it are checked when the run loads them).
    """
    from tks.data import dataset_info, events
    from tks.data.errors import DatasetError, missing

    try:
        needs_root = dataset_info(data.name).needs_root
    except (KeyError, ValueError):  # an unknown dataset: resolving the run's config already said so
        return None
    if not needs_root:
        return None
    if data.root is None or not Path(data.root).expanduser().is_dir():
        return str(missing(data.name, data.root, layout_of(data.name)))
    spec = {s.name: s for s in (events.CIFAR10_DVS, events.NCALTECH101)}.get(data.name)
    if spec is not None:
        try:
            events.find_recordings(spec, data.root)
        except (DatasetError, OSError) as exc:
            return str(exc)
    return None


def data_problems(sweeps: Sequence[Sweep]) -> list[str]:
    """One line per missing or malformed data root of the sweeps' runs, naming the layout and the runs reading it."""
    readers: dict[tuple[str, str | None], list[str]] = {}
    problems: dict[tuple[str, str | None], str] = {}
    for one in sweeps:
        for run in one.runs:
            where = (run.config.data.name, run.config.data.root)
            if where not in problems:
                problems[where] = root_problem(run.config.data) or ""
            readers.setdefault(where, []).append(run.name)
    lines = []
    for where, problem in problems.items():
        if problem:
            runs = readers[where]
            shown = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
            lines.append(f"{problem}; read by {len(runs)} run(s): {shown}")
    return lines


@dataclass(frozen=True)
class Compute:
    """The counted FLOPs of one run: training (forward and backward) and its test after every epoch (forward)."""

    train_flops: float
    test_flops: float

    @property
    def total(self) -> float:
        """Training and testing together."""
        return self.train_flops + self.test_flops


def epoch_samples(data: DataConfig) -> tuple[int, int] | None:
    """Samples trained on and tested in one epoch (``SPLIT_SIZES`` cut by the limits); None for an unknown dataset."""
    sizes = SPLIT_SIZES.get(data.name)
    if sizes is None:
        return None
    pool = sizes[0] - (data.val_size or 0)  # validation images are held out before train_limit draws
    return min(pool, data.train_limit or pool), min(sizes[1], data.test_limit or sizes[1])


def run_compute(run: SweepRun) -> Compute | None:
    """The FLOPs a run spends, from its model, T, dataset split sizes and epochs; None when they cannot be known."""
    data, epochs = run.config.data, run.config.optim.epochs
    samples = epoch_samples(data)
    if samples is None:
        return None
    train, test = samples
    frame = data.frame_size or 0
    try:
        train_sample, test_sample = sample_flops(run.config.model, data.name, data.num_steps, frame)
    except Exception:  # noqa: BLE001 - a plugin's model that cannot run on the meta device: not counted
        return None
    return Compute(train_sample * train * epochs, test_sample * test * epochs)


@cache
def sample_flops(model: ModelConfig, dataset: str, num_steps: int, frame_size: int = 0) -> tuple[float, float]:
    """FLOPs of one training sample (forward and backward) and one test sample (forward) at T = ``num_steps``.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (convolutions and matrix products,
    2 FLOPs a multiply-accumulate; neurons, normalisation and pooling count 0), batch 1.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tks.build import build_model
    from tks.data import dataset_info

    info = dataset_info(dataset)
    size = (frame_size, frame_size) if frame_size else info.input_size
    with torch.device("meta"):
        net = build_model(model, info, num_steps)
        x = torch.empty(num_steps, 1, info.in_channels, *size)
    counter = FlopCounterMode(display=False)
    with counter:
        net(x).sum().backward()
    train = counter.get_total_flops()
    with counter, torch.no_grad():
        net.eval()(x)
    return float(train), float(counter.get_total_flops())


def format_compute(sweeps: Sequence[Sweep]) -> list[str]:
    """The estimate lines of ``--dry-run``: each run's FLOPs and hours at ``ASSUMED_FLOPS``, then the total."""
    lines = [
        f"compute (FLOPs counted for each model at its T; time at an assumed {ASSUMED_FLOPS / 1e12:g} TFLOP/s; "
        "--measure times steps on this machine instead):"
    ]
    total, unknown = 0.0, []
    for one in sweeps:
        for run in one.runs:
            compute = run_compute(run)
            if compute is None:
                unknown.append(run.name)
                continue
            total += compute.total
            lines.append(f"  {run.name}: {_flops_and_hours(compute.total)}")
    known = sum(len(one.runs) for one in sweeps) - len(unknown)
    lines.append(f"total: {_flops_and_hours(total)} for {known} run(s)")
    if unknown:
        lines.append(f"  not counted (a dataset of unknown size, or a model not countable): {', '.join(unknown)}")
    return lines


def _flops_and_hours(flops: float) -> str:
    return f"{flops:.2e} FLOPs, {flops / ASSUMED_FLOPS / 3600:.2f} h"
