"""``tks.sweep.folders`` in-process: what a sweep reads from the run folders it finds, on folders written by hand.

test_sweep.py drives whole sweeps (their work happens in other processes); here each function gets small folders
holding exactly the files it reads (``config.yaml``, ``metrics.json``, ``checkpoint.pt``, ``features.npz``,
``.lock``), and the expected answer is worked out by hand from docs/run-files.md and the module docstring.
"""

import json
import os
import warnings
from pathlib import Path

import pytest
import yaml

from tks.config import dump_config, load_config
from tks.config.identity import identity_settings
from tks.errors import TKSWarning
from tks.eval_options import parse_eval_options
from tks.locks import RUN_LOCK, acquire
from tks.runfiles import FINAL_CHECKPOINT
from tks.sweep import folders
from tks.sweep.folders import (
    Folder,
    RunFolders,
    RunState,
    _is_events,
    _key,
    _stamp,
    claim_path,
    evaluation_done,
    inspect,
    log_path,
    run_state,
)
from tks.sweep.spec import EvalStep, SweepRun, experiment_key


def step(args: str) -> EvalStep:
    """A sweep file's ``eval`` entry, e.g. ``"--steps 1 2"`` ("" is ``tks eval`` at the trained T)."""
    return EvalStep(tuple(args.split()), parse_eval_options(args.split()))


def sweep_run(out_dir: Path, *overrides: str, evals: tuple[str, ...] = (), name: str = "tiny-ce") -> SweepRun:
    config = load_config(None, list(overrides))
    return SweepRun(name, config, experiment_key(config), (), tuple(step(a) for a in evals), out_dir)


def finished(epoch: int = 2, **entry: object) -> dict:
    """A finished run's ``metrics.json``: the top level that training writes, and ``tks eval``'s entry (if any)."""
    metrics = {"top1": 0.9, "top5": 1.0, "num_steps": 4, "epoch": epoch}
    if entry:
        metrics["eval"] = {FINAL_CHECKPOINT: {"epoch": epoch, **entry}}
    return metrics


def run_folder(
    root: Path, name: str, metrics: dict | str | None = None, *, checkpoint: bool = False, mtime: int | None = None
) -> Path:
    """A run folder with this ``metrics.json`` (a str is written as is) and, if asked, a ``checkpoint.pt``."""
    path = root / name
    path.mkdir(parents=True)
    if metrics is not None:
        (path / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    if checkpoint:
        (path / FINAL_CHECKPOINT).write_bytes(b"weights")
        if mtime is not None:
            os.utime(path / FINAL_CHECKPOINT, (mtime, mtime))
    return path


def write_config(folder: Path, *overrides: str) -> str:
    """Write ``config.yaml`` as ``tks train`` does; the experiment key it resolves to."""
    config = load_config(None, list(overrides))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dump_config(config))
    return experiment_key(config)


def key_of(*overrides: str) -> str:
    return experiment_key(load_config(None, list(overrides)))


# --- the sweep's own files ---------------------------------------------------------------------------------------


def test_claim_and_log_paths_are_named_by_key_and_name(tmp_path):
    run = sweep_run(tmp_path / "out", "run.seed=1", name="grid-s1")
    assert claim_path(run) == tmp_path / "out" / ".sweep" / "claims" / f"{run.key}.lock"
    assert log_path(run) == tmp_path / "out" / ".sweep" / "logs" / "grid-s1.log"


# --- which folders belong to which run -----------------------------------------------------------------------------


