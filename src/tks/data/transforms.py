"""The paper's image transforms (docs/reference.md §5.2), built from torchvision.

Training presets (``augment``), for CIFAR-10/100 (32 px) | ImageNet, CUB, Dogs, Cars (224 px) | Fashion-MNIST (28 px):

- ``crop_flip``: RandomCrop(32, pad 4) + flip (the non-* TKS rows) | RandomResizedCrop(224) + flip |
  RandomCrop(28, pad 4) + flip.
- ``randaugment`` (CIFAR only): crop_flip + RandAugment(2 ops, m9) + RandomErasing(0.25) (the TKS* rows).
- ``autoaugment`` (CIFAR only): crop_flip + AutoAugment(CIFAR-10 policy) + Cutout(16) (the TET*/TEBN* recipe).
- ``flip`` (32 and 28 px): RandomHorizontalFlip only.
- ``official``: ``randaugment`` | ImageNet: crop_flip + ColorJitter(0.4), the others: ``crop_flip`` | ``none``.
- ``none``: the test transform.

Test transform: ToTensor + Normalize (32 and 28 px); Resize(256) + CenterCrop(224) + ToTensor + Normalize.

RandAugment is torchvision's with 11 magnitude bins, so m9 is 0.9 of each operation's range as in timm's
``rand-m9`` (timm's op list and its magnitude noise ``mstd0.5`` differ slightly). RandomErasing fills with random
normal values per pixel (timm's ``mode='pixel'``). ImageNet's random interpolation (timm) picks bilinear or bicubic
for each crop.

Normalisation (``normalization``): ``dataset`` uses the dataset's own statistics for train and test (the default);
``imagenet`` uses ImageNet's for both; ``official`` reproduces the official code: ImageNet statistics for training
and CIFAR-10's for testing (on CIFAR-10 and CIFAR-100 alike; elsewhere it is ``imagenet``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch
from torch import Tensor

from tks.errors import OptionError
from tks.extras import require

VISION = "image datasets"

ImageTransform = Callable[..., Tensor]
Stats = tuple[tuple[float, ...], tuple[float, ...]]

STATS: dict[str, Stats] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # the official code's test statistics
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
}

SMALL_PRESETS = ("official", "none", "flip", "crop_flip", "randaugment", "autoaugment")
LARGE_PRESETS = ("official", "none", "crop_flip")
NORMALIZATIONS = ("dataset", "imagenet", "official")


class Cutout(torch.nn.Module):
    """Zero one ``length x length`` square at a uniformly random centre, clipped at the borders (DeVries 2017).

    Input and output: ``[C, H, W]``.
    """

    def __init__(self, length: int = 16) -> None:
        super().__init__()
        self.length = length

    def forward(self, image: Tensor) -> Tensor:
        """Return a copy of ``image`` with the square set to 0."""
        h, w = image.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        half = self.length // 2
        out = image.clone()
        out[..., max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half] = 0
        return out


def test_stats(dataset_stats: str, normalization: str) -> Stats:
    """The (mean, std) the test images of a dataset are normalised with, for a ``normalization`` choice."""
    return _stats(dataset_stats, normalization)[1]


def _stats(dataset_stats: str, normalization: str) -> tuple[Stats, Stats]:
    """(train, test) statistics."""
    if normalization == "dataset":
        return STATS[dataset_stats], STATS[dataset_stats]
    if normalization == "official" and dataset_stats in ("cifar10", "cifar100"):
        return STATS["imagenet"], STATS["cifar10"]
    return STATS["imagenet"], STATS["imagenet"]


def _torchvision() -> ModuleType:
    """``torchvision.transforms``, imported on first use (the ``vision`` extra)."""
    return require("torchvision.transforms", VISION)


def _finish(stats: Stats) -> list:
    transforms = _torchvision()
    return [transforms.ToTensor(), transforms.Normalize(*stats)]


def small_image_transforms(
    dataset_stats: str, size: int, augment: str, normalization: str
) -> tuple[ImageTransform, ImageTransform]:
    """(train, test) transforms of 32x32 CIFAR or 28x28 Fashion-MNIST PIL images to tensors ``[C, size, size]``.

    Args:
        dataset_stats: key of ``STATS``.
        size: the image side.
        augment: a preset of the module docstring's table.
        normalization: ``dataset``, ``imagenet`` or ``official``.
    """
    transforms = _torchvision()
    train_stats, test_stats = _stats(dataset_stats, normalization)
    crop_flip = [transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip()]
    if augment == "official":
        augment = "randaugment" if dataset_stats in ("cifar10", "cifar100") else "none"
    if augment == "none":
        train = _finish(train_stats)
    elif augment == "flip":
        train = [transforms.RandomHorizontalFlip(), *_finish(train_stats)]
    elif augment == "crop_flip":
        train = crop_flip + _finish(train_stats)
    elif augment == "randaugment":
        bicubic = transforms.InterpolationMode.BICUBIC
        randaugment = transforms.RandAugment(2, 9, num_magnitude_bins=11, interpolation=bicubic)
        train = [*crop_flip, randaugment, *_finish(train_stats), transforms.RandomErasing(0.25, value="random")]
    elif augment == "autoaugment":
        autoaugment = transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10)
        train = [*crop_flip, autoaugment, *_finish(train_stats), Cutout(16)]
    else:
        raise OptionError(f"augment must be one of {list(SMALL_PRESETS)}, got {augment!r}")
    return transforms.Compose(train), transforms.Compose(_finish(test_stats))


def large_image_transforms(augment: str, *, color_jitter: bool) -> tuple[ImageTransform, ImageTransform]:
    """(train, test) transforms of ImageNet-style PIL images to tensors ``[3, 224, 224]``.

    Every normalisation choice means ImageNet statistics for train and test here.

    Args:
        augment: ``official``, ``none`` or ``crop_flip``.
        color_jitter: add ColorJitter(0.4) to the ``official`` preset (ImageNet).
    """
    transforms = _torchvision()
    modes = transforms.InterpolationMode
    stats = STATS["imagenet"]
    test = transforms.Compose(
        [transforms.Resize(256, interpolation=modes.BICUBIC), transforms.CenterCrop(224), *_finish(stats)]
    )
    crop = transforms.RandomChoice(
        [transforms.RandomResizedCrop(224, interpolation=mode) for mode in (modes.BILINEAR, modes.BICUBIC)]
    )
    if augment == "none":
        return test, test
    if augment == "crop_flip" or (augment == "official" and not color_jitter):
        return transforms.Compose([crop, transforms.RandomHorizontalFlip(), *_finish(stats)]), test
    if augment == "official":
        jitter = transforms.ColorJitter(0.4, 0.4, 0.4)
        return transforms.Compose([crop, transforms.RandomHorizontalFlip(), jitter, *_finish(stats)]), test
    raise OptionError(f"augment must be one of {list(LARGE_PRESETS)}, got {augment!r}")
