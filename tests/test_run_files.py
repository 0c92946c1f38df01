"""Run files stay consistent under crashes, resumes, evaluations and failing writes (issue 13, docs/run-files.md)."""

import errno
import json

import pytest
import torch

import tks.hooks
import tks.paths
import tks.runfiles
from tks.cli import main
from tks.compare import compare_runs, expand_run_dirs, read_run
from tks.runfiles import final_evaluation, merge_evaluation, repair_log

FAST = ["--set", "data.num_steps=2", "--set", "run.progress=false", "--set", "optim.warmup_epochs=0"]


def train(out, epochs, *extra):
    assert main(["train", *FAST, "--set", f"optim.epochs={epochs}", "--set", f"run.out_dir={out}", *extra]) == 0
    (run_dir,) = out.iterdir()
    return run_dir


def epochs_in_log(run_dir):
    return [json.loads(line)["epoch"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def interrupted_run(out, epochs, stop_after, monkeypatch):
    """A run stopped right after epoch ``stop_after`` was checkpointed and logged (as by Ctrl-C)."""
    real = tks.hooks.append_jsonl

    def append_then_stop(path, record):
        real(path, record)
        if record["epoch"] == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(tks.hooks, "append_jsonl", append_then_stop)
    assert main(["train", *FAST, "--set", f"optim.epochs={epochs}", "--set", f"run.out_dir={out}"]) == 130
    monkeypatch.setattr(tks.hooks, "append_jsonl", real)
    (run_dir,) = out.iterdir()
    return run_dir


def test_a_crash_between_checkpoint_and_log_line_loses_and_duplicates_nothing(tmp_path, monkeypatch, capsys):
    def fail_at_epoch_2(path, record):
        if record["epoch"] == 2:  # the checkpoint of epoch 2 is on disk; its log line is not (a full disk, a kill)
            raise tks.runfiles.RunFileError(f"cannot write {path}: No space left on device")
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    monkeypatch.setattr(tks.hooks, "append_jsonl", fail_at_epoch_2)
    assert main(["train", *FAST, "--set", "optim.epochs=3", "--set", f"run.out_dir={tmp_path}"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    (run_dir,) = tmp_path.iterdir()
    assert epochs_in_log(run_dir) == [1]
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 2
    (run_dir / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # a write cut by the crash
    monkeypatch.undo()
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert epochs_in_log(run_dir) == [1, 2, 3]  # epoch 2's line restored from its checkpoint, nothing twice
    assert not list(run_dir.glob(".*.tmp"))


def test_a_log_ahead_of_its_checkpoint_is_trimmed(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 2}\n{"epoch": 3}\n{"epo')
    repair_log(tmp_path, 2, {"epoch": 2, "from": "checkpoint"})
    assert (tmp_path / "log.jsonl").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    repair_log(tmp_path, 3, {"epoch": 3, "from": "checkpoint"})
    assert epochs_in_log(tmp_path) == [1, 2, 3]


def test_resume_of_a_finished_run_changes_nothing(tmp_path, capsys):
    run_dir = train(tmp_path, 1)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"run folder {run_dir} already finished (1 epochs): nothing to do" in out and "top-1" in out
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_eval_of_an_unfinished_run_then_finishing_keeps_everything_apart(tmp_path, monkeypatch, capsys):
    run_dir = interrupted_run(tmp_path, 3, 1, monkeypatch)
    first_session = torch.load(run_dir / "checkpoint.pt", weights_only=True)["train_seconds"]
    assert main(["eval", str(run_dir / "checkpoint.pt"), "--steps", "1", "2"]) == 0
    intermediate = json.loads((run_dir / "metrics.json").read_text())
    assert intermediate["eval"]["checkpoint.pt"]["epoch"] == 1 and "top1" not in intermediate
    # the parent folder: this run is recognisably unfinished, left out with the usual warning, others unharmed
    with pytest.warns(UserWarning, match="left out 1 unfinished run"):
        assert expand_run_dirs([tmp_path]) == []
    assert main(["train", "--resume", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch"] == 3 and metrics["eval"]["checkpoint.pt"]["epoch"] == 1  # merged, not overwritten
    assert final_evaluation(metrics) == {}  # an earlier model's numbers are not the final model's
    assert list(read_run(run_dir).top1_by_steps()) == [2]  # so tks compare shows only the trained T
    assert metrics["train_seconds"] > first_session > 0  # both sessions counted
    capsys.readouterr()
    assert main(["eval", str(run_dir / "checkpoint.pt"), "--steps", "1"]) == 0
    assert list(read_run(run_dir).top1_by_steps()) == [1, 2]  # the final model's own evaluation counts


def test_checkpoint_and_best_keep_separate_tables(tmp_path):
    run_dir = train(tmp_path, 2)
    assert main(["eval", str(run_dir / "checkpoint.pt"), "--steps", "1"]) == 0
    assert main(["eval", str(run_dir / "best.pt"), "--steps", "1", "--features"]) == 0
    evaluations = json.loads((run_dir / "metrics.json").read_text())["eval"]
    assert set(evaluations) == {"checkpoint.pt", "best.pt"}
    assert set(evaluations["checkpoint.pt"]["steps"]) == {"1"} and set(evaluations["best.pt"]["steps"]) == {"1"}
    assert (run_dir / "features-best.npz").is_file() and not (run_dir / "features.npz").exists()
    assert "Final model of each run" in compare_runs([run_dir])


def test_merge_reads_the_earlier_flat_layout(tmp_path):
    old = {"top1": 0.9, "epoch": 2, "eval": {"checkpoint": "checkpoint.pt", "steps": {"1": {"top1": 0.5}}}}
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    assert final_evaluation(old)["steps"] == {"1": {"top1": 0.5}}
    merge_evaluation(tmp_path, "checkpoint.pt", 2, {"steps": {"3": {"top1": 0.7}}})
    merged = json.loads((tmp_path / "metrics.json").read_text())["eval"]
    assert set(merged) == {"checkpoint.pt"} and merged["checkpoint.pt"]["epoch"] == 2
    assert set(merged["checkpoint.pt"]["steps"]) == {"1", "3"}  # the old T values kept
    merge_evaluation(tmp_path, "checkpoint.pt", 5, {"steps": {"2": {"top1": 0.8}}})  # the file was trained on since
    assert set(json.loads((tmp_path / "metrics.json").read_text())["eval"]["checkpoint.pt"]["steps"]) == {"2"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot be read as JSON"),
        ("[1, 2]", "holds a JSON array, not an object"),
        ('{"top1": 0.5, "eval": 7}', 'its "eval" holds a JSON number, not an object of evaluations by checkpoint file'),
        ('{"eval": [1]}', 'its "eval" holds a JSON array, not an object'),
        ('{"eval": {"checkpoint.pt": null}}', "its \"eval\" entry 'checkpoint.pt' holds a JSON null, not an object"),
    ],
)
def test_eval_refuses_a_broken_metrics_file_before_evaluating(tmp_path, content, message, capsys, monkeypatch):
    run_dir = train(tmp_path, 1)
    (run_dir / "metrics.json").write_text(content)
    monkeypatch.setattr("tks.evaluation.predict", lambda *a, **k: pytest.fail("evaluated before the check"))
    capsys.readouterr()
    assert main(["eval", str(run_dir / "checkpoint.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tks: error: {run_dir / 'metrics.json'}") and message in err and "\n" not in err
    assert err.endswith("repair or move it away") or err.endswith("then retry")
    assert (run_dir / "metrics.json").read_text() == content  # left as it was


def test_eval_on_a_full_disk_prints_the_results_then_names_the_file(tmp_path, capsys, monkeypatch):
    run_dir = train(tmp_path, 1)
    capsys.readouterr()

    def no_space(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tks.paths.os, "replace", no_space)
    assert main(["eval", str(run_dir / "checkpoint.pt"), "--steps", "1"]) == 2
    captured = capsys.readouterr()
    assert "top-1" in captured.out and captured.out.strip().splitlines()[-1].split()[0] == "1"  # shown first
    assert captured.err.strip() == f"tks: error: cannot write {run_dir / 'metrics.json'}: No space left on device"


def test_training_on_a_full_disk_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    run_dir = interrupted_run(tmp_path, 3, 1, monkeypatch)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tks: error: cannot write {run_dir / 'checkpoint.pt'}: No space left on device"
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1  # still whole
    assert epochs_in_log(run_dir) == [1] and not list(run_dir.glob(".*.tmp"))


def test_eval_into_a_read_only_run_folder_is_refused_before_evaluating(tmp_path, capsys, monkeypatch):
    run_dir = train(tmp_path, 1)
    real_access = tks.paths.os.access  # as root, permission bits alone would not stop a write: fake read-only
    monkeypatch.setattr(
        tks.paths.os, "access", lambda p, mode: False if str(p) == str(run_dir) else real_access(p, mode)
    )
    monkeypatch.setattr("tks.evaluation.predict", lambda *a, **k: pytest.fail("evaluated before the check"))
    capsys.readouterr()
    assert main(["eval", str(run_dir / "checkpoint.pt")]) == 2
    assert f"{run_dir} is read-only" in capsys.readouterr().err


def test_eval_options_that_the_dataset_ignores_are_reported(tmp_path, capsys):
    run_dir = train(tmp_path, 1)
    capsys.readouterr()
    argv = ["eval", str(run_dir / "checkpoint.pt"), "--event-steps", "rebin", "--data-root", str(tmp_path)]
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "tks: warning: --event-steps rebin is ignored: digits is not event data (its static input is the same at "
        "every T)",
        "tks: warning: --data-root is ignored: digits reads no data folder (its data ship with tks or a library)",
    ]
    assert main(["eval", str(run_dir / "checkpoint.pt")]) == 0
    assert capsys.readouterr().err == ""  # nothing to report without them


@pytest.mark.parametrize("verb", ["eval", "export"])
def test_a_checkpoint_with_non_finite_weights_is_refused_in_one_line(tmp_path, capsys, verb):
    run_dir = train(tmp_path, 1)
    path = run_dir / "checkpoint.pt"
    payload = torch.load(path, weights_only=False)
    name = next(iter(payload["model"]))
    payload["model"][name] = payload["model"][name].clone().fill_(float("nan"))
    torch.save(payload, path)
    metrics = (run_dir / "metrics.json").read_text()
    capsys.readouterr()
    argv = ["eval", str(path)] if verb == "eval" else ["export", str(path), "--out", str(tmp_path / "model.nir")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tks: error: {path} holds non-finite weights (NaN or infinity in 1 of ") and "\n" not in err
    assert f"the first {name!r}): the run diverged" in err
    assert (run_dir / "metrics.json").read_text() == metrics and not (tmp_path / "model.nir").exists()


def test_resume_refuses_a_config_edited_after_the_run_started(tmp_path, monkeypatch, capsys):
    run_dir = interrupted_run(tmp_path, 3, 1, monkeypatch)
    config = run_dir / "config.yaml"
    original, checkpoint = config.read_text(), (run_dir / "checkpoint.pt").read_bytes()
    config.write_text(original.replace("epochs: 3", "epochs: 6").replace("\n  val_size: null", "\n  val_size: 150"))
    edited = config.read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"tks: error: {config} was changed after the run started (data.val_size: None in the checkpoint, 150 in "
        "config.yaml; optim.epochs: 3 in the checkpoint, 6 in config.yaml): a run folder holds one experiment; put "
        "config.yaml back to resume, or train the new settings as a new run"
    )
    assert config.read_text() == edited and (run_dir / "checkpoint.pt").read_bytes() == checkpoint  # nothing touched
    assert epochs_in_log(run_dir) == [1]
    config.write_text(original)
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert epochs_in_log(run_dir) == [1, 2, 3]
    recorded = json.loads((run_dir / "metrics.json").read_text())["experiment"]
    assert recorded["optim.epochs"] == 3 and recorded["data.val_size"] is None and recorded["run.seed"] == 0


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """The bytes of a 1-epoch run's checkpoint.pt (a real one: zip layout, several kB)."""
    return (train(tmp_path_factory.mktemp("whole"), 1) / "checkpoint.pt").read_bytes()


@pytest.mark.parametrize("damage", ["text", "cut at 5000 bytes", "cut in half", "empty"])
@pytest.mark.parametrize("verb", ["eval", "export", "train --resume"])
def test_corrupt_checkpoints_are_one_line_in_every_command(tmp_path, trained_checkpoint, damage, verb, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    broken = {
        "text": b"this is not a checkpoint\n" * 10,
        "cut at 5000 bytes": trained_checkpoint[:5000],
        "cut in half": trained_checkpoint[: len(trained_checkpoint) // 2],
        "empty": b"",
    }[damage]
    path = run_dir / "checkpoint.pt"
    path.write_bytes(broken)
    argv = {
        "eval": ["eval", str(path)],
        "export": ["export", str(path), "--out", str(tmp_path / "model.nir")],
        "train --resume": ["train", "--resume", str(run_dir)],
    }[verb]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tks: error: cannot read checkpoint {path} (corrupt or truncated?)"), err
    assert "\n" not in err and path.read_bytes() == broken
