"""The frame cache: built once, reused, rebuilt when stale or partial, never read when wrong; ``tks prepare``."""

import hashlib
import json
import logging
import os
import time
import warnings

import numpy as np
import pytest
from concurrency import run_at_once
from data_files import EVENTS, aedat2_bytes, write_cifar10_dvs

from tks.cli import main
from tks.data import DataOptions, EventFileError, build_dataset
from tks.data import cache as frame_cache
from tks.data.cache import FORMAT_VERSION


@pytest.fixture
def dvs(tmp_path):
    return write_cifar10_dvs(tmp_path / "data", "aedat", per_class=10), tmp_path / "cache"


def load(root, cache, steps=4, split="test"):
    return build_dataset("cifar10-dvs", split, str(root), DataOptions(num_steps=steps, frames_cache=str(cache)))[0]


def test_cache_holds_the_frames_and_a_manifest(dvs):
    root, cache = dvs
    cached = load(root, cache)
    (folder,) = cache.iterdir()
    assert folder.name.startswith("cifar10-dvs-official-test-T4-48px-")
    assert sorted(p.name for p in folder.iterdir()) == ["frames.npy", "labels.npy", "manifest.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == FORMAT_VERSION and manifest["count"] == 2 and manifest["num_frames"] == 4
    assert manifest["source"] == str(root.resolve()) and manifest["split"] == "test"
    direct = build_dataset("cifar10-dvs", "test", str(root), DataOptions(num_steps=4, frames_cache="off"))[0]
    for i in range(2):
        assert np.array_equal(cached[i][0].numpy(), direct[i][0].numpy()) and cached[i][1] == direct[i][1]


def test_a_valid_cache_is_reused_without_rewriting(dvs, caplog):
    root, cache = dvs
    load(root, cache)
    (folder,) = cache.iterdir()
    before = (folder / "frames.npy").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        load(root, cache)
    assert (folder / "frames.npy").stat().st_mtime_ns == before and not caplog.records


def test_a_new_T_gets_its_own_cache(dvs):
    root, cache = dvs
    four, three = load(root, cache, steps=4), load(root, cache, steps=3)
    assert four[0][0].shape == (4, 2, 48, 48) and three[0][0].shape == (3, 2, 48, 48)
    assert sorted(p.name.split("-")[4] for p in cache.iterdir()) == ["T3", "T4"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: (f / "manifest.json").unlink(), "partial (no manifest.json)"),
        (lambda f: os.truncate(f / "frames.npy", 1000), "partial (ValueError"),
        (lambda f: (f / "labels.npy").unlink(), "partial (FileNotFoundError"),
        (lambda f: (f / "manifest.json").write_text("{"), "partial (manifest.json unreadable)"),
        (lambda f: rewrite_manifest(f, version=FORMAT_VERSION - 1), "stale (format version"),
        (lambda f: rewrite_manifest(f, num_frames=5), "stale (num_frames differ)"),
        (lambda f: rewrite_manifest(f, fingerprint="0"), "stale (the source files changed)"),
    ],
)
def test_partial_or_stale_cache_is_detected_and_rebuilt(dvs, caplog, damage, reason):
    root, cache = dvs
    good = load(root, cache)[1][0].numpy()
    (folder,) = cache.iterdir()
    damage(folder)
    with caplog.at_level(logging.WARNING):
        rebuilt = load(root, cache)
    assert any(reason in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records), caplog.text
    assert np.array_equal(rebuilt[1][0].numpy(), good)


def rewrite_manifest(folder, **changes):
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **changes}))


def test_changed_source_file_rebuilds_with_new_frames(dvs, caplog):
    root, cache = dvs
    old = load(root, cache)[0][0].numpy()
    (root / "airplane" / "cifar10_airplane_9.aedat").write_bytes(aedat2_bytes(EVENTS))
    with caplog.at_level(logging.WARNING):
        new = load(root, cache)[0][0].numpy()
    assert "stale (the source files changed)" in caplog.text and not np.array_equal(old, new)


