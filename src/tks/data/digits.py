"""The handwritten digits bundled with tks: 1,797 real 8x8 images, 10 classes, no download, no scikit-learn.

``digits.npz`` (48 KB, shipped in the package) holds scikit-learn's ``load_digits()`` data, the test part of the
UCI "Optical Recognition of Handwritten Digits" set (Alpaydin and Kaynak 1998, CC BY 4.0; docs/datasets.md), as
uint8 pixel counts 0..16, with the fixed stratified 80/20 split that ``sklearn.model_selection.train_test_split(
test_size=0.2, stratify=labels, random_state=0)`` draws (1,437 train / 360 test, in its order). Pixels are scaled
to [0, 1] and normalised by the training-set mean and standard deviation, so train and test see the same
transform. tests/test_data_registry.py checks the file against scikit-learn where it is installed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

BUNDLED = Path(__file__).with_name("digits.npz")
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@cache
def digit_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bundled data as ``(images uint8 [1797, 8, 8] in 0..16, labels int64 [1797], train, test indices)``."""
    with np.load(BUNDLED, allow_pickle=False) as f:
        return f["images"], f["labels"].astype(np.int64), f["train"].astype(np.int64), f["test"].astype(np.int64)


def digits_normalization() -> tuple[tuple[float], tuple[float]]:
    """The (mean, std) of the scaled training pixels, which both splits are normalised with."""
    images, _, train, _ = digit_arrays()
    scaled = (images[train] / 16.0).astype(np.float32)
    return (float(scaled.mean()),), (float(scaled.std()),)


def digits(split: str) -> TensorDataset:
    """The digits split as a ``TensorDataset`` of images ``[N, 1, 8, 8]`` (float32) and labels ``[N]`` (int64).

    Args:
        split: ``"train"`` or ``"test"``.
    """
    images, labels, train, test = digit_arrays()
    scaled = (images / 16.0).astype(np.float32)  # [N, 8, 8] in [0, 1]
    mean, std = scaled[train].mean(), scaled[train].std()  # float32, as digits_normalization gives them
    index = train if split == "train" else test
    return TensorDataset(torch.from_numpy((scaled[index] - mean) / std).unsqueeze(1), torch.from_numpy(labels[index]))
