"""The checkpoint file on its own (tks.checkpoint): every field of the record, atomic writes, one error per failure.

The training tests read and write checkpoints too, but through whole runs; here each promise of the module is
checked directly and quickly: the payload field by field, writes that go through a temporary file beside the
target (the one ``tks.runfiles.remove_stale_temporaries`` knows), failures that leave the previous file whole, and
hand-built files that are missing, cut short, overwritten or not ours.
"""

import datetime
import errno
import io
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from tks.checkpoint import CheckpointError, CheckpointRecord, copy_checkpoint, load_checkpoint, save_checkpoint
from tks.seeding import rng_state

FIELDS = (
    "model",
    "config",
    "optimizer",
    "scaler",
    "epoch",
    "best_top1",
    "best_epoch",
    "selected",
    "train_seconds",
    "rng",
    "rng_ranks",
    "log",
    "exit_rule",
)
"""Every field of ``CheckpointRecord``: the keys of the file's dict (docs/run-files.md)."""


def full_record(epoch: int = 3) -> CheckpointRecord:
    """A record with every field set, none to its default and no two to the same value."""
    return CheckpointRecord(
        model={"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.tensor([0.5, -0.5])},
        config={"model": {"name": "spiking_cnn"}, "optim": {"epochs": 5}},
        optimizer={"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.01, "params": [0]}]},
        scaler={"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 7},
        epoch=epoch,
        best_top1=0.75,
        best_epoch=2,
        selected={"top1": 0.7, "aurc": 0.125},
        train_seconds=12.5,
        rng=rng_state(),
        rng_ranks=rank_states(2),
        log={"epoch": epoch, "lr": 0.001, "train": {"loss": 1.25}},
        exit_rule={"rule": "confidence", "threshold": 0.9, "num_steps": 4},
    )


def rank_states(ranks: int) -> list[dict]:
    """The generator states of ``ranks`` processes, each unlike the others and unlike this process's."""
    return [{**rng_state(), "torch": torch.Generator().manual_seed(100 + rank).get_state()} for rank in range(ranks)]


def assert_same(ours, expected, where: str = "") -> None:
    """Assert two values of a checkpoint equal: tensors element by element, containers item by item, types too."""
    assert type(ours) is type(expected), f"{where}: {type(ours).__name__} != {type(expected).__name__}"
    if isinstance(expected, torch.Tensor):
        assert ours.dtype == expected.dtype and torch.equal(ours, expected), where
    elif isinstance(expected, dict):
        assert ours.keys() == expected.keys(), where
        for key in expected:
            assert_same(ours[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(ours) == len(expected), where
        for i, (a, b) in enumerate(zip(ours, expected, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert ours == expected, where


def files_in(folder: Path) -> list[str]:
    """The names in ``folder``, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir())


class Spy:
    """``os.replace`` and ``os.fsync`` that record their calls (then do the real thing), for the atomic writes.

    Args:
        monkeypatch: the test's fixture; the real functions come back after the test.
        interrupt_after_replace: raise ``KeyboardInterrupt`` right after the rename, as a Ctrl-C there would.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, interrupt_after_replace: bool = False) -> None:
        self.replaced: list[tuple[Path, Path, int]] = []
        self.synced: list[tuple[int, int]] = []
        real_replace, real_fsync = os.replace, os.fsync

        def replace(src, dst):
            self.replaced.append((Path(src), Path(dst), os.stat(src).st_ino))
            real_replace(src, dst)
            if interrupt_after_replace:
                raise KeyboardInterrupt

        def fsync(fd):
            info = os.fstat(fd)
            self.synced.append((info.st_ino, info.st_size))
            real_fsync(fd)

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "fsync", fsync)


def test_the_payload_holds_every_field_under_its_own_name():
    record = full_record()
    payload = record.to_payload()
    assert set(payload) == set(FIELDS)
    for name in FIELDS:
        assert payload[name] is getattr(record, name), name


def test_a_payload_reads_back_into_the_same_record_field_by_field():
    record = full_record()
    back = CheckpointRecord.from_payload(record.to_payload(), "x.pt")
    for name in FIELDS:
        assert getattr(back, name) is getattr(record, name), name
    assert back == record


def test_a_file_round_trip_keeps_every_field(tmp_path):
    record = full_record()
    save_checkpoint(tmp_path / "checkpoint.pt", record)
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")
    assert isinstance(loaded, CheckpointRecord) and loaded.resumable
    for name in FIELDS:
        assert_same(getattr(loaded, name), getattr(record, name), name)
    assert files_in(tmp_path) == ["checkpoint.pt"]


def test_the_fields_an_older_file_lacks_take_their_defaults():
    model, config = {"w": torch.ones(2)}, {"model": {"name": "spiking_cnn"}}
    record = CheckpointRecord.from_payload({"model": model, "config": config, "scaler": {}}, "old.pt")
    assert record.model is model and record.config is config
    for name in FIELDS[2:]:
        if name != "train_seconds":
            assert getattr(record, name) is None, name  # an empty scaler state (no fp16) reads as None
    assert type(record.train_seconds) is float and record.train_seconds == 0.0
    assert not record.resumable


def test_each_rank_continues_from_its_own_generator_states_when_as_many_processes_resume():
    record = full_record()
    assert [record.rng_of(rank, 2) for rank in (0, 1)] == [record.rng_ranks[0], record.rng_ranks[1]]
    assert record.rng_of(0, 1) is record.rng and record.rng_of(2, 4) is record.rng  # another world size: rank 0's
    older = CheckpointRecord.from_payload({**record.to_payload(), "rng_ranks": None}, "old.pt")
    assert older.rng_of(1, 2) is record.rng  # a file of one set of states: every rank continues from it


@pytest.mark.parametrize("missing", ["optimizer", "epoch", "best_top1", "best_epoch", "rng"])
def test_resumable_needs_every_piece_of_training_state(missing):
    record = CheckpointRecord.from_payload({**full_record().to_payload(), missing: None}, "x.pt")
    assert not record.resumable
    lean = {**full_record().to_payload(), "scaler": None, "selected": None, "log": None, "train_seconds": 0.0}
    assert CheckpointRecord.from_payload(lean, "x.pt").resumable  # the other fields are optional


@pytest.mark.parametrize(
    "payload",
    [[], ["model", "config"], "model config", {}, {"model": {}}, {"config": {}}, {"weights": {}, "config": {}}],
    ids=["list", "list-of-the-names", "string", "empty", "no-config", "no-model", "other-names"],
)
def test_what_is_not_a_dict_with_model_and_config_is_refused(payload):
    with pytest.raises(CheckpointError) as exc:
        CheckpointRecord.from_payload(payload, "some/file.pt")
    assert str(exc.value) == "some/file.pt is not a tks checkpoint (expected a dict with 'model' and 'config')"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"model": [1, 2], "config": {}}, "its 'model' entry is a list, not a mapping"),
        ({"model": {}, "config": "digits"}, "its 'config' entry is a str, not a mapping"),
        ({"model": torch.ones(2), "config": None}, "its 'model' entry is a Tensor, not a mapping"),
    ],
)
def test_model_and_config_must_be_mappings(payload, message):
    with pytest.raises(CheckpointError) as exc:
        CheckpointRecord.from_payload(payload, "some/file.pt")
    assert str(exc.value) == f"some/file.pt is not a tks checkpoint: {message}"


def test_load_weights_puts_the_weights_into_the_model():
    model = nn.Linear(3, 2)
    record = full_record()
    record.load_weights(model, "x.pt")
    assert torch.equal(model.weight.detach(), record.model["weight"])
    assert torch.equal(model.bias.detach(), record.model["bias"])


@pytest.mark.parametrize(
    ("config", "name"),
    [({"model": {"name": "spiking_cnn"}}, "'spiking_cnn'"), ({"model": {"width": 2}}, "None"), ({}, "None")],
)
def test_weights_that_do_not_fit_name_the_file_and_the_model(config, name):
    record = CheckpointRecord(model={"weight": torch.ones(2, 3)}, config=config)
    with pytest.raises(CheckpointError) as exc:
        record.load_weights(nn.Linear(3, 2), Path("runs/a/checkpoint.pt"))
    message = str(exc.value)
    assert message.startswith(f"{Path('runs/a/checkpoint.pt')}: its weights do not fit model {name}: ")
    assert 'Missing key(s) in state_dict: "bias"' in message and "\n" not in message


def test_a_save_goes_through_a_synced_temporary_file_beside_the_target(tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(str(path), full_record())  # a str path too
    ((src, dst, inode),) = spy.replaced
    assert dst == path and src.parent == tmp_path
    # the name an interrupted write leaves behind is one that the resume removes (tks.runfiles)
    assert re.fullmatch(r"\.checkpoint\.pt\..+\.tmp", src.name), src.name
    assert spy.synced == [(inode, path.stat().st_size)]  # the whole file reached the disk before the rename
    assert files_in(tmp_path) == ["checkpoint.pt"]
    assert load_checkpoint(path).epoch == 3


def raising(exc: BaseException):
    """A stand-in for ``torch.save`` that raises ``exc``.

    Args:
        exc: what to raise, as the disk or the pickler would.
    """

    def save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise exc

    return save


def chained(error: OSError, link: str) -> RuntimeError:
    """What torch's zip writer raises on a full disk: a RuntimeError (no "write" in it) over the ``OSError``."""
    wrapper = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    if link == "cause":
        wrapper.__cause__ = error
    else:
        wrapper.__context__ = error
    return wrapper


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (OSError("the disk went away"), "the disk went away"),
        (
            RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed\nmore detail"),
            "PytorchStreamWriter failed writing file data/0: file write failed",
        ),
        (RuntimeError("[enforce fail] unexpected pos: WRITE"), "[enforce fail] unexpected pos: WRITE"),
        (chained(OSError(errno.ENOSPC, "No space left on device"), "context"), "No space left on device"),
        (chained(OSError(errno.EFBIG, "File too large"), "cause"), "File too large"),
    ],
    ids=["no-space", "oserror-without-strerror", "torch-writer", "upper-case", "zip-writer-over-a-full-disk", "cause"],
)
def test_a_failed_write_is_one_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure, message):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, full_record(epoch=2))
    monkeypatch.setattr(torch, "save", raising(failure))
    with pytest.raises(CheckpointError) as exc:
        save_checkpoint(path, full_record(epoch=3))
    assert str(exc.value) == f"cannot write {path}: {message}"
    monkeypatch.undo()
    assert load_checkpoint(path).epoch == 2 and files_in(tmp_path) == ["checkpoint.pt"]


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("boom"), ValueError("cannot write this value"), KeyboardInterrupt()],
    ids=["other-runtime-error", "value-error-naming-write", "ctrl-c"],
)
def test_other_failures_of_a_save_pass_through_and_leave_no_temporary_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, full_record(epoch=2))
    monkeypatch.setattr(torch, "save", raising(failure))
    with pytest.raises(type(failure)) as exc:
        save_checkpoint(path, full_record(epoch=3))
    assert exc.value is failure
    monkeypatch.undo()
    assert load_checkpoint(path).epoch == 2 and files_in(tmp_path) == ["checkpoint.pt"]


