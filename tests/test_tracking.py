"""Experiment tracking (tks.tracking) against a real MLflow store: SQLite, started by the test.

The run folder stays the source of truth: what MLflow holds is compared with the folder's own files.
"""

import json
import os
import subprocess
import sys

import pytest

from tks.config import load_config
from tks.errors import TKSWarning
from tks.experiment import resume, train
from tks.tracking import TRACKER_FILE, config_params, epoch_metrics, final_metrics

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra")
pytest.importorskip("sqlalchemy", reason="MLflow's SQLite store")

TINY = ["data.num_steps=2", "run.progress=false", "optim.warmup_epochs=0", "data.test_limit=64", "run.device=cpu"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An MLflow tracking store in a SQLite file of this test, and a client of it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tks-test")
    monkeypatch.chdir(tmp_path)  # a SQLite store keeps its artifacts in ./mlruns
    return mlflow.MlflowClient()


def config(tmp_path, *overrides):
    return load_config(None, [*TINY, "run.tracker=mlflow", f"run.out_dir={tmp_path / 'runs'}", *overrides])


def logged(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_epoch_and_final_metrics_are_the_numbers_of_the_records():
    record = {
        "epoch": 3,
        "lr": 0.1,
        "tks_weight": 0.2,
        "train": {"loss": 1.5, "samples": 10},
        "test": {"top1": 0.5, "per_step": [0.4, 0.5]},
        "val": {"top1": 0.6},
        "elapsed_s": 3.0,
        "flag": True,
    }
    assert epoch_metrics(record) == {
        "lr": 0.1,
        "tks_weight": 0.2,
        "train/loss": 1.5,
        "train/samples": 10.0,
        "test/top1": 0.5,
        "val/top1": 0.6,
    }  # per-step lists, timings and flags stay in the folder
    metrics = {"top1": 0.9, "top5": 1.0, "aurc": 0.01, "ece": 0.02, "per_step": [0.9], "selected": {"top1": 0.8}}
    assert final_metrics(metrics) == {"top1": 0.9, "top5": 1.0, "aurc": 0.01, "ece": 0.02, "selected_top1": 0.8}
    params = config_params(load_config(None, ["optim.epochs=7", "run.plugins=[a, b]"]))
    assert params["optim.epochs"] == "7" and params["run.plugins"] == '["a", "b"]' and params["data.name"] == "digits"


def test_a_run_is_copied_to_mlflow(tmp_path, store):
    result = train(config(tmp_path, "optim.epochs=2"))
    run_dir = result.run_dir
    experiment = store.get_experiment_by_name("tks-test")
    (run,) = store.search_runs([experiment.experiment_id])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert json.loads((run_dir / TRACKER_FILE).read_text())["run_id"] == run.info.run_id
    assert run.data.params["optim.epochs"] == "2" and run.data.params["run.tracker"] == "mlflow"
    history = store.get_metric_history(run.info.run_id, "test/top1")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["test"]["top1"]) for r in logged(run_dir)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["top1"] == metrics["top1"] and run.data.metrics["aurc"] == metrics["aurc"]
    artifacts = {a.path for a in store.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "log.jsonl", "checkpoint.pt", TRACKER_FILE} <= artifacts


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, store):
    def stop_after_first(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, "optim.epochs=3"), on_epoch_end=stop_after_first)
    (run_dir,) = (tmp_path / "runs").iterdir()
    resume(run_dir)
    (run,) = store.search_runs([store.get_experiment_by_name("tks-test").experiment_id])
    assert [m.step for m in store.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]
    assert run.info.status == "FINISHED"


def test_a_failing_tracker_is_one_warning_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")  # cannot be made
    with pytest.warns(TKSWarning, match=r"^MLflow tracking stopped: could not start the MLflow run \(") as caught:
        result = train(config(tmp_path, "optim.epochs=1"))
    assert len([w for w in caught if "MLflow" in str(w.message)]) == 1
    assert json.loads((result.run_dir / "metrics.json").read_text())["top1"] > 0  # nothing lost
    assert not (result.run_dir / TRACKER_FILE).exists()


@pytest.mark.slow
def test_the_runs_of_one_sweep_form_one_experiment(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("out_dir: out\nname: tracked-s{run.seed}\ngrid:\n  run.seed: [0, 1]\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.search_experiments()  # the store's tables made once: runs that start at once would race to make them
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_EXPERIMENT_NAME"}
    env.update(MLFLOW_TRACKING_URI=uri, TKS_CACHE=str(tmp_path / "cache"))
    overrides = [a for o in [*TINY, "optim.epochs=1", "run.tracker=mlflow"] for a in ("--set", o)]
    done = subprocess.run(
        [sys.executable, "-m", "tks", "sweep", str(sweep), *overrides],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    experiment = client.get_experiment_by_name("tks-sweep-out")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["run.seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_compare_tables_can_be_logged(tmp_path, store):
    from run_folders import fake_run

    from tks.compare import compare_runs
    from tks.tracking import log_files

    fake_run(tmp_path / "runs", "ce0")
    compare_runs([tmp_path / "runs"], out_dir=tmp_path / "tables")
    files = [tmp_path / "tables" / "compare.md", tmp_path / "tables" / "compare.csv"]
    run_id = log_files(files, "compare")
    assert {a.path for a in store.list_artifacts(run_id)} == {"compare.md", "compare.csv"}
    assert store.get_run(run_id).info.run_name == "compare"
