"""The resume path of tks.experiment (``resume`` and ``_restore``), in-process and on tiny digits runs (issue 26).

Every check has an independent reference: the uninterrupted run of the same config (a resumed run must end as it
does), the files on disk before the resume (a finished run is left as it was), the checkpoint itself (what is put
back into the model, optimizer, scaler and generators), or the error a hand-broken folder must give.
"""

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tks.experiment
from tks.checkpoint import CheckpointError, CheckpointRecord, load_checkpoint, save_checkpoint
from tks.checkpoint_model import stored_config
from tks.config import load_config, to_dict
from tks.engine import FitState
from tks.experiment import resume, train
from tks.runfiles import RunFileError, write_config
from tks.seeding import rng_state

EPOCHS, STOP_AFTER = 3, 1
QUICK = [
    "data.train_limit=256",
    "data.batch_size=64",
    "data.test_limit=64",
    "data.num_steps=2",
    f"optim.epochs={EPOCHS}",
    "optim.warmup_epochs=0",
    "run.deterministic=true",  # resume's bit-for-bit promise on the CPU
    "run.progress=false",
    "run.device=cpu",
]
TIMINGS = ("elapsed_s", "process_cpu_s")


def only_run(out: Path) -> Path:
    """The one run folder under ``out``."""
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def untimed(record: dict) -> dict:
    """An epoch's log record without what differs between sessions (timings).

    Args:
        record: a line of ``log.jsonl`` as a dict, or the record a hook was handed.
    """
    record = json.loads(json.dumps(record))
    for key in TIMINGS:
        record.pop(key, None)
    record["train"].pop("samples_per_s", None)
    return record


def logged(run_dir: Path) -> list[dict]:
    """The run's ``log.jsonl`` records without their timings."""
    return [untimed(json.loads(line)) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def final_metrics(run_dir: Path) -> dict:
    """``metrics.json`` without its timings and sessions."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    del metrics["train_seconds"], metrics["provenance"]
    return metrics


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of ``folder`` with its modification time and bytes."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}


def assert_same_weights(ours: dict, reference: dict) -> None:
    """Assert two state dicts hold the same tensors under the same names."""
    assert ours.keys() == reference.keys()
    differ = [k for k in reference if not torch.equal(ours[k], reference[k])]
    assert not differ, f"weights differ: {differ}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted tiny run and one stopped after epoch ``STOP_AFTER`` (its checkpoint and log line written)."""
    root = tmp_path_factory.mktemp("resume_path")
    straight = train(load_config(None, [*QUICK, f"run.out_dir={root / 'straight'}"])).run_dir

    def stop(record: dict) -> None:
        if record["epoch"] == STOP_AFTER:  # after the epoch's checkpoint and log line: hooks run in that order
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, [*QUICK, f"run.out_dir={root / 'stopped'}"]), on_epoch_end=stop)
    return straight, only_run(root / "stopped")


@pytest.fixture
def stopped(runs, tmp_path) -> Path:
    """A fresh copy of the stopped run, alone in its parent folder."""
    return Path(shutil.copytree(runs[1], tmp_path / "out" / runs[1].name))


@pytest.fixture
def finished(runs, tmp_path) -> Path:
    """A fresh copy of the uninterrupted (finished) run, alone in its parent folder."""
    return Path(shutil.copytree(runs[0], tmp_path / "out" / runs[0].name))


