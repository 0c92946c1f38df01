"""Fixed, stratified subsets of a training set: the validation split and the clean-training-accuracy subset.

Both are drawn by ``stratified_subset`` from the labels alone, with a generator of their own seeded by a constant,
so that every run (any seed, any method, any process) holds out the same images.
"""

from __future__ import annotations

import numpy as np

VAL_SEED = 1
"""Seed of the validation split's generator (data.val_size)."""
TRAIN_EVAL_SEED = 2
"""Seed of the generator that picks the clean-training-accuracy subset (data.train_eval_size)."""


def stratified_subset(targets: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of ``size`` samples, drawn from every class in proportion to its share of ``targets``.

    A class of n_c of the N samples gives floor(size * n_c / N) samples; the samples still missing to reach ``size``
    go one each to the classes with the largest remainders (ties: the smaller label). Within a class the samples are
    the first of a random permutation from ``numpy.random.default_rng(seed)``, classes taken in label order, so the
    result depends on the labels, ``size`` and ``seed`` only.

    Args:
        targets: ``[N]`` integer labels.
        size: how many samples, 0 <= size <= N.
        seed: seed of the generator.

    Returns:
        ``[size]`` int64 indices into ``targets``, in increasing order.
    """
    targets = np.asarray(targets)
    if not 0 <= size <= len(targets):
        raise ValueError(f"size must be in [0, {len(targets)}], got {size}")
    labels, counts = np.unique(targets, return_counts=True)
    exact = size * counts / len(targets) if len(targets) else counts.astype(float)
    quota = np.floor(exact).astype(np.int64)
    # largest remainders first; a stable sort keeps the smaller label first among equal remainders
    by_remainder = np.argsort(-(exact - quota), kind="stable")
    quota[by_remainder[: size - int(quota.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(targets == label))[:q] for label, q in zip(labels, quota, strict=True)]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.empty(0, dtype=np.int64)


def holdout(targets: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(N)`` into the rest and a held-out ``stratified_subset`` of ``size`` samples.

    Returns:
        ``(rest, held)``: disjoint int64 indices in increasing order that together cover every sample.
    """
    held = stratified_subset(targets, size, seed)
    rest = np.setdiff1d(np.arange(len(targets)), held, assume_unique=True)
    return rest.astype(np.int64), held