def test_stamp_is_time_and_size_and_a_missing_file_has_none_a_file_can_have(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("abc")
    os.utime(path, ns=(5_000_000_123, 5_000_000_123))
    assert _stamp(path) == (5_000_000_123, 3)
    assert _stamp(tmp_path / "missing.yaml") == (0, -1)  # size -1: unlike any file, even an empty one of time 0
    assert _stamp(path / "below-a-file.yaml") == (0, -1)  # NotADirectoryError is an OSError too


def test_key_of_a_run_folder_is_the_experiment_of_its_config(tmp_path):
    key = write_config(tmp_path / "a-20260101-000000", "run.seed=3", "loss.name=ce", "run.name=a")
    assert key == key_of("run.seed=3", "loss.name=ce") != key_of()
    assert _key(tmp_path / "a-20260101-000000") == key


@pytest.mark.parametrize(
    "content",
    [None, "folder", "data: [unclosed\n", "nonsense_section:\n  x: 1\n", "data:\n  num_steps: 0\n", "- a list\n"],
)
def test_key_of_a_folder_that_is_no_run_of_this_tks_is_none(tmp_path, content):
    folder = tmp_path / "other"
    folder.mkdir()
    if content == "folder":
        (folder / "config.yaml").mkdir()  # a folder where the file should be
    elif content is not None:
        (folder / "config.yaml").write_text(content)
    assert _key(folder) is None


def test_key_of_an_empty_config_is_the_defaults_without_a_warning(tmp_path):
    (tmp_path / "config.yaml").write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # load_config's TKSWarning ("is empty: the defaults are used") is silenced
        assert _key(tmp_path) == key_of()


def test_key_lets_warnings_other_than_tks_own_through(tmp_path, monkeypatch):
    write_config(tmp_path, "run.seed=2")

    def warning_load(path, overrides=(), *, stored=False):
        warnings.warn("from a plugin", UserWarning, stacklevel=2)
        warnings.warn("from tks", TKSWarning, stacklevel=2)
        return load_config(path, overrides, stored=stored)

    monkeypatch.setattr(folders, "load_config", warning_load)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _key(tmp_path) == key_of("run.seed=2")
    assert [(w.category, str(w.message)) for w in caught] == [(UserWarning, "from a plugin")]


def test_key_of_a_config_stored_by_an_earlier_tks_is_upgraded(tmp_path):
    """``loss.temperature`` was moved to ``loss.tks.temperature``: a user's config with it is refused, a stored one
    is read as the new key, so the old run is still recognised."""
    data = yaml.safe_load(dump_config(load_config(None, ["loss.tks.temperature=5"])))
    data["loss"]["temperature"] = data["loss"]["tks"].pop("temperature")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert _key(tmp_path) == key_of("loss.tks.temperature=5") != key_of()


def test_run_folders_of_a_missing_output_folder_are_none(tmp_path):
    assert RunFolders(tmp_path / "not-yet").of(key_of()) == []


def test_run_folders_are_the_folders_of_the_key_sorted_by_name(tmp_path):
    key = write_config(tmp_path / "b-20260101-000001", "run.seed=1")
    write_config(tmp_path / "a-20260101-000000", "run.seed=1", "run.name=other-name")  # names do not matter
    write_config(tmp_path / "c-20260101-000002", "run.seed=2")  # another experiment
    (tmp_path / "empty").mkdir()  # no config: no run
    (tmp_path / ".sweep" / "claims").mkdir(parents=True)
    (tmp_path / "stray.yaml").write_text(dump_config(load_config(None, ["run.seed=1"])))  # a file, not a folder
    folders_ = RunFolders(tmp_path)
    assert folders_.of(key) == [tmp_path / "a-20260101-000000", tmp_path / "b-20260101-000001"]
    assert folders_.of(key_of("run.seed=2")) == [tmp_path / "c-20260101-000002"]
    assert folders_.of(key_of("run.seed=9")) == []


def test_run_folders_see_new_folders_and_forget_removed_ones(tmp_path):
    key = key_of("run.seed=1")
    folders_ = RunFolders(tmp_path)
    assert folders_.of(key) == []
    write_config(tmp_path / "a", "run.seed=1")
    assert folders_.of(key) == [tmp_path / "a"]
    write_config(tmp_path / "b", "run.seed=1")
    assert folders_.of(key) == [tmp_path / "a", tmp_path / "b"]
    (tmp_path / "a" / "config.yaml").unlink()
    (tmp_path / "a").rmdir()
    assert folders_.of(key) == [tmp_path / "b"]
    folders_.refresh()
    assert list(folders_._keys) == [tmp_path / "b"]


def test_run_folders_read_a_config_again_only_when_its_time_or_size_changed(tmp_path):
    folder = tmp_path / "run"
    one, two, ten = key_of("run.seed=1"), key_of("run.seed=2"), key_of("run.seed=10")
    write_config(folder, "run.seed=1")
    config = folder / "config.yaml"
    stamp = config.stat().st_mtime_ns
    folders_ = RunFolders(tmp_path)
    assert folders_.of(one) == [folder]

    write_config(folder, "run.seed=2")  # same size
    os.utime(config, ns=(stamp, stamp))  # and same time: taken for the config read before
    assert (folders_.of(one), folders_.of(two)) == ([folder], [])
    os.utime(config, ns=(stamp + 1, stamp + 1))  # its time changed: read again
    assert (folders_.of(one), folders_.of(two)) == ([], [folder])

    write_config(folder, "run.seed=10")  # one byte longer
    os.utime(config, ns=(stamp + 1, stamp + 1))  # at the time of the last look: the size alone tells
    assert (folders_.of(two), folders_.of(ten)) == ([], [folder])


def test_run_folders_read_a_config_that_appears_in_a_known_folder(tmp_path):
    folder = tmp_path / "starting"
    folder.mkdir()
    folders_ = RunFolders(tmp_path)
    assert folders_.of(key_of()) == []
    (folder / "config.yaml").write_text("\n")  # empty: the defaults; stamped (0, 1), unlike a missing file
    os.utime(folder / "config.yaml", ns=(0, 0))
    assert folders_.of(key_of()) == [folder]


# --- what a run folder holds ---------------------------------------------------------------------------------------


def test_inspect_of_a_finished_folder(tmp_path):
    metrics = finished(steps={"4": {"top1": 0.9}})
    path = run_folder(tmp_path, "done", metrics, checkpoint=True)
    before = sorted(p.name for p in path.iterdir())
    folder = inspect(path)
    assert folder == Folder(path, metrics, has_checkpoint=True, busy=False)
    assert folder.finished
    assert sorted(p.name for p in path.iterdir()) == before  # read without writing anything (no .lock either)


def test_inspect_of_unfinished_folders(tmp_path):
    started = run_folder(tmp_path, "started")  # no metrics.json, no checkpoint: stopped in its first epoch
    assert inspect(started) == Folder(started, {}, has_checkpoint=False, busy=False)
    assert not inspect(started).finished
    evaluated = {"eval": {FINAL_CHECKPOINT: {"epoch": 1, "steps": {"4": {}}}}}  # tks eval of an unfinished run
    midway = run_folder(tmp_path, "midway", evaluated, checkpoint=True)
    assert inspect(midway) == Folder(midway, evaluated, has_checkpoint=True, busy=False)
    assert not inspect(midway).finished


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"top1"', "\xff"])
def test_inspect_of_a_folder_with_unreadable_metrics_sees_none(tmp_path, text):
    path = run_folder(tmp_path, "corrupt", checkpoint=True)
    (path / "metrics.json").write_bytes(text.encode("latin-1"))
    assert inspect(path) == Folder(path, {}, has_checkpoint=True, busy=False)


def test_inspect_of_a_checkpoint_that_is_no_file(tmp_path):
    path = run_folder(tmp_path, "odd")
    (path / FINAL_CHECKPOINT).mkdir()
    assert inspect(path).has_checkpoint is False


def test_inspect_of_a_folder_in_use(tmp_path):
    path = run_folder(tmp_path, "training", checkpoint=True)
    with acquire(path / RUN_LOCK, wait=False):
        assert inspect(path) == Folder(path, {}, has_checkpoint=True, busy=True)
    assert inspect(path).busy is False
    (path / RUN_LOCK).write_text("12345\n")  # left by a killed session: nobody holds it
    assert inspect(path).busy is False


# --- whether an evaluation is done ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "entry", "events", "done"),
    [
        ("", {"steps": {"4": {}}}, False, True),  # the trained T (num_steps=4)
        ("", {"steps": {"1": {}, "2": {}}}, False, False),
        ("", {}, False, False),
        ("--steps 1 2", {"steps": {"1": {}, "2": {}}}, False, True),
        ("--steps 1 2", {"steps": {"1": {}, "4": {}}}, False, False),
        ("--steps 1 2", {"steps_rebin": {"1": {}, "2": {}}}, False, False),
        ("--steps 1 2", {}, False, False),
        # event data: --event-steps rebin results are kept apart, under steps_rebin
        ("--steps 2 --event-steps rebin", {"steps_rebin": {"2": {}}}, True, True),
        ("--steps 2 --event-steps rebin", {"steps": {"2": {}}}, True, False),
        ("--steps 2", {"steps": {"2": {}}}, True, True),
        ("--steps 2 --event-steps truncate", {"steps_rebin": {"2": {}}}, True, False),
        # static data: --event-steps changes nothing, the results are under steps
        ("--steps 2 --event-steps rebin", {"steps": {"2": {}}}, False, True),
        ("--steps 2 --event-steps rebin", {"steps_rebin": {"2": {}}}, False, False),
        # early exit, with the default thresholds or given ones
        ("--early-exit", {"steps": {"4": {}}}, False, False),
        ("--early-exit", {"steps": {"4": {}}, "early_exit": {}}, False, True),
        ("--early-exit 0.5 0.9", {"steps": {"4": {}}}, False, False),
        ("", {"steps": {"4": {}}, "early_exit": {}}, False, True),
        ("--steps 1 --early-exit 0.5", {"steps": {"2": {}}, "early_exit": {}}, False, False),
        # activity
        ("--activity", {"steps": {"4": {}}}, False, False),
        ("--activity", {"steps": {"4": {}}, "activity": {}}, False, True),
        ("--steps 1 --activity", {"steps": {"4": {}}, "activity": {}}, False, False),
        ("--steps 1 --activity --early-exit", {"steps": {"1": {}}, "activity": {}, "early_exit": {}}, False, True),
    ],
)
def test_evaluation_done_by_steps_early_exit_and_activity(tmp_path, args, entry, events, done):
    folder = Folder(tmp_path, finished(**entry), has_checkpoint=True, busy=False)
    assert evaluation_done(step(args), folder, 4, events) is done


