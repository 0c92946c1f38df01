import json
import math
from functools import partial

import pytest
import torch
from torch import nn

from tks.build import build_optimizer
from tks.checkpoint import CheckpointError, CheckpointRecord, load_checkpoint, save_checkpoint
from tks.config import Config, LossConfig, OptimConfig, to_dict
from tks.data import to_time_major
from tks.engine import EvalSets, FitState, Training, fit, lr_at
from tks.experiment import resume
from tks.hooks import AppendLog, SaveCheckpoint
from tks.inference import predict
from tks.losses import Criterion
from tks.models import create_model
from tks.seeding import rng_state


def run_files(run_dir):
    """The epoch-end hooks that write a run's checkpoint (with an empty config) and log."""
    return [SaveCheckpoint(run_dir, {}), AppendLog(run_dir)]


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
    record = CheckpointRecord(model={"w": torch.arange(3.0)}, config={"a": [1, 2], "b": None}, epoch=2)
    save_checkpoint(path, record)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.model["w"], torch.arange(3.0)) and loaded.config == {"a": [1, 2], "b": None}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind

    class Boom:  # fails while pickling, after the temporary file was opened
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, CheckpointRecord(model=Boom(), config={}))
    assert load_checkpoint(path).epoch == 2  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_corrupt_and_foreign_checkpoints_are_clear_errors(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, CheckpointRecord(model={}, config={}))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError, match="not a tks checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_checkpoint_of_an_older_version_loads_with_its_missing_fields_defaulted(tmp_path):
    # written before ``selected``, ``train_seconds`` and ``log`` were recorded, with an empty scaler state
    older = {
        "model": {"w": torch.ones(2)},
        "optimizer": {"state": {}, "param_groups": []},
        "scaler": {},
        "epoch": 3,
        "best_top1": 0.5,
        "best_epoch": 2,
        "rng": rng_state(),
        "config": {"model": {"name": "spiking_cnn"}},
    }
    torch.save(older, tmp_path / "checkpoint.pt")
    record = load_checkpoint(tmp_path / "checkpoint.pt")
    assert record.resumable and (record.epoch, record.best_top1, record.best_epoch) == (3, 0.5, 2)
    assert record.selected is None and record.train_seconds == 0.0 and record.log is None and record.scaler is None
    assert set(record.to_payload()) == set(older) | {"selected", "train_seconds", "rng_ranks", "log", "exit_rule"}
    with pytest.raises(CheckpointError, match="its weights do not fit model 'spiking_cnn'"):
        record.load_weights(nn.Linear(2, 2), "old.pt")


def test_resuming_a_checkpoint_without_training_state_is_refused(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", CheckpointRecord(model={}, config=to_dict(Config())))
    assert not load_checkpoint(tmp_path / "checkpoint.pt").resumable
    with pytest.raises(CheckpointError, match="holds a model but not the training state"):
        resume(tmp_path)


def test_fit_writes_log_and_checkpoint_and_learns(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > 0).long()  # a learnable rule
    batches = list(zip(x.split(16), y.split(16), strict=True))
    model = create_model("spiking_cnn", num_classes=2, in_channels=1)
    optim_cfg = OptimConfig(lr=5e-3, epochs=4, warmup_epochs=0)
    training = Training(
        model,
        Criterion(LossConfig()),
        build_optimizer(model, optim_cfg),
        optim_cfg,
        encode=partial(to_time_major, kind="static", num_steps=2),
        device=torch.device("cpu"),
    )
    hooks = [SaveCheckpoint(tmp_path, {"note": "test"}), AppendLog(tmp_path)]
    metrics = fit(training, batches, EvalSets(batches), hooks=hooks)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert lines[0]["tks_weight"] == 0.0 and lines[3]["tks_weight"] == pytest.approx(0.7 * 3 / 4)
    assert set(lines[0]["train"]) >= {"loss", "ce", "tks", "acc", "samples_per_s"}
    assert metrics["top1"] > 0.8 and len(metrics["per_step"]) == 2
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt.epoch == 4 and ckpt.config == {"note": "test"}
    logits, targets = predict(
        model, batches, encode=partial(to_time_major, kind="static", num_steps=3), device=torch.device("cpu")
    )
    assert logits.shape == (3, 64, 2) and torch.equal(targets, y)


def test_bf16_autocast_runs_the_layers_in_bf16_and_returns_fp32_logits(tmp_path):
    """Under precision="bf16" the linear layer computes in bfloat16 in training and in predict (autocast is on),
    while the weights stay fp32 and the logits handed to the loss and to the caller are fp32."""
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > 0).long()
    batches = list(zip(x.split(16), y.split(16), strict=True))
    model = create_model("spiking_cnn", num_classes=2, in_channels=1)
    seen = []  # (training?, dtype of the classifier's output) of every forward pass
    model.classifier[0].register_forward_hook(lambda module, args, out: seen.append((module.training, out.dtype)))
    optim_cfg = OptimConfig(lr=5e-3, epochs=1, warmup_epochs=0)
    encode = partial(to_time_major, kind="static", num_steps=2)
    before = model.classifier[0].weight.clone()
    training = Training(
        model,
        Criterion(LossConfig()),
        build_optimizer(model, optim_cfg),
        optim_cfg,
        encode=encode,
        device=torch.device("cpu"),
        precision="bf16",
    )
    fit(training, batches, EvalSets(batches), hooks=run_files(tmp_path))
    assert not torch.equal(before, model.classifier[0].weight)  # it trained
    assert model.classifier[0].weight.dtype == torch.float32  # autocast keeps fp32 master weights
    assert [dtype for training, dtype in seen if training] == [torch.bfloat16] * 2  # two training batches
    assert {dtype for training, dtype in seen if not training} == {torch.bfloat16}  # fit's own evaluation
    seen.clear()
    logits, _ = predict(model, batches, encode=encode, device=torch.device("cpu"), precision="bf16")
    assert seen == [(False, torch.bfloat16)] * 2
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    seen.clear()
    fp32_logits, _ = predict(model, batches, encode=encode, device=torch.device("cpu"), precision="fp32")
    assert seen == [(False, torch.float32)] * 2
    torch.testing.assert_close(logits, fp32_logits, rtol=0.05, atol=0.05)  # the same model, rounded to bf16


