"""Event datasets through their real classes: splits, sampler, CIFAR10-DVS in both formats, N-Caltech101, errors."""

import numpy as np
import pytest
import torch
from data_files import EVENTS, aedat2_bytes, aedat4_bytes, write_cifar10_dvs, write_ncaltech101

from tks.data import (
    ClassBalancedSampler,
    DataOptions,
    DatasetError,
    EventFileError,
    build_dataset,
    split_indices,
)
from tks.data.events import NCALTECH101_CLASSES

# ------------------------------------------------------------------------------------------------ splits


def test_official_and_tebn_splits_are_per_class_deterministic_disjoint_and_complete():
    targets = np.array([0] * 10 + [1] * 31 + [2] * 5 + [0] * 10)
    for scheme in ("official", "tebn"):
        train, test = split_indices(targets, "train", scheme), split_indices(targets, "test", scheme)
        assert np.array_equal(train, split_indices(targets, "train", scheme))
        assert not set(train) & set(test) and sorted([*train, *test]) == list(range(len(targets)))
        assert [int((targets[train] == c).sum()) for c in range(3)] == [18, 28, 4]  # round(0.9 n): 18, 28, 4
    # class 0 is split across the array: its order is sample order, so its last two samples are tested
    assert split_indices(targets, "test", "official").tolist() == [38, 39, 40, 45, 54, 55]
    assert split_indices(targets, "test", "tebn").tolist() == [0, 1, 10, 11, 12, 41]


def test_class_balanced_sampler_evens_out_classes_and_depends_only_on_the_epoch():
    targets = np.array([0] * 90 + [1] * 10)
    sampler = ClassBalancedSampler(targets, seed=3)
    drawn = targets[list(sampler)]
    assert len(sampler) == 100 and len(drawn) == 100 and 35 <= (drawn == 1).sum() <= 65  # 10% without balancing
    assert list(sampler) == list(ClassBalancedSampler(targets, seed=3))  # the same epoch: the same draw
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    halves = [ClassBalancedSampler(targets, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for half in halves:
        half.set_epoch(1)
    assert sorted(list(halves[0]) + list(halves[1])) == sorted(list(sampler))  # two processes share one draw


# ------------------------------------------------------------------------------------------------ datasets


@pytest.mark.parametrize("fmt", ["aedat4", "aedat"])
def test_cifar10_dvs_from_both_formats(tmp_path, fmt):
    root = write_cifar10_dvs(tmp_path / "CIFAR10DVS", fmt)
    options = DataOptions(num_steps=5, frames_cache="off")
    train, info = build_dataset("cifar10-dvs", "train", str(tmp_path), options)
    test, _ = build_dataset("cifar10-dvs", "test", str(root), options)
    assert (len(train), len(test)) == (18, 2) and info.input_size == (48, 48) and info.in_channels == 2
    assert test.targets.tolist() == [0, 1] and [f.name for f in test.files] == [
        f"cifar10_{c}_9.{fmt}" for c in ("airplane", "automobile")
    ]
    frames, label = test[0]
    assert frames.shape == (5, 2, 48, 48) and frames.dtype == torch.float32 and label == 0
    clean = test.framing(test.files[0])
    assert np.array_equal(frames.numpy(), clean)
    augmented, _ = train[0]  # official CIFAR10-DVS augmentation: the same crop/flip/rotation for every frame
    assert augmented.shape == (5, 2, 48, 48)


def test_ncaltech101_is_cropped_to_its_events_and_labelled_in_fixed_order(tmp_path):
    write_ncaltech101(tmp_path)
    test, info = build_dataset("ncaltech101", "test", str(tmp_path), DataOptions(num_steps=4, frames_cache="off"))
    assert info.num_classes == 101 and info.sampler == "class_balanced"
    assert len(NCALTECH101_CLASSES) == 101 and NCALTECH101_CLASSES[0] == "BACKGROUND_Google"
    # BACKGROUND_Google (label 0): round(0.9 * 5) = 4 train; accordion (label 4): round(6.3) = 6 of 7 train
    assert test.targets.tolist() == [0, 4]
    frames, _ = test[0]
    assert frames.shape == (4, 2, 48, 48) and frames.sum() > 0
    assert test.framing.crop_to_events and test.framing(test.files[0]).shape == (4, 2, 48, 48)


def test_event_dataset_errors_name_dataset_path_and_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"cifar10-dvs: no data root given.*class folders airplane/"):
        build_dataset("cifar10-dvs", "train", None)
    with pytest.raises(DatasetError, match=f"ncaltech101: nothing usable at {tmp_path}; expected the 101 class"):
        build_dataset("ncaltech101", "train", str(tmp_path))
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "x.aedat").write_bytes(aedat2_bytes(EVENTS))
    (tmp_path / "cat" / "y.aedat4").write_bytes(aedat4_bytes(EVENTS))
    with pytest.raises(DatasetError, match=r"mixes \.aedat and \.aedat4 files"):
        build_dataset("cifar10-dvs", "train", str(tmp_path))
    (tmp_path / "cat" / "x.aedat").unlink()
    (tmp_path / "cats").mkdir()
    with pytest.raises(DatasetError, match=r"folders that are not classes of the dataset: \['cats'\]"):
        build_dataset("cifar10-dvs", "train", str(tmp_path))