def test_failed_build_publishes_nothing_and_a_dead_build_is_cleaned_up(dvs):
    root, cache = dvs
    bad = root / "automobile" / "cifar10_automobile_9.aedat"
    bad.write_bytes(bad.read_bytes()[:-2])
    with pytest.raises(EventFileError, match="truncated AEDAT 2.0"):
        load(root, cache)
    assert list(cache.iterdir()) == []  # no cache folder and no half-written one
    bad.write_bytes(aedat2_bytes(EVENTS))
    load(root, cache)
    (folder,) = cache.iterdir()
    leftover = cache / f"{folder.name}.partial-999999999"  # a killed build's folder (no such process)
    leftover.mkdir()
    (folder / "manifest.json").unlink()
    load(root, cache)
    assert not leftover.exists() and [p.name for p in cache.iterdir()] == [folder.name]


def test_prepare_builds_both_splits_with_worker_processes(dvs, capsys):
    root, cache = dvs
    argv = ["prepare", "cifar10-dvs", "--root", str(root), "--steps", "3", "--workers", "2", "--cache", str(cache)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("frame cache ready: ") for line in lines)
    assert sorted(p.name.split("-")[3] for p in cache.iterdir()) == ["test", "train"]
    serial = build_dataset("cifar10-dvs", "train", str(root), DataOptions(num_steps=3, frames_cache="off"))[0]
    prepared = load(root, cache, steps=3, split="train")  # training items are augmented: compare the stored frames
    assert np.array_equal(np.load(prepared.frames_file)[17], serial.framing(serial.files[17]))
    assert prepared.targets.tolist() == serial.targets.tolist()


def test_prepare_reports_a_corrupt_file_from_a_worker_and_refuses_static_data(dvs, capsys):
    root, cache = dvs
    bad = root / "airplane" / "cifar10_airplane_3.aedat"
    bad.write_bytes(bad.read_bytes()[:-1])
    argv = ["prepare", "cifar10-dvs", "--root", str(root), "--steps", "3", "--workers", "2", "--cache", str(cache)]
    assert main(argv) == 2
    assert f"tks: error: {bad}: truncated AEDAT 2.0 file" in capsys.readouterr().err
    assert main(["prepare", "digits", "--steps", "3"]) == 2
    assert "digits is a static image dataset" in capsys.readouterr().err


def load_counted(root, cache, builds, hold=0.5):
    """``load`` noting each cache build in ``builds`` and keeping it open ``hold`` s; a digest of the frames read."""
    real = frame_cache.build

    def counted(*args, **kwargs):
        with open(builds, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(hold)
        return real(*args, **kwargs)

    frame_cache.build = counted  # in this forked process only
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load(root, cache, split="train")
    frames = np.load(dataset.frames_file)  # read the whole copy right after it was ready
    return hashlib.sha256(frames.tobytes()).hexdigest(), str(dataset.frames_file), [str(w.message) for w in caught]


def test_two_processes_building_one_cache_at_once_build_once_and_share_it(dvs):
    root, cache = dvs
    builds = root.parent / "builds.txt"
    (digest_a, file_a, notes_a), (digest_b, file_b, notes_b) = run_at_once(load_counted, [(root, cache, builds)] * 2)
    assert (digest_a, file_a) == (digest_b, file_b)
    (builder,) = builds.read_text().split()  # built once; the other process waited and reused it
    folder = cache / file_a.split(os.sep)[-2]
    assert [p.name for p in cache.iterdir()] == [folder.name]  # no partial folder, no lock file
    for notes in (notes_a, notes_b):
        assert notes in ([], [f"waiting for process {builder} to finish building the frame cache {folder}"])
    before = (folder / "frames.npy").stat().st_mtime_ns
    load(root, cache, split="train")
    assert (folder / "frames.npy").stat().st_mtime_ns == before and builds.read_text().split() == [builder]