def disagreeing_sets():
    """A learnable rule, and two evaluation sets on the same images: val labelled by the rule, test by its inverse.

    The better the model learns, the higher its val top-1 and the lower its test top-1, so the two sets always
    disagree about the best epoch.
    """
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8)
    y = (x.mean((1, 2, 3)) > 0).long()
    train = list(zip(x.split(16), y.split(16), strict=True))
    val = [(x, y)]
    test = [(x, 1 - y)]
    return train, val, test


def fit_disagreeing(tmp_path, select_on, epochs=4, state=None):
    train, val, test = disagreeing_sets()
    torch.manual_seed(1)
    model = create_model("spiking_cnn", num_classes=2, in_channels=1)
    optim_cfg = OptimConfig(lr=5e-3, epochs=epochs, warmup_epochs=0)
    training = Training(
        model,
        Criterion(LossConfig(name="ce")),
        build_optimizer(model, optim_cfg),
        optim_cfg,
        encode=partial(to_time_major, kind="static", num_steps=2),
        device=torch.device("cpu"),
    )
    evaluated = EvalSets(test, val=val, train_eval=train[:2], select_on=select_on)
    metrics = fit(training, train, evaluated, state=state, hooks=run_files(tmp_path))
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    return model, metrics, log


def first_best(log, split):
    """The 1-based epoch of the first maximum of a logged top-1 curve."""
    return max(range(len(log)), key=lambda i: (log[i][split]["top1"], -i)) + 1


def test_best_checkpoint_follows_validation_top1_not_test_top1(tmp_path):
    _, metrics, log = fit_disagreeing(tmp_path, "val")
    best_val, best_test = first_best(log, "val"), first_best(log, "test")
    assert best_val != best_test  # the case this test is about
    assert load_checkpoint(tmp_path / "best.pt").epoch == metrics["best_epoch"] == best_val
    assert metrics["best_top1"] == log[best_val - 1]["val"]["top1"] and metrics["selected_on"] == "val"
    selected = metrics["selected"]
    assert selected["epoch"] == best_val and selected["selected_on"] == "val"
    assert selected["top1"] == log[best_val - 1]["test"]["top1"]  # the selected model's test metrics, reported
    assert {"top5", "aurc", "e_aurc", "ece", "per_step"} <= set(selected)
    assert metrics["top1"] == log[-1]["test"]["top1"]  # the top level stays the final model
    assert metrics["val"]["top1"] == log[-1]["val"]["top1"]
    assert metrics["train_eval"]["num_samples"] == 32 and set(log[0]["train_eval"]) == {
        "top1",
        "top5",
        "aurc",
        "per_step",
    }


def test_selecting_on_test_keeps_the_official_behaviour(tmp_path):
    _, metrics, log = fit_disagreeing(tmp_path, "test")
    best_test = first_best(log, "test")
    assert load_checkpoint(tmp_path / "best.pt").epoch == metrics["best_epoch"] == best_test
    assert metrics["best_top1"] == metrics["selected"]["top1"] == log[best_test - 1]["test"]["top1"]
    assert metrics["selected_on"] == metrics["selected"]["selected_on"] == "test"


def test_selecting_on_val_needs_validation_batches():
    batches = disagreeing_sets()[0]
    with pytest.raises(ValueError, match="select_on='val' needs a validation set"):
        EvalSets(batches, select_on="val")


def test_resumed_fit_without_recorded_selection_evaluates_best_pt(tmp_path):
    model, metrics, log = fit_disagreeing(tmp_path, "test", epochs=3)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert metrics["best_epoch"] < 3  # best.pt holds other weights than the final model
    state = FitState(epoch=3, best_top1=saved.best_top1, best_epoch=saved.best_epoch, selected=None)
    # nothing left to train: the selected metrics must come from best.pt's weights
    train, val, test = disagreeing_sets()
    optim_cfg = OptimConfig(lr=5e-3, epochs=3, warmup_epochs=0)
    final_weights = {k: v.clone() for k, v in model.state_dict().items()}
    training = Training(
        model,
        Criterion(LossConfig(name="ce")),
        build_optimizer(model, optim_cfg),
        optim_cfg,
        encode=partial(to_time_major, kind="static", num_steps=2),
        device=torch.device("cpu"),
    )
    evaluated = EvalSets(test, best_checkpoint=tmp_path / "best.pt")
    again = fit(training, train, evaluated, state=state, hooks=run_files(tmp_path))
    assert again["selected"]["top1"] == pytest.approx(log[metrics["best_epoch"] - 1]["test"]["top1"])
    assert again["selected"]["top1"] != again["top1"]
    assert all(torch.equal(final_weights[k], v) for k, v in model.state_dict().items())  # weights put back