def test_corrupt_file_in_a_dataset_names_file_and_offset(tmp_path):
    root = write_cifar10_dvs(tmp_path, "aedat", per_class=5)  # round(0.9 * 5) = 4 train: _4 is the test sample
    bad = root / "airplane" / "cifar10_airplane_4.aedat"
    bad.write_bytes(bad.read_bytes()[:-1])
    test, _ = build_dataset("cifar10-dvs", "test", str(root), DataOptions(num_steps=2, frames_cache="off"))
    with pytest.raises(EventFileError, match=f"{bad}: truncated AEDAT 2.0 file"):
        test[0]
    empty = root / "automobile" / "cifar10_automobile_4.aedat"
    empty.write_bytes(aedat2_bytes([]))
    with pytest.raises(EventFileError, match="holds no events"):
        test[1]


def test_recordings_are_natural_order(tmp_path):
    write_cifar10_dvs(tmp_path, "aedat", per_class=12, classes=("ship",))
    train, _ = build_dataset("cifar10-dvs", "train", str(tmp_path), DataOptions(num_steps=2, frames_cache="off"))
    assert [f.stem for f in train.files[:3]] == ["cifar10_ship_0", "cifar10_ship_1", "cifar10_ship_2"]
    assert train.files[10].stem == "cifar10_ship_10" and len(train) == round(0.9 * 12)


def test_ncaltech101_trains_with_the_class_balanced_sampler(tmp_path):
    from tks.config import Config, DataConfig, OptimConfig, RunConfig
    from tks.data.loading import make_loader
    from tks.distributed import Dist
    from tks.experiment import train

    write_ncaltech101(tmp_path / "data")
    data = DataConfig(
        name="ncaltech101", root=str(tmp_path / "data"), num_steps=2, frame_size=8, batch_size=4, frames_cache="off"
    )
    dataset, info = build_dataset("ncaltech101", "train", data.root, DataOptions(num_steps=2, frames_cache="off"))
    loader = make_loader(
        dataset, data, train=True, seed=0, device=torch.device("cpu"), dist=Dist.single(), balanced=True
    )
    assert isinstance(loader.sampler, ClassBalancedSampler) and len(loader.sampler) == len(dataset) == 10
    cfg = Config(
        data=data,
        optim=OptimConfig(epochs=1, warmup_epochs=0),
        run=RunConfig(out_dir=str(tmp_path / "runs"), progress=False, device="cpu"),
    )
    result = train(cfg)
    assert info.sampler == "class_balanced" and len(result.metrics["per_step"]) == 2
