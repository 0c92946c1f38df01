"""``tks sweep --dry-run`` catches what a queue would: missing data roots, bad plugins, and states the compute.

The expected lines come from elsewhere: a missing root's line is the error the dataset's own loader raises
(``build_dataset``), and the FLOPs are counted again on real tensors at another batch, or taken from the number
docs/benchmarks.md recorded with ``benchmarks/models.py``.
"""

import re
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from tks.build import build_model
from tks.cli import main
from tks.config import load_config
from tks.data import build_dataset, dataset_info
from tks.data.errors import DatasetError
from tks.sweep.preflight import ASSUMED_FLOPS, sample_flops

ROOT = Path(__file__).parents[1]
TINY = {"optim": {"epochs": 3}, "data": {"num_steps": 2}, "run": {"progress": False}}


def write(folder: Path, sweep: dict) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def dry_run(path: Path, capsys, *options: str) -> tuple[int, str]:
    code = main(["sweep", str(path), "--dry-run", *options])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def loader_error(name: str, root: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        build_dataset(name, "train", str(root))
    return str(caught.value)


def test_every_missing_root_is_one_line_naming_the_layout_as_its_loader_does(tmp_path, capsys):
    (tmp_path / "empty-dvs").mkdir()
    runs = [
        {
            "name": "c",
            "set": {"data.name": "cifar10", "data.root": str(tmp_path / "no-cifar"), "model.name": "resnet19"},
        },
        {
            "name": "d0",
            "set": {"data.name": "cifar10-dvs", "data.root": str(tmp_path / "empty-dvs"), "model.name": "vgg_snn"},
        },
        {
            "name": "d1",
            "set": {
                "data.name": "cifar10-dvs",
                "data.root": str(tmp_path / "empty-dvs"),
                "model.name": "vgg_snn",
                "run.seed": 1,
            },
        },
    ]
    code, text = dry_run(write(tmp_path, {"base": TINY, "out_dir": "out", "runs": runs}), capsys)
    assert code == 1
    assert "2 data root(s) missing (give --data-root DIR or set data.root):" in text
    cifar = loader_error("cifar10", tmp_path / "no-cifar")
    dvs = loader_error("cifar10-dvs", tmp_path / "empty-dvs")  # a folder, but no class folders in it
    lines = [line.strip() for line in text.splitlines()]
    assert [line for line in lines if line.startswith(cifar)] == [f"{cifar}; read by 1 run(s): c"]
    assert [line for line in lines if line.startswith(dvs)] == [f"{dvs}; read by 2 run(s): d0, d1"]


def test_a_found_root_passes_and_nothing_is_written(tmp_path, capsys):
    (tmp_path / "cifar").mkdir()
    base = {**TINY, "data": {"name": "cifar10", "root": str(tmp_path / "cifar"), "num_steps": 2}}
    base["model"] = {"name": "resnet19"}
    code, text = dry_run(write(tmp_path, {"base": base, "out_dir": "out"}), capsys)
    assert code == 0 and "every data root found" in text
    assert not (tmp_path / "out").exists()


def test_a_plugin_that_does_not_load_is_an_error_before_anything(tmp_path, capsys):
    code, text = dry_run(write(tmp_path, {"base": TINY, "out_dir": "out"}), capsys, "--plugin", "no_such_plugin_x")
    assert code == 2 and "no_such_plugin_x" in text and text.count("error") == 1


def counted_on_tensors(config, batch: int = 4) -> tuple[float, float]:
    """Per-sample FLOPs of training and testing, counted on real CPU tensors at batch 4 (not meta, not batch 1)."""
    info = dataset_info(config.data.name)
    net = build_model(config.model, info, config.data.num_steps)
    x = torch.rand(config.data.num_steps, batch, info.in_channels, *info.input_size)
    with FlopCounterMode(display=False) as train:
        net(x).sum().backward()
    with FlopCounterMode(display=False) as test, torch.no_grad():
        net.eval()(x)
    return train.get_total_flops() / batch, test.get_total_flops() / batch


def test_compute_per_run_and_in_total_is_samples_times_epochs_times_counted_flops(tmp_path, capsys):
    sweep = {"base": TINY, "out_dir": "out", "name": "d-{run.seed}", "grid": {"run.seed": [0, 1]}}
    code, text = dry_run(write(tmp_path, sweep), capsys)
    assert code == 0 and "assumed 50 TFLOP/s; --measure times steps on this machine instead" in text
    train, test = counted_on_tensors(load_config(None, [f"optim.epochs={3}", "data.num_steps=2"]))
    per_run = 3 * (1437 * train + 360 * test)  # digits: 1,437 training and 360 test images, a test every epoch
    shown = dict(re.findall(r"^  (d-\d): ([0-9.e+]+) FLOPs", text, re.MULTILINE))
    assert {k: float(v) for k, v in shown.items()} == pytest.approx({"d-0": per_run, "d-1": per_run}, rel=5e-3)
    total = re.search(r"^total: ([0-9.e+]+) FLOPs, ([0-9.]+) h for 2 run\(s\)$", text, re.MULTILINE)
    assert float(total[1]) == pytest.approx(2 * per_run, rel=5e-3)
    assert float(total[2]) == pytest.approx(2 * per_run / ASSUMED_FLOPS / 3600, abs=0.01)


def test_vgg_snn_count_matches_the_recorded_benchmark():
    """docs/benchmarks.md: 522.5 GFLOPs for a training step of VGG-SNN at batch 16 and T=4 (benchmarks/models.py)."""
    config = load_config(ROOT / "configs/paper/cifar10dvs_vgg_snn_tks.yaml", ["data.num_steps=4"])
    train, test = sample_flops(config.model, "cifar10-dvs", 4)
    assert train == pytest.approx(522.5e9 / 16, rel=1e-3)
    assert test == pytest.approx(train / 3, rel=0.01)  # the forward pass is a third of forward and backward


MEASURED = re.compile(
    r"^  (\S+): training step ([0-9.e+-]+) s x (\d+) steps \+ test batch ([0-9.e+-]+) s x (\d+) batches, "
    r"x (\d+) epochs = ([0-9.e+-]+) h$",
    re.MULTILINE,
)


def test_measured_hours_are_the_printed_step_times_times_steps_and_epochs(tmp_path, capsys):
    sweep = {"base": TINY, "out_dir": "out", "name": "d-{run.seed}", "grid": {"run.seed": [0, 1]}}
    code, text = dry_run(write(tmp_path, sweep), capsys, "--measure")
    assert code == 0 and "timed on cpu (" in text and "1 thread)" in text  # a local run's one thread
    assert re.search(r"^measuring 1 setup\(s\) took \d+ s$", text, re.MULTILINE)  # two seeds, one setup
    rows = {row[0]: [float(v) for v in row[1:]] for row in MEASURED.findall(text)}
    assert set(rows) == {"d-0", "d-1"} and rows["d-0"] == rows["d-1"]
    step, steps, batch, batches, epochs, hours = rows["d-0"]
    assert step > 0 and batch > 0
    assert (steps, batches, epochs) == (1437 // 64, 2, 3)  # digits: 1,437 training and 360 test images; 64, 256
    assert hours == pytest.approx((step * steps + batch * batches) * epochs / 3600, rel=1e-2)
    total = re.search(r"^total: ([0-9.e+-]+) h for 2 run\(s\)$", text, re.MULTILINE)
    assert float(total[1]) == pytest.approx(2 * hours, rel=1e-2)
    assert not (tmp_path / "out").exists()


def test_a_setup_too_big_for_this_machine_is_one_line_and_the_others_are_measured(tmp_path, capsys):
    runs = [{"name": "ok"}, {"name": "big", "set": {"data.batch_size": 10**9}}]
    code, text = dry_run(write(tmp_path, {"base": TINY, "out_dir": "out", "runs": runs}), capsys, "--measure")
    assert code == 0
    big = [line for line in text.splitlines() if line.startswith("  big: ")]
    assert len(big) == 1 and re.fullmatch(
        r"  big: not measured: T=2 with data.batch_size=1000000000 needs at least [0-9.]+ GiB of activations, "
        r"but cpu has [0-9.]+ GiB free; lower T or the batch size",
        big[0],
    )
    assert [row[0] for row in MEASURED.findall(text)] == ["ok"] and "h for 1 run(s)" in text


def test_measure_without_dry_run_is_refused_in_one_line(tmp_path, capsys):
    code = main(["sweep", str(write(tmp_path, {"base": TINY, "out_dir": "out"})), "--measure"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        "tks: error: --measure goes with --dry-run: it times a few steps of each model and starts no run"
    ]
    assert not (tmp_path / "out").exists()