def test_a_save_into_a_missing_folder_is_one_error(tmp_path):
    path = tmp_path / "gone" / "checkpoint.pt"
    with pytest.raises(CheckpointError) as exc:
        save_checkpoint(path, full_record())
    assert str(exc.value) == f"cannot write {path}: No such file or directory"


def test_a_ctrl_c_right_after_the_rename_leaves_the_new_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, full_record(epoch=2))
    Spy(monkeypatch, interrupt_after_replace=True)
    with pytest.raises(KeyboardInterrupt):  # the interrupt itself, not an error about the temporary file gone
        save_checkpoint(path, full_record(epoch=3))
    monkeypatch.undo()
    assert load_checkpoint(path).epoch == 3 and files_in(tmp_path) == ["checkpoint.pt"]


def test_a_missing_checkpoint_is_one_error(tmp_path):
    for path in (tmp_path / "checkpoint.pt", tmp_path):  # nothing there, or a folder
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(path)
        assert str(exc.value) == f"checkpoint not found: {path}"


def test_loading_maps_the_tensors_to_the_device_asked_for(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", full_record())
    assert load_checkpoint(str(tmp_path / "checkpoint.pt")).model["weight"].device == torch.device("cpu")
    on_meta = load_checkpoint(tmp_path / "checkpoint.pt", map_location="meta")
    assert on_meta.model["weight"].device.type == "meta" and on_meta.model["weight"].shape == (2, 3)


def test_a_file_with_objects_other_than_plain_data_is_refused_whatever_the_environment_says(tmp_path, monkeypatch):
    # torch loads unsafely by default under this variable, unless the caller asks for weights_only explicitly
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "config": {"when": datetime.date(2026, 1, 1)}}, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert str(exc.value) == (
        f"refused {path}: the file holds objects other than tensors and plain data; not loaded, for safety"
    )


