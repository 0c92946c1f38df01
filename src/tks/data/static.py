"""Static image datasets read from the layouts they are distributed in (docs/datasets.md lists each layout).

CIFAR-10/100 (python pickle batches) and Fashion-MNIST (IDX files, gzipped or not) are read here into uint8
arrays: torchvision's readers check the MD5 of the official archives and want their own folder names, so they
reject a Debian install or a test's small copy. ImageNet uses torchvision's folder scanner, Stanford Cars
torchvision's ``StanfordCars``; CUB-200-2011 and Stanford Dogs are read from their list files. Every missing or
malformed file raises ``DatasetError`` naming the dataset, the path and the expected layout.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from tks.data.errors import DatasetError, missing
from tks.data.transforms import VISION, ImageTransform
from tks.extras import require

if TYPE_CHECKING:
    from torchvision.datasets import StanfordCars

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files; the default Fashion-MNIST root."""


class ImageArrays(Dataset):
    """``(transform(image), label)`` from images held in memory as uint8 ``[N, H, W]`` or ``[N, H, W, 3]``."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, transform: ImageTransform) -> None:
        self.images, self.targets, self.transform = images, np.asarray(targets, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(require("PIL.Image", VISION).fromarray(self.images[index])), int(self.targets[index])


class ImageFiles(Dataset):
    """``(transform(image), label)`` from image files, loaded as RGB."""

    def __init__(self, files: Sequence[Path], targets: Sequence[int], transform: ImageTransform) -> None:
        self.files, self.targets, self.transform = list(files), np.asarray(targets, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        folder = require("torchvision.datasets.folder", VISION)
        try:
            image = folder.pil_loader(self.files[index])
        except OSError as exc:  # PIL's UnidentifiedImageError is an OSError
            raise DatasetError(f"{self.files[index]}: not a readable image ({exc})") from None
        return self.transform(image), int(self.targets[index])


def _root(name: str, root: str | Path | None, layout: str) -> Path:
    if root is None or not Path(root).expanduser().is_dir():
        raise missing(name, root, layout)
    return Path(root).expanduser()


def _first_dir(root: Path, candidates: Sequence[str], marker: str) -> Path | None:
    """The first of ``root/candidate`` that holds ``marker``."""
    return next((root / c for c in candidates if (root / c / marker).exists()), None)


def _check_files(name: str, files: Sequence[Path], layout: str) -> None:
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise DatasetError(f"{name}: {len(absent)} listed image files are missing, e.g. {absent[0]}; expected {layout}")


# ------------------------------------------------------------------------------------------------- CIFAR-10/100

CIFAR_LAYOUT = {
    "cifar10": "cifar-10-batches-py/ holding data_batch_1..data_batch_5 and test_batch (the python version of "
    "https://www.cs.toronto.edu/~kriz/cifar.html), in the root or the root itself",
    "cifar100": "cifar-100-python/ holding train and test (the python version of "
    "https://www.cs.toronto.edu/~kriz/cifar.html), in the root or the root itself",
}
_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def read_cifar(name: str, split: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 32, 32, 3]`` uint8 and labels ``[N]`` of one CIFAR split, from the python pickle batches."""
    folder_name, train_files, test_files, label_key = _CIFAR_FILES[name]
    files = train_files if split == "train" else test_files
    base = _first_dir(_root(name, root, CIFAR_LAYOUT[name]), [folder_name, ""], files[0])
    if base is None:
        raise missing(name, root, CIFAR_LAYOUT[name])
    images, labels = [], []
    for file in files:
        path = base / file
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            data = np.asarray(batch["data"], dtype=np.uint8)
            batch_labels = np.asarray(batch[label_key], dtype=np.int64)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch_labels) != len(data):
                raise ValueError(f"data {data.shape} and {len(batch_labels)} labels")
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{name}: {path} is not a CIFAR python batch ({type(exc).__name__}: {exc})") from None
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


# ------------------------------------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST_LAYOUT = (
    "the IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in the root or root/FashionMNIST/raw/ "
    "(Debian: apt-get install dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist)"
)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped when the name ends in ``.gz``) as a uint8 array of its shape."""
    try:
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot read the IDX file ({exc})") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: IDX header ends early")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DatasetError(f"{path}: IDX body has {len(body)} bytes, its header says {shape}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def read_fashion_mnist(split: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` uint8 and labels ``[N]`` of one split (default root: the Debian install)."""
    base = _root("fashion-mnist", root if root is not None else FASHION_MNIST_DEBIAN, FASHION_MNIST_LAYOUT)
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{prefix}-{kind}-ubyte"
        path = next(
            (d / f for d in (base, base / "FashionMNIST" / "raw") for f in (name, name + ".gz") if (d / f).is_file()),
            None,
        )
        if path is None:
            raise missing("fashion-mnist", base, FASHION_MNIST_LAYOUT)
        arrays.append(read_idx(path))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"fashion-mnist: images {images.shape} and labels {labels.shape} in {base} do not match")
    return images, labels.astype(np.int64)


# ------------------------------------------------------------------------------------------------- ImageNet-1k

IMAGENET_LAYOUT = (
    "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (the validation images sorted into class folders, e.g. with the "
    "usual valprep.sh)"
)