def test_evaluation_done_with_features_needs_the_features_file(tmp_path):
    folder = Folder(tmp_path, finished(steps={"4": {}}), has_checkpoint=True, busy=False)
    assert evaluation_done(step(""), folder, 4, False) is True  # features not asked: no file needed
    assert evaluation_done(step("--features"), folder, 4, False) is False
    (tmp_path / "features-best.npz").write_bytes(b"of best.pt")
    assert evaluation_done(step("--features"), folder, 4, False) is False
    (tmp_path / "features.npz").write_bytes(b"npz")
    assert evaluation_done(step("--features"), folder, 4, False) is True
    assert evaluation_done(step("--steps 2 --features"), folder, 4, False) is False  # the steps still missing


def test_evaluation_of_an_earlier_epoch_is_not_the_final_models(tmp_path):
    metrics = finished(epoch=3, steps={"4": {}}, activity={})
    metrics["eval"][FINAL_CHECKPOINT]["epoch"] = 2  # evaluated while training still ran
    folder = Folder(tmp_path, metrics, has_checkpoint=True, busy=False)
    assert evaluation_done(step(""), folder, 4, False) is False
    assert evaluation_done(step("--activity"), folder, 4, False) is False
    old = Folder(tmp_path, {"top1": 0.9, "eval": {"checkpoint": FINAL_CHECKPOINT, "steps": {"4": {}}}}, True, False)
    assert evaluation_done(step(""), old, 4, False) is True  # the flat layout of earlier files, no epoch


