import json
import math
from functools import partial

import pytest
import torch
from torch import nn

from tks.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tks.config import LossConfig, OptimConfig
from tks.data import to_time_major
from tks.engine import build_optimizer, fit, lr_at, predict
from tks.losses import Criterion
from tks.models import create_model


def test_lr_schedule_matches_timm_per_epoch_formula():
    cfg = OptimConfig(lr=6.25e-4, epochs=600, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5)
    assert lr_at(0, cfg) == 1e-6
    assert lr_at(2, cfg) == pytest.approx(1e-6 + 2 * (6.25e-4 - 1e-6) / 5)
    # after warmup the cosine is not shifted by the warmup (timm warmup_prefix=False)
    assert lr_at(5, cfg) == pytest.approx(1e-5 + 0.5 * (6.25e-4 - 1e-5) * (1 + math.cos(math.pi * 5 / 600)))
    assert lr_at(300, cfg) == pytest.approx(1e-5 + 0.5 * (6.25e-4 - 1e-5))
    assert lr_at(0, OptimConfig(lr=0.1, warmup_epochs=0)) == pytest.approx(0.1)


def test_weight_decay_only_on_weight_tensors():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    opt = build_optimizer(model, OptimConfig(weight_decay=0.01))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.01 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[3].weight)}
    assert isinstance(opt, torch.optim.AdamW)
    assert isinstance(build_optimizer(model, OptimConfig(name="adam")), torch.optim.Adam)


def test_checkpoint_round_trip_and_atomicity(tmp_path):
    path = tmp_path / "checkpoint.pt"
    payload = {"model": {"w": torch.arange(3.0)}, "config": {"a": [1, 2], "b": None}, "epoch": 2}
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0)) and loaded["config"] == {"a": [1, 2], "b": None}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind

    class Boom:  # fails while pickling, after the temporary file was opened
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"model": Boom(), "config": {}})
    assert load_checkpoint(path)["epoch"] == 2  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_corrupt_and_foreign_checkpoints_are_clear_errors(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {}, "config": {}})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError, match="not a tks checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_fit_writes_log_and_checkpoint_and_learns(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > 0).long()  # a learnable rule
    batches = list(zip(x.split(16), y.split(16), strict=True))
    model = create_model("spiking_cnn", num_classes=2, in_channels=1)
    optim_cfg = OptimConfig(lr=5e-3, epochs=4, warmup_epochs=0)
    metrics = fit(
        model,
        batches,
        batches,
        Criterion(LossConfig()),
        build_optimizer(model, optim_cfg),
        optim_cfg,
        encode=partial(to_time_major, kind="static", num_steps=2),
        device=torch.device("cpu"),
        run_dir=tmp_path,
        checkpoint_extra={"config": {"note": "test"}},
    )
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert lines[0]["tks_weight"] == 0.0 and lines[3]["tks_weight"] == pytest.approx(0.7 * 3 / 4)
    assert set(lines[0]["train"]) >= {"loss", "ce", "tks", "acc", "samples_per_s"}
    assert metrics["top1"] > 0.8 and len(metrics["per_step"]) == 2
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 4 and ckpt["config"] == {"note": "test"}
    logits, targets = predict(
        model, batches, encode=partial(to_time_major, kind="static", num_steps=3), device=torch.device("cpu")
    )
    assert logits.shape == (3, 64, 2) and torch.equal(targets, y)


def test_bf16_autocast_trains_and_predicts_in_fp32_logits(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > 0).long()
    batches = list(zip(x.split(16), y.split(16), strict=True))
    model = create_model("spiking_cnn", num_classes=2, in_channels=1)
    optim_cfg = OptimConfig(lr=5e-3, epochs=1, warmup_epochs=0)
    encode = partial(to_time_major, kind="static", num_steps=2)
    before = model.classifier[0].weight.clone()
    fit(
        model,
        batches,
        batches,
        Criterion(LossConfig()),
        build_optimizer(model, optim_cfg),
        optim_cfg,
        encode=encode,
        device=torch.device("cpu"),
        precision="bf16",
        run_dir=tmp_path,
        checkpoint_extra={"config": {}},
    )
    assert not torch.equal(before, model.classifier[0].weight)  # it trained
    assert model.classifier[0].weight.dtype == torch.float32  # autocast keeps fp32 master weights
    logits, _ = predict(model, batches, encode=encode, device=torch.device("cpu"), precision="bf16")
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
