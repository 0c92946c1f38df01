import re

import numpy as np
import pytest
import torch

from tks.data import build_dataset, dataset_info, list_datasets, to_time_major
from tks.errors import UnknownNameError


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, info = build_dataset("digits", "train")
    test, _ = build_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert info.num_classes == 10 and info.in_channels == 1 and info.input_size == (8, 8) and info.kind == "static"
    x, y = train.tensors
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    counts = torch.bincount(test.tensors[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: about 36 per class
    # normalised with the training statistics
    assert x.mean().item() == pytest.approx(0.0, abs=1e-5) and x.std().item() == pytest.approx(1.0, abs=1e-3)
    # disjoint: no test image equals a training image with a different index set, and the split is repeatable
    train_rows = {tuple(np.round(r.numpy().ravel(), 4)) for r in x}
    test_rows = [tuple(np.round(r.numpy().ravel(), 4)) for r in test.tensors[0]]
    assert sum(r in train_rows for r in test_rows) <= 2  # the digits set holds a couple of exact duplicates
    assert torch.equal(build_dataset("digits", "test")[0].tensors[0], test.tensors[0])


def test_registry_errors():
    assert "digits" in list_datasets()
    with pytest.raises(UnknownNameError, match="unknown dataset 'digit' \\(did you mean 'digits'\\?\\)"):
        dataset_info("digit")
    with pytest.raises(ValueError, match="split must be"):
        build_dataset("digits", "val")


def test_to_time_major_static_and_events():
    x = torch.randn(5, 3, 8, 8)
    t = to_time_major(x, "static", 4)
    assert t.shape == (4, 5, 3, 8, 8) and all(torch.equal(t[i], x) for i in range(4))
    frames = torch.randn(5, 10, 2, 8, 8)  # [B, T, 2, H, W]
    e = to_time_major(frames, "events", 3)
    assert e.shape == (3, 5, 2, 8, 8) and torch.equal(e[2], frames[:, 2])
    with pytest.raises(ValueError, match="only 10"):
        to_time_major(frames, "events", 11)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        to_time_major(x, "static", 0)


def test_to_time_major_at_its_boundaries():
    image = torch.arange(6.0).view(1, 1, 2, 3)  # [B, C, H, W]
    one = to_time_major(image, "static", 1)  # T = 1 is a run like any other
    assert one.shape == (1, 1, 1, 2, 3) and torch.equal(one[0], image)
    frames = torch.arange(12.0).view(1, 2, 1, 2, 3)  # [B, T'=2, C, H, W]
    assert torch.equal(to_time_major(frames, "events", 2), frames.transpose(0, 1))  # all the frames there are
    assert torch.equal(to_time_major(frames, "events", 1), frames[:, :1].transpose(0, 1))
    for call, message in [
        (lambda: to_time_major(image, "static", 0), "num_steps must be >= 1, got 0"),
        (lambda: to_time_major(frames, "events", 3), "asked for 3 steps but the event frames have only 2"),
        (lambda: to_time_major(image, "video", 2), "kind must be 'static' or 'events', got 'video'"),
    ]:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            call()