@pytest.mark.parametrize(
    ("name", "events"), [("digits-dvs", True), ("cifar10-dvs", True), ("digits", False), ("no-such-set", False)]
)
def test_is_events(name, events):
    assert _is_events(name) is events


# --- what a run needs ----------------------------------------------------------------------------------------------


EVALS = ("--steps 1 2", "--activity")


def test_run_without_folders_starts(tmp_path):
    run = sweep_run(tmp_path, evals=EVALS)
    assert run_state(run, []) == RunState("start", None, run.evals, stale=())


def test_run_whose_folders_hold_nothing_to_resume_starts_after_removing_them(tmp_path):
    run = sweep_run(tmp_path, evals=EVALS)
    stale = [
        run_folder(tmp_path, "b-empty"),
        run_folder(tmp_path, "a-evaluated", {"eval": {FINAL_CHECKPOINT: {"epoch": 1}}}),
        run_folder(tmp_path, "c-corrupt", "{"),
    ]
    assert run_state(run, stale) == RunState("start", None, run.evals, stale=tuple(stale))


def test_run_with_checkpoints_resumes_the_latest(tmp_path):
    run = sweep_run(tmp_path, evals=EVALS)
    paths = [
        run_folder(tmp_path, "a", checkpoint=True, mtime=1_000_000),
        run_folder(tmp_path, "b", checkpoint=True, mtime=3_000_000),
        run_folder(tmp_path, "c", checkpoint=True, mtime=2_000_000),
        run_folder(tmp_path, "d"),  # nothing to resume: kept, as a resume starts no new folder
    ]
    assert run_state(run, paths) == RunState("resume", tmp_path / "b", run.evals)
    assert run_state(run, paths[:1]) == RunState("resume", tmp_path / "a", run.evals)