def cut_points(data: bytes) -> list[int]:
    """Lengths to cut a file at: every length up to 64 bytes, then every 97th."""
    return [*range(min(64, len(data))), *range(64, len(data), 97)]


def saved_bytes(legacy: bool) -> bytes:
    """A checkpoint's bytes, in the zip format tks writes or in torch's legacy format.

    Args:
        legacy: the format of torch before 1.6, which tks never writes but a user's file may have.
    """
    buffer = io.BytesIO()
    torch.save(full_record().to_payload(), buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_file_cut_short_anywhere_is_one_error(tmp_path, legacy):
    data = saved_bytes(legacy)
    path = tmp_path / "checkpoint.pt"
    for length in cut_points(data):
        path.write_bytes(data[:length])
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(path)
        message = str(exc.value)
        # the weights-only unpickler calls a cut opcode an unsupported one: refused, not loaded either way
        assert message.startswith((f"cannot read checkpoint {path} (corrupt or truncated?): ", f"refused {path}: "))
        assert "\n" not in message, length


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "EOFError"),  # an exception without a message: its type
        (b"hello world, not a checkpoint\n", "101"),  # text: the unpickler reads 'h' and fails on a lookup
        (b"PK\x03\x04 not really a zip", "PytorchStreamReader failed reading zip archive: not a ZIP archive"),
    ],
    ids=["empty", "text", "bad-zip"],
)
def test_an_overwritten_file_is_one_error_with_the_readers_reason(tmp_path, content, reason):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert str(exc.value).startswith(f"cannot read checkpoint {path} (corrupt or truncated?): {reason}")
    assert "\n" not in str(exc.value)


