"""The validation split and the train-eval subset: stratified, fixed, disjoint, read with the test transform."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from data_files import write_fashion_mnist

from tks.config import ConfigError, DataConfig, load_config
from tks.data.loading import dataset_targets, load_split, load_training_data, make_loader
from tks.data.splits import holdout, stratified_subset
from tks.distributed import Dist


def test_stratified_subset_takes_each_class_in_proportion_by_largest_remainder():
    targets = np.array([0] * 50 + [1] * 30 + [2] * 20)
    chosen = stratified_subset(targets, 10, seed=3)
    assert np.bincount(targets[chosen]).tolist() == [5, 3, 2]
    # 7 * (0.5, 0.3, 0.2) = (3.5, 2.1, 1.4): floors 3, 2, 1 and the one left goes to the largest remainder (class 0)
    assert np.bincount(targets[stratified_subset(targets, 7, seed=3)]).tolist() == [4, 2, 1]
    # equal remainders: the smaller label first; 3 * (1/3 each) = 1 each, 2 -> (1, 1, 0)
    even = np.repeat([0, 1, 2], 4)
    assert np.bincount(even[stratified_subset(even, 2, seed=0)], minlength=3).tolist() == [1, 1, 0]
    assert chosen.dtype == np.int64 and np.all(np.diff(chosen) > 0)  # sorted, no repeats
    assert len(stratified_subset(targets, 0, seed=0)) == 0 and len(stratified_subset(targets, 100, seed=0)) == 100
    with pytest.raises(ValueError, match="size must be in"):
        stratified_subset(targets, 101, seed=0)


def test_stratified_subset_depends_on_its_seed_only():
    targets = np.random.default_rng(0).integers(0, 10, size=1000)
    torch.manual_seed(1)
    np.random.seed(1)
    first = stratified_subset(targets, 100, seed=5)
    torch.manual_seed(2)
    np.random.seed(2)  # the global generators play no part
    assert np.array_equal(first, stratified_subset(targets, 100, seed=5))
    assert not np.array_equal(first, stratified_subset(targets, 100, seed=6))


def test_holdout_is_disjoint_and_complete():
    targets = np.random.default_rng(0).integers(0, 4, size=200)
    rest, held = holdout(targets, 30, seed=1)
    assert len(held) == 30 and len(rest) == 170
    assert not set(rest) & set(held) and set(rest) | set(held) == set(range(200))


def digits_cfg(**changes):
    return replace(DataConfig(), **changes)


def dataset_indices(subset):
    return np.asarray(subset.indices)


def test_validation_split_of_digits_is_stratified_fixed_and_disjoint():
    data = load_training_data(digits_cfg(val_size=300, train_eval_size=200))
    full = load_training_data(digits_cfg()).train
    targets = dataset_targets(full)
    val, train, train_eval = (dataset_indices(d) for d in (data.val, data.train, data.train_eval))
    assert (len(val), len(train), len(train_eval)) == (300, 1437 - 300, 200)
    assert not set(val) & set(train) and set(val) | set(train) == set(range(1437))
    assert set(train_eval) <= set(train)  # measured on images trained on, never on validation images
    share = np.bincount(targets, minlength=10) / len(targets)
    assert np.abs(np.bincount(targets[val], minlength=10) - 300 * share).max() < 1  # stratified
    assert np.abs(np.bincount(targets[train_eval], minlength=10) - 200 * share).max() < 1
    assert np.array_equal(data.val.targets, targets[val]) and np.array_equal(data.train.targets, targets[train])
    # the same images whatever the run's seed and global random state
    torch.manual_seed(123)
    np.random.seed(123)
    again = load_training_data(digits_cfg(val_size=300, train_eval_size=200))
    assert np.array_equal(dataset_indices(again.val), val) and np.array_equal(dataset_indices(again.train), train)
    assert np.array_equal(dataset_indices(again.train_eval), train_eval)
    x, y = data.val[0]
    assert torch.equal(x, full[int(val[0])][0]) and y == targets[val[0]]


def test_train_limit_draws_from_the_images_left_after_the_split():
    limited = load_training_data(digits_cfg(val_size=300, train_limit=500, train_eval_size=500))
    held = set(dataset_indices(limited.val))
    train = dataset_indices(limited.train)
    assert len(train) == 500 and not set(train) & held
    assert set(dataset_indices(limited.train_eval)) == set(train)  # at most every image trained on
    message = r"data.train_eval_size=501 is more than the 500 images trained on \(digits, after val_size and train_"
    with pytest.raises(ConfigError, match=message):
        load_training_data(digits_cfg(val_size=300, train_limit=500, train_eval_size=501))
    # without a split, train_limit keeps the subset it always had: the first of a fixed permutation
    old = torch.randperm(1437, generator=torch.Generator().manual_seed(0))[:500].tolist()
    assert dataset_indices(load_training_data(digits_cfg(train_limit=500)).train).tolist() == old
    train_only, _ = load_split(digits_cfg(val_size=300), "train")
    assert len(train_only) == 1137


def test_val_size_that_leaves_no_training_image_is_a_config_error():
    with pytest.raises(ConfigError, match="data.val_size=1437 leaves no training image"):
        load_training_data(digits_cfg(val_size=1437))
    with pytest.raises(ConfigError, match="data.val_size must be >= 1"):
        load_config(None, ["data.val_size=0"])


def test_validation_and_train_eval_images_get_the_test_transform(tmp_path):
    root = str(write_fashion_mnist(tmp_path / "fm", n=40))
    cfg = digits_cfg(name="fashion-mnist", root=root, augment="crop_flip", val_size=10, train_eval_size=10)
    data = load_training_data(cfg)
    test_like = load_training_data(replace(cfg, augment="none", val_size=None, train_eval_size=None)).train
    for subset in (data.val, data.train_eval):
        for position, index in enumerate(subset.indices):
            assert torch.equal(subset[position][0], test_like[index][0])  # no crop, no flip: every read the same
    # the training images themselves are augmented: 20 reads of one image are not all the same
    image = data.train[0][0]
    torch.manual_seed(0)
    assert any(not torch.equal(data.train[0][0], image) for _ in range(20))


def test_distributed_sampler_shares_out_the_training_images_only():
    cfg = digits_cfg(val_size=300)
    data = load_training_data(cfg)
    seen = []
    for rank in (0, 1):
        loader = make_loader(
            data.train, cfg, train=True, seed=0, device=torch.device("cpu"), dist=Dist(rank=rank, world_size=2)
        )
        seen.append({data.train.indices[i] for i in loader.sampler})
    assert len(seen[0] & seen[1]) <= 1  # DistributedSampler pads 1,137 images to two halves of 569 with one repeat
    assert seen[0] | seen[1] == set(data.train.indices)
    assert not (seen[0] | seen[1]) & set(data.val.indices)


def largest_remainder_quota(targets, size):
    """Samples per class by the largest-remainder method in exact fractions, ties to the smaller label."""
    from fractions import Fraction

    labels, counts = np.unique(targets, return_counts=True)
    exact = [Fraction(size * int(c), len(targets)) for c in counts]
    quota = [int(e) for e in exact]  # floor: every share is >= 0
    by_remainder = sorted(range(len(labels)), key=lambda i: (-(exact[i] - quota[i]), labels[i]))
    for i in by_remainder[: size - sum(quota)]:
        quota[i] += 1
    return dict(zip(labels.tolist(), quota, strict=True))


@pytest.mark.parametrize("seed", range(4))
def test_stratified_subset_quota_equals_the_largest_remainder_method(seed):
    # 40 classes of 4, 8 or 12 samples: many classes share a remainder, so the tie rule decides (an unstable
    # sort would hand the extra samples to other classes than the smaller labels)
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(40), rng.choice([4, 8, 12], 40))
    rng.shuffle(targets)
    for size in (7, 50, 101, len(targets) // 3):
        chosen = stratified_subset(targets, size, seed=seed)
        got = dict(zip(*np.unique(targets[chosen], return_counts=True), strict=True))
        expected = {label: q for label, q in largest_remainder_quota(targets, size).items() if q}
        assert {int(k): int(v) for k, v in got.items()} == expected, size


def test_stratified_subset_and_holdout_of_no_samples():
    empty = stratified_subset(np.array([], dtype=np.int64), 0, seed=0)
    assert empty.dtype == np.int64 and empty.shape == (0,)
    rest, held = holdout(np.array([], dtype=np.int64), 0, seed=0)
    assert rest.dtype == held.dtype == np.int64 and rest.shape == held.shape == (0,)
    none = stratified_subset(np.array([3, 1, 3]), 0, seed=0)
    assert none.dtype == np.int64 and none.shape == (0,)
