"""Static image datasets from small copies of their native layouts, their transform presets and their errors."""

import gzip
import pickle

import numpy as np
import pytest
import torch
from data_files import idx_bytes, write_cars, write_cifar, write_cub, write_dogs, write_fashion_mnist, write_imagenet

from tks.data import DataOptions, DatasetError, build_dataset
from tks.data.static import FASHION_MNIST_DEBIAN, read_cifar, read_idx
from tks.data.transforms import STATS, Cutout
from tks.errors import OptionError


def normalized(image_hwc, stats):
    mean, std = (torch.tensor(s).view(-1, 1, 1) for s in stats)
    return (torch.from_numpy(image_hwc).permute(2, 0, 1).float() / 255 - mean) / std


def test_cifar10_pickles_read_with_consistent_normalisation(tmp_path):
    write_cifar(tmp_path)
    images, labels = read_cifar("cifar10", "train", tmp_path)
    assert images.shape == (30, 32, 32, 3) and images.dtype == np.uint8 and labels.tolist() == list(range(6)) * 5
    test, info = build_dataset("cifar10", "test", str(tmp_path))
    assert len(test) == 6 and info.in_channels == 3 and info.input_size == (32, 32)
    image, label = test[2]
    raw, _ = read_cifar("cifar10", "test", tmp_path)
    assert label == 2 and torch.allclose(image, normalized(raw[2], STATS["cifar10"]), atol=1e-6)
    train, _ = build_dataset("cifar10", "train", str(tmp_path / "cifar-10-batches-py"), DataOptions(augment="none"))
    assert torch.allclose(train[0][0], normalized(images[0], STATS["cifar10"]), atol=1e-6)  # same statistics


def test_official_normalisation_mismatch_is_an_explicit_option(tmp_path):
    write_cifar(tmp_path, "cifar100")
    options = DataOptions(augment="none", normalization="official")
    train, info = build_dataset("cifar100", "train", str(tmp_path), options)
    test, _ = build_dataset("cifar100", "test", str(tmp_path), options)
    images, _ = read_cifar("cifar100", "train", tmp_path)
    test_images, _ = read_cifar("cifar100", "test", tmp_path)
    assert info.num_classes == 100
    assert torch.allclose(train[0][0], normalized(images[0], STATS["imagenet"]), atol=1e-6)
    assert torch.allclose(test[0][0], normalized(test_images[0], STATS["cifar10"]), atol=1e-6)  # as the official code
    default, _ = build_dataset("cifar100", "test", str(tmp_path))
    assert torch.allclose(default[0][0], normalized(test_images[0], STATS["cifar100"]), atol=1e-6)


@pytest.mark.parametrize("augment", ["official", "crop_flip", "randaugment", "autoaugment", "none"])
def test_cifar_presets_give_normalised_32px_tensors(tmp_path, augment):
    write_cifar(tmp_path)
    train, _ = build_dataset("cifar10", "train", str(tmp_path), DataOptions(augment=augment))
    torch.manual_seed(1)
    first = train[0][0]
    assert first.shape == (3, 32, 32) and first.dtype == torch.float32
    if augment != "none":  # random: two draws of the same image differ
        assert not torch.equal(first, train[0][0])


def test_cutout_zeroes_one_clipped_square():
    torch.manual_seed(3)
    out = Cutout(16)(torch.ones(3, 32, 32))
    zero = (out == 0).all(0)
    rows, cols = zero.any(1).nonzero(), zero.any(0).nonzero()
    assert 0 < zero.sum() <= 256 and zero.sum() == len(rows) * len(cols)  # one axis-aligned rectangle
    assert len(rows) <= 16 and len(cols) <= 16


def test_corrupt_cifar_batch_names_the_file(tmp_path):
    write_cifar(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DatasetError, match=f"cifar10: {bad} is not a CIFAR python batch"):
        build_dataset("cifar10", "test", str(tmp_path))
    bad.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="is not a CIFAR python batch"):
        build_dataset("cifar10", "test", str(tmp_path))


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_files(tmp_path, gz):
    write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", gz=gz)  # torchvision's folder layout
    test, info = build_dataset("fashion-mnist", "test", str(tmp_path))
    assert len(test) == 12 and info.in_channels == 1 and test[3][0].shape == (1, 28, 28) and test[3][1] == 3


def test_flip_preset_mirrors_some_reads_and_changes_nothing_else(tmp_path):
    write_fashion_mnist(tmp_path)
    plain, _ = build_dataset("fashion-mnist", "train", str(tmp_path), DataOptions(augment="none"))
    flipped, _ = build_dataset("fashion-mnist", "train", str(tmp_path), DataOptions(augment="flip"))
    image = plain[5][0]
    torch.manual_seed(0)
    reads = [flipped[5][0] for _ in range(20)]
    assert all(torch.equal(r, image) or torch.equal(r, image.flip(-1)) for r in reads)
    assert any(torch.equal(r, image) for r in reads) and any(torch.equal(r, image.flip(-1)) for r in reads)