def test_an_unpickling_error_other_than_the_safety_check_is_a_corrupt_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, full_record())

    def load(*args, **kwargs):
        raise pickle.UnpicklingError("invalid load key, 'x'.\nsecond line")

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert str(exc.value) == f"cannot read checkpoint {path} (corrupt or truncated?): invalid load key, 'x'."


def test_a_dict_that_is_not_a_checkpoint_names_its_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": {}}, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert str(exc.value) == f"{path} is not a tks checkpoint (expected a dict with 'model' and 'config')"


def test_a_copy_is_byte_for_byte_through_a_temporary_file_beside_the_target(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "checkpoint.pt", full_record())
    spy = Spy(monkeypatch)
    copy_checkpoint(str(tmp_path / "checkpoint.pt"), str(tmp_path / "best.pt"))
    ((src, dst, _),) = spy.replaced
    assert dst == tmp_path / "best.pt" and src.parent == tmp_path
    assert re.fullmatch(r"\.best\.pt\..+\.tmp", src.name), src.name
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "checkpoint.pt").read_bytes()
    assert files_in(tmp_path) == ["best.pt", "checkpoint.pt"]


def test_a_failed_copy_is_one_error_and_keeps_the_previous_copy(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "checkpoint.pt", full_record(epoch=2))
    copy_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "best.pt")
    best = tmp_path / "best.pt"
    with pytest.raises(CheckpointError) as exc:  # the source is gone
        copy_checkpoint(tmp_path / "missing.pt", best)
    assert str(exc.value) == f"cannot write {best}: No such file or directory"

    def copyfile(source, target):
        Path(target).write_bytes(b"half a copy")
        raise OSError("the disk went away")

    monkeypatch.setattr("shutil.copyfile", copyfile)
    with pytest.raises(CheckpointError) as exc:
        copy_checkpoint(tmp_path / "checkpoint.pt", best)
    assert str(exc.value) == f"cannot write {best}: the disk went away"
    monkeypatch.undo()
    assert load_checkpoint(best).epoch == 2 and files_in(tmp_path) == ["best.pt", "checkpoint.pt"]
    target = tmp_path / "gone" / "best.pt"
    with pytest.raises(CheckpointError) as exc:
        copy_checkpoint(tmp_path / "checkpoint.pt", target)
    assert str(exc.value) == f"cannot write {target}: No such file or directory"


def test_a_ctrl_c_during_a_copy_leaves_no_temporary_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "checkpoint.pt", full_record())

    def copyfile(source, target):
        Path(target).write_bytes(b"half a copy")
        raise KeyboardInterrupt

    monkeypatch.setattr("shutil.copyfile", copyfile)
    with pytest.raises(KeyboardInterrupt):
        copy_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "best.pt")
    assert files_in(tmp_path) == ["checkpoint.pt"]
    monkeypatch.undo()
    Spy(monkeypatch, interrupt_after_replace=True)
    with pytest.raises(KeyboardInterrupt):  # right after the rename: the copy is whole
        copy_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "best.pt")
    monkeypatch.undo()
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "checkpoint.pt").read_bytes()
    assert files_in(tmp_path) == ["best.pt", "checkpoint.pt"]