def test_a_resumed_run_ends_as_the_uninterrupted_one_in_its_own_folder(runs, stopped):
    straight = runs[0]
    first_session = load_checkpoint(stopped / "checkpoint.pt").train_seconds
    seen = []
    result = resume(str(stopped), on_epoch_end=seen.append)
    assert result.run_dir == stopped and not result.already_finished
    assert [p.name for p in stopped.parent.iterdir()] == [stopped.name]  # continued there, no new folder
    assert [r["epoch"] for r in seen] == list(range(STOP_AFTER + 1, EPOCHS + 1))  # the caller hears each new epoch
    assert [untimed(r) for r in seen] == logged(straight)[STOP_AFTER:]
    assert logged(stopped) == logged(straight)
    reference = load_checkpoint(straight / "checkpoint.pt").model
    assert_same_weights(load_checkpoint(stopped / "checkpoint.pt").model, reference)
    assert_same_weights(result.model.state_dict(), reference)  # the model handed back too
    assert final_metrics(stopped) == final_metrics(straight)
    assert result.metrics["top1"] == final_metrics(straight)["top1"]
    sessions = json.loads((stopped / "metrics.json").read_text())["provenance"]["sessions"]
    assert [(s["first_epoch"], s["last_epoch"]) for s in sessions] == [(0, STOP_AFTER), (STOP_AFTER, EPOCHS)]
    assert json.loads((stopped / "metrics.json").read_text())["train_seconds"] > first_session > 0  # both counted