def test_idx_reader_rejects_bad_files(tmp_path):
    path = tmp_path / "x-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 3), np.uint8))[:-1]))
    with pytest.raises(DatasetError, match="IDX body has 5 bytes, its header says \\(2, 3\\)"):
        read_idx(path)
    path.write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match="cannot read the IDX file"):
        read_idx(path)
    raw = tmp_path / "x-ubyte"
    raw.write_bytes(b"\x00\x00\x0d\x01")  # float32 IDX: not images
    with pytest.raises(DatasetError, match="not an IDX file of unsigned bytes"):
        read_idx(raw)


@pytest.mark.skipif(not FASHION_MNIST_DEBIAN.is_dir(), reason="apt-get install dataset-fashion-mnist to test it")
def test_fashion_mnist_from_the_debian_package_by_default():
    train, _ = build_dataset("fashion-mnist", "train")
    test, _ = build_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert np.bincount(train.targets).tolist() == [6000] * 10 and np.bincount(test.targets).tolist() == [1000] * 10
    image, label = test[0]
    assert image.shape == (1, 28, 28) and label == 9  # the first test image is an ankle boot


def test_imagenet_val_labels_follow_the_train_folders(tmp_path):
    write_imagenet(tmp_path)
    val, info = build_dataset("imagenet", "test", str(tmp_path))
    assert info.num_classes == 1000 and val.targets.tolist() == [0, 0, 1, 1]
    assert val[0][0].shape == (3, 224, 224)
    train, _ = build_dataset("imagenet", "train", str(tmp_path))
    assert train[3][0].shape == (3, 224, 224) and train[3][1] == 1
    (tmp_path / "val" / "n99999999").mkdir()
    with pytest.raises(DatasetError, match=r"class folders missing from train/: \['n99999999'\]"):
        build_dataset("imagenet", "test", str(tmp_path))


def test_fine_grained_sets_read_their_split_lists(tmp_path):
    cub_train, _ = build_dataset("cub200", "train", str(write_cub(tmp_path / "cub")))
    cub_test, info = build_dataset("cub200", "test", str(tmp_path / "cub" / "CUB_200_2011"))
    assert cub_train.targets.tolist() == [0, 199, 199] and cub_test.targets.tolist() == [0] and info.num_classes == 200
    assert cub_train.files[1].name == "c_1.jpg" and cub_test[0][0].shape == (3, 224, 224)
    dogs_train, info = build_dataset("stanford-dogs", "train", str(write_dogs(tmp_path / "dogs")))
    assert dogs_train.targets.tolist() == [0, 119] and info.num_classes == 120 and dogs_train[1][1] == 119
    cars_train, info = build_dataset("stanford-cars", "train", str(write_cars(tmp_path / "cars")))
    cars_test, _ = build_dataset("stanford-cars", "test", str(tmp_path / "cars" / "stanford_cars"))
    assert [cars_train[i][1] for i in range(3)] == [0, 195, 4] and cars_test[0][1] == 195 and info.num_classes == 196
    assert cars_test[0][0].shape == (3, 224, 224)


def test_missing_listed_image_and_mismatched_lists_are_errors(tmp_path):
    write_cub(tmp_path)
    base = tmp_path / "CUB_200_2011"
    (base / "images" / "200.Common_Yellowthroat" / "c_2.jpg").unlink()
    with pytest.raises(DatasetError, match=r"cub200: 1 listed image files are missing, e\.g\. .*c_2\.jpg"):
        build_dataset("cub200", "train", str(tmp_path))
    (base / "train_test_split.txt").write_text("1 1\n")
    with pytest.raises(DatasetError, match="image ids of the three list files .* differ"):
        build_dataset("cub200", "train", str(tmp_path))


def test_options_a_dataset_does_not_take(tmp_path):
    with pytest.raises(
        OptionError, match=r"dataset 'cub200' takes data.augment in \['official', 'none', 'crop_flip'\]"
    ):
        build_dataset("cub200", "train", str(tmp_path), DataOptions(augment="randaugment"))
    with pytest.raises(OptionError, match="'fashion-mnist' takes data.normalization in \\['dataset'\\]"):
        build_dataset("fashion-mnist", "train", str(tmp_path), DataOptions(normalization="imagenet"))
    with pytest.raises(OptionError, match="'ncaltech101' takes data.split in \\['official'\\]"):
        build_dataset("ncaltech101", "train", str(tmp_path), DataOptions(split_scheme="tebn"))