def test_finished_run_holding_every_evaluation_is_finished(tmp_path):
    run = sweep_run(tmp_path, evals=("--steps 1 2", "--activity", ""))
    complete = finished(steps={"1": {}, "2": {}, "4": {}}, activity={})
    paths = [
        run_folder(tmp_path, "a-lacks-activity", finished(steps={"1": {}, "2": {}, "4": {}}), checkpoint=True),
        run_folder(tmp_path, "b-complete", complete, checkpoint=True),
        run_folder(tmp_path, "c-unfinished", checkpoint=True, mtime=5_000_000_000),
    ]
    assert run_state(run, paths) == RunState("finished", tmp_path / "b-complete")
    assert run_state(run, paths, claimed_by=123) == RunState("finished", tmp_path / "b-complete")
    with acquire(paths[2] / RUN_LOCK, wait=False):  # training again in another folder changes nothing
        assert run_state(run, paths) == RunState("finished", tmp_path / "b-complete")


def test_finished_run_without_evaluations_is_finished(tmp_path):
    run = sweep_run(tmp_path)
    path = run_folder(tmp_path, "done", finished())
    assert run_state(run, [path]) == RunState("finished", path)


def test_finished_run_lacking_evaluations_is_evaluated(tmp_path):
    run = sweep_run(tmp_path, evals=("--steps 1 2", "--activity", "--features"))
    first = run_folder(tmp_path, "a", finished(steps={"1": {}, "2": {}, "4": {}}), checkpoint=True)
    (first / "features.npz").write_bytes(b"npz")
    second = run_folder(tmp_path, "b", finished(steps={"4": {}}, activity={}), checkpoint=True)
    resumable = run_folder(tmp_path, "c", checkpoint=True, mtime=5_000_000_000)
    steps, activity, features = run.evals
    assert run_state(run, [first, second, resumable]) == RunState("evaluate", first, (activity,))
    assert run_state(run, [second, first]) == RunState("evaluate", second, (steps, features))