def imagenet_files(split: str, root: str | Path | None) -> tuple[list[Path], list[int]]:
    """Image files and labels; classes are the sorted training folders, so val labels match train labels."""
    base = _root("imagenet", root, IMAGENET_LAYOUT)
    folder = base / ("train" if split == "train" else "val")
    if not (base / "train").is_dir() or not folder.is_dir():
        raise missing("imagenet", base, IMAGENET_LAYOUT)
    folder_tools = require("torchvision.datasets.folder", VISION)
    classes, class_to_idx = folder_tools.find_classes(base / "train")
    extra = sorted({p.name for p in folder.iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise DatasetError(f"imagenet: {folder} has class folders missing from train/: {extra[:5]}")
    samples = folder_tools.make_dataset(folder, class_to_idx, folder_tools.IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise missing("imagenet", folder, IMAGENET_LAYOUT)
    return [Path(p) for p, _ in samples], [label for _, label in samples]


# ------------------------------------------------------------------------------------------------- CUB-200-2011

CUB_LAYOUT = (
    "CUB_200_2011/ (or its contents) with images.txt, image_class_labels.txt, train_test_split.txt and images/ "
    "(CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/)"
)


def _id_table(path: Path, name: str) -> dict[str, str]:
    try:
        rows = [line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{name}: cannot read {path} ({exc})") from None
    if any(len(row) != 2 for row in rows):
        raise DatasetError(f"{name}: {path} must hold '<image id> <value>' lines")
    return {row[0]: row[1].strip() for row in rows}


def cub_files(split: str, root: str | Path | None) -> tuple[list[Path], list[int]]:
    """Image files and labels (0-based) of one split of CUB-200-2011, from its list files."""
    base = _first_dir(_root("cub200", root, CUB_LAYOUT), ["CUB_200_2011", ""], "images.txt")
    if base is None:
        raise missing("cub200", root, CUB_LAYOUT)
    paths, labels, is_train = (
        _id_table(base / f, "cub200") for f in ("images.txt", "image_class_labels.txt", "train_test_split.txt")
    )
    if not set(paths) == set(labels) == set(is_train):
        raise DatasetError(f"cub200: the image ids of the three list files in {base} differ")
    wanted = "1" if split == "train" else "0"
    ids = sorted((i for i in paths if is_train[i] == wanted), key=int)
    try:
        targets = [int(labels[i]) - 1 for i in ids]
    except ValueError:
        raise DatasetError(f"cub200: {base / 'image_class_labels.txt'} holds a non-integer label") from None
    files = [base / "images" / paths[i] for i in ids]
    _check_files("cub200", files, CUB_LAYOUT)
    return files, targets


# ------------------------------------------------------------------------------------------------- Stanford Dogs

DOGS_LAYOUT = (
    "Images/<synset>-<breed>/*.jpg with train_list.mat and test_list.mat beside it (images.tar and lists.tar from "
    "http://vision.stanford.edu/aditya86/ImageNetDogs/)"
)


def dogs_files(split: str, root: str | Path | None) -> tuple[list[Path], list[int]]:
    """Image files and labels (0-based) of one split of Stanford Dogs, from ``train_list.mat`` / ``test_list.mat``."""
    loadmat = require("scipy.io", "stanford-dogs").loadmat
    base = _root("stanford-dogs", root, DOGS_LAYOUT)
    lists = base / f"{split}_list.mat"
    if not lists.is_file() or not (base / "Images").is_dir():
        raise missing("stanford-dogs", base, DOGS_LAYOUT)
    try:
        mat = loadmat(lists, squeeze_me=True)
        names = [str(n) for n in np.atleast_1d(mat["file_list"])]
        targets = [int(t) - 1 for t in np.atleast_1d(mat["labels"])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"stanford-dogs: {lists} is not a Stanford Dogs list ({type(exc).__name__}: {exc})"
        ) from None
    if len(names) != len(targets):
        raise DatasetError(f"stanford-dogs: {lists} lists {len(names)} files but {len(targets)} labels")
    files = [base / "Images" / n for n in names]
    _check_files("stanford-dogs", files, DOGS_LAYOUT)
    return files, targets


# ------------------------------------------------------------------------------------------------- Stanford Cars

CARS_LAYOUT = (
    "stanford_cars/ (torchvision's layout) holding devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_train/, "
    "cars_test/ and cars_test_annos_withlabels.mat, in the root or the root itself"
)


def stanford_cars(split: str, root: str | Path | None, transform: ImageTransform) -> StanfordCars:
    """Torchvision's ``StanfordCars`` (it never downloads), after checking the files it needs are there."""
    base = _root("stanford-cars", root, CARS_LAYOUT)
    parent = base.parent if base.name == "stanford_cars" else base
    cars = parent / "stanford_cars"
    needed = [cars / "devkit" / "cars_meta.mat"]
    if split == "train":
        needed += [cars / "devkit" / "cars_train_annos.mat", cars / "cars_train"]
    else:
        needed += [cars / "cars_test_annos_withlabels.mat", cars / "cars_test"]
    if not all(p.exists() for p in needed):
        raise missing("stanford-cars", base, CARS_LAYOUT)
    try:
        dataset = require("torchvision.datasets", VISION).StanfordCars(parent, split=split, transform=transform)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"stanford-cars: {cars} holds unreadable annotations ({type(exc).__name__}: {exc})"
        ) from None
    # the labels as every other dataset here has them (samplers, the validation split); torchvision keeps them
    # only inside its (file, label) pairs
    dataset.targets = np.asarray([label for _, label in dataset._samples], dtype=np.int64)
    return dataset
