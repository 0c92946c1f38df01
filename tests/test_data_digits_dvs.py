"""digits-dvs: the simulated event camera, the generated files, a short training run and fewer-step evaluation."""

import hashlib
import json
import os
import time
import warnings

import numpy as np
import pytest
from concurrency import FORK, run_at_once

from tks.config import Config, ConfigError, DataConfig, LossConfig, OptimConfig, RunConfig, TKSOptions
from tks.data import DataOptions, DatasetError, build_dataset, digits_dvs
from tks.data.digits import digit_arrays
from tks.data.digits_dvs import SENSOR, ensure_digits_dvs, simulate
from tks.data.event_io import read_atis_bin
from tks.eval_options import EvalOptions
from tks.evaluation import evaluate_checkpoint
from tks.experiment import train


def test_simulated_camera_is_deterministic_and_sees_both_polarities():
    images = digit_arrays()[0][:6] / 16.0
    first, again = simulate(images), simulate(images)
    for (x, y, t, p), repeat in zip(first, again, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip((x, y, t, p), repeat, strict=True))
        assert 1000 < len(x) < 10000 and np.all(np.diff(t) >= 0) and 0 <= t.min() and t.max() <= 300_000
        assert 0 <= x.min() and x.max() < SENSOR and 0 <= y.min() and y.max() < SENSOR
        assert 0.3 < p.mean() < 0.7  # moving edges brighten and darken pixels alike
    blank = simulate(np.zeros((1, 8, 8)))[0]
    assert len(blank[0]) == 0  # nothing moves, nothing fires: there are no noise events


def test_generated_files_hold_the_simulated_events(digits_dvs_root):
    images, labels, _, _ = digit_arrays()
    files = sorted(digits_dvs_root.glob("*/*.bin"))
    assert len(files) == 1797
    assert [len(list(digits_dvs_root.glob(f"{d}/*.bin"))) for d in range(10)] == np.bincount(labels).tolist()
    stream = read_atis_bin(digits_dvs_root / str(labels[5]) / "digit_0005.bin")
    x, y, t, p = simulate(images[5:6] / 16.0)[0]
    e = stream.events
    assert np.array_equal(e["x"], x) and np.array_equal(e["y"], y) and np.array_equal(e["t"], t)
    assert np.array_equal(e["p"], p.astype(bool))


def test_generation_runs_once_and_never_overwrites_other_files(digits_dvs_root, tmp_path):
    manifest = digits_dvs_root / "manifest.json"
    before = manifest.stat().st_mtime_ns
    assert ensure_digits_dvs(digits_dvs_root) == digits_dvs_root and manifest.stat().st_mtime_ns == before
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="holds other files"):
        ensure_digits_dvs(tmp_path)


def first_digits(count=40):
    """A stand-in for ``digit_arrays()`` with its first ``count`` digits: the concurrency tests need no more."""
    few = tuple(a[:count] for a in digit_arrays())
    return lambda: few