def test_evaluations_without_steps_are_at_the_trained_t(tmp_path):
    """``tks eval`` without ``--steps`` measures the run's own T (data.num_steps=3 here)."""
    run = sweep_run(tmp_path, "data.num_steps=3", evals=("--activity", ""))
    at_trained_t = run_folder(tmp_path, "a", finished(steps={"3": {}}, activity={}))
    at_default_t = run_folder(tmp_path, "b", finished(steps={"4": {}}, activity={}))
    assert run_state(run, [at_trained_t]) == RunState("finished", at_trained_t)
    assert run_state(run, [at_default_t]) == RunState("evaluate", at_default_t, run.evals)


@pytest.mark.parametrize(
    ("dataset", "done_under"), [("digits-dvs", "steps_rebin"), ("digits", "steps")], ids=["events", "static"]
)
def test_rebinned_evaluations_are_looked_for_where_the_data_put_them(tmp_path, dataset, done_under):
    run = sweep_run(tmp_path, f"data.name={dataset}", evals=("--steps 2 --event-steps rebin",))
    other = {"steps_rebin": "steps", "steps": "steps_rebin"}[done_under]
    done = run_folder(tmp_path, "done", finished(**{done_under: {"2": {}}}))
    lacking = run_folder(tmp_path, "lacking", finished(**{other: {"2": {}}}))
    assert run_state(run, [done]) == RunState("finished", done)
    assert run_state(run, [lacking]) == RunState("evaluate", lacking, run.evals)


def test_run_claimed_by_another_sweep_is_busy(tmp_path):
    run = sweep_run(tmp_path, evals=EVALS)
    assert run_state(run, [], claimed_by=4242) == RunState("busy", None, pid=4242)
    assert run_state(run, [], claimed_by=None) == RunState("busy", None, pid=None)  # the claim's pid unknown
    resumable = run_folder(tmp_path, "a", checkpoint=True)
    lacking = run_folder(tmp_path, "b", finished(steps={"1": {}, "2": {}}))
    assert run_state(run, [resumable, lacking], claimed_by=None) == RunState("busy", None, pid=None)
    assert run_state(run, [resumable, lacking], claimed_by=False) == RunState("evaluate", lacking, run.evals[1:])


def test_run_trained_in_by_another_process_is_busy(tmp_path):
    run = sweep_run(tmp_path, evals=EVALS)
    lacking = run_folder(tmp_path, "a-lacking", finished(steps={"1": {}, "2": {}}))
    training = run_folder(tmp_path, "b-training", checkpoint=True, mtime=1_000_000)
    resumable = run_folder(tmp_path, "c-resumable", checkpoint=True, mtime=5_000_000)
    paths = [lacking, training, resumable]
    with acquire(training / RUN_LOCK, wait=False):
        assert run_state(run, paths) == RunState("busy", training, pid=os.getpid())
        assert run_state(run, paths, claimed_by=77) == RunState("busy", training, pid=77)  # the claim's pid
        assert run_state(run, paths, claimed_by=None) == RunState("busy", training, pid=None)
        assert run_state(run, [training]) == RunState("busy", training, pid=os.getpid())
    assert run_state(run, paths) == RunState("evaluate", lacking, run.evals[1:])
    assert run_state(run, [training, resumable]) == RunState("resume", resumable, run.evals)


def test_a_folder_whose_config_was_edited_after_training_is_no_runs(tmp_path):
    folder = tmp_path / "out" / "a"
    trained = load_config(None, ["optim.epochs=4"])
    write_config(folder, "optim.epochs=6")  # edited after training: the 6-epoch run is not what it holds
    (folder / "metrics.json").write_text(json.dumps({**finished(), "experiment": identity_settings(trained)}))
    with pytest.warns(TKSWarning) as caught:
        assert _key(folder) is None
    assert str(caught[0].message) == (
        f"{folder / 'config.yaml'} was changed after training (optim.epochs: 4 in metrics.json, 6 in config.yaml): "
        "the folder is left out, as no run's"
    )
    write_config(folder, "optim.epochs=4")  # put back
    assert _key(folder) == experiment_key(trained)
    (folder / "metrics.json").write_text("{broken")  # unreadable: identified by config.yaml, the resume reports it
    assert _key(folder) == experiment_key(trained)