def test_the_resume_mends_a_lost_log_line_and_removes_cut_writes(runs, stopped):
    saved = load_checkpoint(stopped / "checkpoint.pt")
    assert saved.epoch == STOP_AFTER and saved.log["epoch"] == STOP_AFTER
    # the crash came after the checkpoint, before its log line (cut in the middle), and cut two other writes
    (stopped / "log.jsonl").write_text(json.dumps(saved.log)[:7])
    (stopped / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    (stopped / ".best.pt.z3.tmp").write_bytes(b"half a copy")
    resume(stopped)
    assert logged(stopped) == logged(runs[0])
    assert json.loads((stopped / "log.jsonl").read_text().splitlines()[0]) == saved.log  # the checkpoint's own line
    assert not list(stopped.glob(".*.tmp"))


def test_the_resume_of_a_finished_run_changes_nothing_and_returns_its_metrics(finished):
    before = snapshot(finished)
    seen = []
    result = resume(str(finished), on_epoch_end=seen.append)
    assert result.already_finished is True and result.model is None and seen == []
    assert result.run_dir == finished and isinstance(result.run_dir, Path)
    assert result.metrics == json.loads((finished / "metrics.json").read_text())
    assert snapshot(finished) == before


def test_a_run_saved_at_its_last_epoch_without_its_metrics_is_finished_by_the_resume(runs, finished):
    (finished / "metrics.json").unlink()  # the crash came after the last checkpoint, before metrics.json
    seen = []
    result = resume(finished, on_epoch_end=seen.append)
    assert not result.already_finished and seen == []  # no epoch trained again
    assert logged(finished) == logged(runs[0])
    assert final_metrics(finished) == final_metrics(runs[0])
    assert result.metrics["top1"] == final_metrics(runs[0])["top1"]


def test_a_stored_config_with_more_epochs_is_trained_on_though_metrics_say_finished(finished):
    record = load_checkpoint(finished / "checkpoint.pt")
    record.config["optim"]["epochs"] = EPOCHS + 1
    save_checkpoint(finished / "checkpoint.pt", record)
    write_config(finished, stored_config(record, finished / "checkpoint.pt"))  # the folder's config says so too
    seen = []
    result = resume(finished, on_epoch_end=seen.append)
    assert not result.already_finished and [r["epoch"] for r in seen] == [EPOCHS + 1]
    assert json.loads((finished / "metrics.json").read_text())["epoch"] == EPOCHS + 1


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_a_broken_metrics_file_stops_the_resume_before_any_work(stopped, content):
    (stopped / "metrics.json").write_text(content)
    (stopped / "log.jsonl").write_text("")  # a log line lost: left to mend after the metrics are repaired
    (stopped / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    before = snapshot(stopped)
    with pytest.raises(RunFileError, match="metrics.json"):
        resume(stopped)
    assert snapshot(stopped) == before


class Stand:
    """A stand-in for ``tks.experiment._run`` that records what ``resume`` hands it and the lock it holds."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, cfg, run_dir, record, on_epoch_end):
        lock = run_dir / ".lock"
        self.calls.append((cfg, run_dir, record, on_epoch_end, lock.read_text() if lock.exists() else None))
        return "trained"


def test_rank_0_locks_the_folder_mends_it_and_hands_over_the_stored_run(stopped, monkeypatch):
    stand = Stand()
    monkeypatch.setattr(tks.experiment, "_run", stand)
    (stopped / "log.jsonl").write_text("")
    (stopped / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")

    def hook(record):
        return None

    assert resume(str(stopped), on_epoch_end=hook) == "trained"
    ((cfg, run_dir, record, on_epoch_end, lock),) = stand.calls
    saved = load_checkpoint(stopped / "checkpoint.pt")
    assert to_dict(cfg) == saved.config and cfg == load_config(stopped / "config.yaml")
    assert run_dir == stopped and on_epoch_end is hook
    assert isinstance(record, CheckpointRecord) and record.epoch == saved.epoch == STOP_AFTER
    assert_same_weights(record.model, saved.model)
    assert lock == f"{os.getpid()}\n"  # held while the run trains
    assert not (stopped / ".lock").exists()  # and let go after
    assert [r["epoch"] for r in logged(stopped)] == [STOP_AFTER] and not list(stopped.glob(".*.tmp"))


def test_other_ranks_neither_lock_nor_mend_the_folder(stopped, monkeypatch):
    stand = Stand()
    monkeypatch.setattr(tks.experiment, "_run", stand)
    monkeypatch.setattr(tks.experiment, "is_main_from_env", lambda: False)  # rank 1 under torchrun
    (stopped / "log.jsonl").write_text("")
    (stopped / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    before = snapshot(stopped)
    assert resume(stopped) == "trained"
    ((_, run_dir, record, on_epoch_end, lock),) = stand.calls
    assert run_dir == stopped and record.epoch == STOP_AFTER and on_epoch_end is None
    assert lock is None and snapshot(stopped) == before  # rank 0 owns the folder: nothing locked or written


def test_a_missing_folder_and_a_checkpoint_without_training_state_are_one_error(stopped, tmp_path):
    with pytest.raises(CheckpointError) as exc:
        resume(tmp_path / "nowhere")
    assert str(exc.value) == f"run folder not found: {tmp_path / 'nowhere'}"
    saved = load_checkpoint(stopped / "checkpoint.pt")
    save_checkpoint(stopped / "checkpoint.pt", CheckpointRecord(model=saved.model, config=saved.config))
    with pytest.raises(CheckpointError) as exc:
        resume(stopped)
    path = stopped / "checkpoint.pt"
    assert str(exc.value) == f"{path} holds a model but not the training state (optimizer, epoch, generators)"


def test_a_stored_config_this_version_cannot_read_names_the_checkpoint(stopped):
    record = load_checkpoint(stopped / "checkpoint.pt")
    save_checkpoint(stopped / "checkpoint.pt", CheckpointRecord(**{**vars(record), "config": {"bogus": 1}}))
    with pytest.raises(CheckpointError) as exc:
        resume(stopped)
    assert str(exc.value).startswith(f"{stopped / 'checkpoint.pt'}: its stored config is invalid for this version")


def test_weights_that_do_not_fit_the_stored_model_name_the_run_folder(stopped):
    record = load_checkpoint(stopped / "checkpoint.pt")
    weights = dict(record.model)
    weights.pop(next(iter(weights)))
    save_checkpoint(stopped / "checkpoint.pt", CheckpointRecord(**{**vars(record), "model": weights}))
    with pytest.raises(CheckpointError) as exc:
        resume(stopped)
    assert str(exc.value).startswith(f"{stopped}: its weights do not fit model ")


def draws() -> tuple:
    """One draw from each global generator: PyTorch's, Python's and NumPy's."""
    return torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist()


def trained_parts(scale: float) -> tuple[nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    """A small model, its AdamW optimizer after one step, and a CPU gradient scaler at ``scale``.

    Args:
        scale: the scaler's loss scale, so that a scaler left at its defaults is told apart.
    """
    model = nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).square().mean().backward()
    optimizer.step()
    return model, optimizer, torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=7)


def assert_same_state(ours, reference, where: str = "") -> None:
    """Assert two optimizer or scaler states equal: tensors element by element, containers item by item."""
    if isinstance(reference, torch.Tensor):
        assert torch.equal(ours, reference), where
    elif isinstance(reference, dict):
        assert ours.keys() == reference.keys(), where
        for key in reference:
            assert_same_state(ours[key], reference[key], f"{where}[{key!r}]")
    elif isinstance(reference, list):
        assert len(ours) == len(reference), where
        for i, (a, b) in enumerate(zip(ours, reference, strict=True)):
            assert_same_state(a, b, f"{where}[{i}]")
    else:
        assert ours == reference, where


def test_restore_puts_back_weights_optimizer_scaler_generators_and_progress(tmp_path):
    model, optimizer, scaler = trained_parts(scale=32.0)
    record = CheckpointRecord(
        model={k: v.clone() for k, v in model.state_dict().items()},
        config={},
        optimizer=optimizer.state_dict(),
        scaler=scaler.state_dict(),
        epoch=4,
        best_top1=0.5,
        best_epoch=3,
        selected={"top1": 0.5, "aurc": 0.25},
        train_seconds=9.5,
        rng=rng_state(),
    )
    expected = draws()  # what the generators give next, from the state in the record
    fresh_model, fresh_optimizer, fresh_scaler = nn.Linear(4, 3), None, torch.amp.GradScaler("cpu")
    fresh_optimizer = torch.optim.AdamW(fresh_model.parameters(), lr=0.3)
    state = tks.experiment._restore(record, fresh_model, fresh_optimizer, fresh_scaler, tmp_path)
    assert draws() == expected  # restored last: building the model and optimizer drew nothing that counts
    assert state == FitState(4, 0.5, 3, {"top1": 0.5, "aurc": 0.25}, 9.5)
    assert_same_weights(fresh_model.state_dict(), record.model)
    assert_same_state(fresh_optimizer.state_dict(), record.optimizer)
    assert fresh_scaler.state_dict() == record.scaler and fresh_scaler.get_scale() == 32.0


def test_restore_uses_a_scaler_state_only_where_both_exist(tmp_path):
    model, optimizer, scaler = trained_parts(scale=32.0)
    parts = {"model": model.state_dict(), "config": {}, "optimizer": optimizer.state_dict(), "epoch": 1}
    progress = {"best_top1": 0.5, "best_epoch": 1, "rng": rng_state()}
    with_scaler = CheckpointRecord(**parts, **progress, scaler=scaler.state_dict())
    without_scaler = CheckpointRecord(**parts, **progress)
    # a scaler state, and no scaler to take it (a run that is not fp16): ignored
    assert tks.experiment._restore(with_scaler, nn.Linear(4, 3), optimizer, None, tmp_path).epoch == 1
    # a scaler, and no state for it (a checkpoint of a run that was not fp16): left as it is
    fresh = torch.amp.GradScaler("cpu", init_scale=8.0)
    tks.experiment._restore(without_scaler, nn.Linear(4, 3), optimizer, fresh, tmp_path)
    assert fresh.get_scale() == 8.0


def test_restore_names_the_run_folder_when_the_weights_do_not_fit(tmp_path):
    model, optimizer, _ = trained_parts(scale=1.0)
    record = CheckpointRecord(model={"weight": torch.ones(3, 4)}, config={"model": {"name": "mlp"}})
    with pytest.raises(CheckpointError) as exc:
        tks.experiment._restore(record, model, optimizer, None, tmp_path)
    assert str(exc.value).startswith(f"{tmp_path}: its weights do not fit model 'mlp': ")