def generate_counted(folder, builds, hold=0.5):
    """``ensure_digits_dvs`` on 40 digits, noting each generation in ``builds`` and keeping it open ``hold`` s.

    Returns a digest of every file the call left in ``folder`` (read right after it returned) and the messages of
    the warnings it gave.
    """
    digits_dvs.digit_arrays = first_digits()  # in this forked process only
    real = digits_dvs.simulate

    def counted(images):
        with open(builds, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(hold)
        return real(images)

    digits_dvs.simulate = counted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ensure_digits_dvs(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest(), [str(w.message) for w in caught]


def test_two_processes_generating_at_once_build_once_and_share_the_copy(tmp_path):
    folder, builds = tmp_path / "cache" / "digits-dvs", tmp_path / "builds.txt"
    (first, notes_a), (second, notes_b) = run_at_once(generate_counted, [(folder, builds)] * 2)
    assert first == second  # both read the same complete files
    (builder,) = builds.read_text().split()  # generated once; the other process waited and reused the copy
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["digits-dvs"]  # no partial folder, no lock file
    for notes in (notes_a, notes_b):
        assert notes in ([], [f"waiting for process {builder} to finish building digits-dvs in {folder}"])
    assert ensure_digits_dvs(folder) == folder and builds.read_text().split() == [builder]  # complete: kept


def generate_and_hang(folder, started):
    digits_dvs.digit_arrays = first_digits()

    def hang(images):
        started.write_text("")
        time.sleep(60)

    digits_dvs.simulate = hang
    ensure_digits_dvs(folder)


def test_a_killed_generation_is_cleaned_up_by_the_next(tmp_path, monkeypatch):
    folder, started = tmp_path / "cache" / "digits-dvs", tmp_path / "started"
    killed = FORK.Process(target=generate_and_hang, args=(folder, started))
    killed.start()
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline:
        time.sleep(0.02)
    killed.kill()
    killed.join()
    assert (tmp_path / "cache" / f"digits-dvs.partial-{killed.pid}").is_dir()  # what a killed build leaves
    monkeypatch.setattr(digits_dvs, "digit_arrays", first_digits())
    assert ensure_digits_dvs(folder) == folder
    assert len(list(folder.glob("*/*.bin"))) == 40
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["digits-dvs"]  # the dead build's folder is gone


def test_digits_dvs_split_and_frames(digits_dvs_root):
    options = DataOptions(num_steps=10, frames_cache="off")  # framed on access: this test reads few samples
    train, info = build_dataset("digits-dvs", "train", str(digits_dvs_root), options)
    test, _ = build_dataset("digits-dvs", "test", str(digits_dvs_root), options)
    assert (len(train), len(test)) == (1618, 179) and info.input_size == (34, 34) and info.kind == "events"
    assert np.bincount(test.targets).tolist() == [18, 18, 18, 18, 18, 18, 18, 18, 17, 18]
    frames, _ = test[0]
    assert frames.shape == (10, 2, 34, 34) and (frames.sum(dim=(1, 2, 3)) > 0).all()  # every bin holds events
    assert set(train.files).isdisjoint(test.files)


@pytest.fixture(scope="module")
def trained(digits_dvs_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = Config(
        data=DataConfig(
            name="digits-dvs",
            root=str(digits_dvs_root),
            num_steps=4,
            frame_size=8,
            batch_size=64,
            frames_cache=str(out / "frames"),
        ),
        loss=LossConfig(name="tks", tks=TKSOptions(temperature=5.0, alpha=0.3)),
        optim=OptimConfig(epochs=1, warmup_epochs=0, lr=5e-3),
        run=RunConfig(name="digits-dvs", out_dir=str(out), progress=False, device="cpu"),
    )
    return train(cfg), out


def test_short_training_run_learns_on_digits_dvs(trained):
    result, _ = trained
    assert result.metrics["top1"] > 0.3  # chance is 0.1; one epoch on 8x8 frames at T=4
    assert len(result.metrics["per_step"]) == 4
    assert json.loads((result.run_dir / "metrics.json").read_text())["top1"] == result.metrics["top1"]


def test_fewer_steps_on_events_truncate_or_rebin(trained):
    result, out = trained
    checkpoint = result.run_dir / "checkpoint.pt"
    truncated = evaluate_checkpoint(checkpoint, EvalOptions(steps=(2, 4), device="cpu")).steps
    assert truncated[4]["top1"] == pytest.approx(result.metrics["top1"])
    with pytest.raises(ConfigError, match="T=6 needs the events re-binned"):
        evaluate_checkpoint(checkpoint, EvalOptions(steps=(6,), device="cpu"))
    rebinned = evaluate_checkpoint(checkpoint, EvalOptions(steps=(2, 6), device="cpu", event_steps="rebin")).steps
    assert len(rebinned[6]["per_step"]) == 6 and rebinned[2]["top1"] != truncated[2]["top1"]
    assert {p.name.split("-")[4] for p in (out / "frames").iterdir()} == {"T2", "T4", "T6"}
    saved = json.loads((result.run_dir / "metrics.json").read_text())["eval"]["checkpoint.pt"]
    assert set(saved["steps"]) == {"2", "4"} and set(saved["steps_rebin"]) == {"2", "6"}  # kept apart
    assert (
        saved["steps"]["2"]["top1"] == truncated[2]["top1"] and saved["steps_rebin"]["2"]["top1"] == rebinned[2]["top1"]
    )
