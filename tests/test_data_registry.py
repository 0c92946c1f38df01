"""Every registered dataset loads from its native layout, and says where its files go when they are missing."""

from dataclasses import replace

import pytest
import torch
from data_files import (
    write_cars,
    write_cifar,
    write_cifar10_dvs,
    write_cub,
    write_dogs,
    write_fashion_mnist,
    write_imagenet,
    write_ncaltech101,
)

from tks.data import DataOptions, DatasetError, build_dataset, dataset_info, list_datasets

WRITERS = {
    "cifar10": lambda root: write_cifar(root, "cifar10"),
    "cifar100": lambda root: write_cifar(root, "cifar100"),
    "fashion-mnist": write_fashion_mnist,
    "imagenet": write_imagenet,
    "cub200": write_cub,
    "stanford-dogs": write_dogs,
    "stanford-cars": write_cars,
    "cifar10-dvs": write_cifar10_dvs,
    "ncaltech101": write_ncaltech101,
}
BUNDLED = {"digits", "digits-dvs"}


def test_every_registered_dataset_has_a_fake_layout_here():
    assert set(list_datasets()) == set(WRITERS) | BUNDLED


@pytest.fixture(scope="module")
def roots(tmp_path_factory, digits_dvs_root):
    base = tmp_path_factory.mktemp("layouts")
    made = {name: str(write(base / name)) for name, write in WRITERS.items()}
    return {**made, "digits": None, "digits-dvs": str(digits_dvs_root)}


@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_loads_from_its_native_layout(name, roots, tmp_path):
    options = DataOptions(num_steps=3, frame_size=16, frames_cache=str(tmp_path))
    for split in ("train", "test"):
        dataset, info = build_dataset(name, split, roots[name], options)
        assert len(dataset) > 0
        x, label = dataset[len(dataset) - 1]
        expected = (info.in_channels, *info.input_size)
        assert x.shape == ((3, *expected) if info.kind == "events" else expected), (name, split, x.shape)
        assert x.dtype == torch.float32 and torch.isfinite(x).all() and 0 <= label < info.num_classes
    # frame_size sets the size of event frames only
    assert info == (dataset_info(name) if info.kind == "static" else replace(dataset_info(name), input_size=(16, 16)))


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_missing_data_is_one_error_naming_dataset_path_and_layout(name, tmp_path):
    if dataset_info(name).needs_root:  # fashion-mnist falls back to the Debian package's folder
        with pytest.raises(DatasetError) as no_root:
            build_dataset(name, "train", None)
        message = str(no_root.value)
        assert message.startswith(f"{name}: no data root given") and "expected" in message
        assert message.endswith("(see docs/datasets.md)")
    with pytest.raises(DatasetError) as empty:
        build_dataset(name, "test", str(tmp_path))
    assert str(empty.value).startswith(f"{name}: nothing usable at {tmp_path}") and "\n" not in str(empty.value)


def test_bundled_digits_are_scikit_learns_with_its_fixed_split():
    """digits.npz against scikit-learn itself: the images, the labels, and the split train_test_split draws."""
    import numpy as np

    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    model_selection = pytest.importorskip("sklearn.model_selection")
    from tks.data.digits import digits

    bunch = sklearn_datasets.load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        images, bunch.target, test_size=0.2, stratify=bunch.target, random_state=0
    )
    mean, std = x_train.mean(), x_train.std()
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        dataset = digits(split)
        assert torch.equal(dataset.tensors[0], torch.from_numpy((x - mean) / std).unsqueeze(1)), split
        assert dataset.tensors[1].tolist() == y.tolist(), split
