"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, 10 classes, no download.

A fixed stratified 80/20 split (1,437 train / 360 test) with pixel values 0..16 scaled to [0, 1] and normalised by
the training-set mean and standard deviation, so train and test see the same transform.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch.utils.data import TensorDataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@cache
def _load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # [N, 8, 8] in [0, 1]
    return train_test_split(
        images, bunch.target.astype(np.int64), test_size=TEST_FRACTION, stratify=bunch.target, random_state=SPLIT_SEED
    )


def digits(split: str) -> TensorDataset:
    """The digits split as a ``TensorDataset`` of images ``[N, 1, 8, 8]`` (float32) and labels ``[N]`` (int64).

    Args:
        split: ``"train"`` or ``"test"``.
    """
    x_train, x_test, y_train, y_test = _load()
    mean, std = x_train.mean(), x_train.std()
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    images = torch.from_numpy((x - mean) / std).unsqueeze(1)
    return TensorDataset(images, torch.from_numpy(y))
