"""Experiment tracking: a run's config, epochs, final metrics and files sent to MLflow (``run.tracker: mlflow``).

The run folder stays the source of truth. The tracker only copies what the run writes there, and a tracker that
fails (a server that is down, a store that is locked) costs one ``TKSWarning`` and is switched off for the rest of
the session; training goes on and nothing of the run is lost.

Where the runs go is MLflow's own configuration: ``MLFLOW_TRACKING_URI`` (e.g. ``sqlite:///mlflow.db`` or
``http://host:5000``; MLflow's default otherwise) and ``MLFLOW_EXPERIMENT_NAME`` (default ``tks``; ``tks sweep``
sets it to ``tks-sweep-<out folder>``, so that the runs of one sweep form one experiment). A resumed run continues
the MLflow run it started, whose id is kept in ``<run folder>/tracker.json``.

MLflow is the optional ``mlflow`` extra, imported only when a tracker is made.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from tks.config import Config, flatten, to_dict
from tks.errors import TKSWarning, short_message
from tks.extras import require

TRACKER_FILE = "tracker.json"
"""The run folder's record of its MLflow run id, so that a resumed run continues it."""
DEFAULT_EXPERIMENT = "tks"
FINAL_KEYS = ("top1", "top5", "aurc", "e_aurc", "ece")
"""The final model's metrics logged at the end (and the selected model's, prefixed ``selected_``)."""


def experiment_name() -> str:
    """``MLFLOW_EXPERIMENT_NAME``, else ``tks``."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one ``log.jsonl`` record, as MLflow metric names: ``lr``, ``train/loss``, ``test/top1``, ...

    Lists (per-step accuracies) and non-numbers are left out; they stay in the run folder.
    """
    metrics = {key: record[key] for key in ("lr", "tks_weight") if _is_number(record.get(key))}
    for split in ("train", "val", "test", "train_eval"):
        for key, value in (record.get(split) or {}).items():
            if _is_number(value):
                metrics[f"{split}/{key}"] = value
    return {key: float(value) for key, value in metrics.items()}


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The final model's ``FINAL_KEYS`` and the selected model's (``selected_top1``, ...), where present."""
    final = {key: metrics[key] for key in FINAL_KEYS if _is_number(metrics.get(key))}
    selected = metrics.get("selected") or {}
    final.update({f"selected_{key}": selected[key] for key in FINAL_KEYS if _is_number(selected.get(key))})
    return {key: float(value) for key, value in final.items()}


def config_params(config: Config) -> dict[str, str]:
    """The config flattened to ``section.key`` parameters, values as text (MLflow stores parameters as text)."""
    return {
        key: json.dumps(value) if not isinstance(value, str) else value
        for key, value in flatten(to_dict(config)).items()
    }


def _experiment_id(client: Any) -> str:
    """The id of the experiment ``experiment_name()``, made if it does not exist yet."""
    name = experiment_name()
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class MLflowTracker:
    """Copies one run to MLflow: parameters at the start, metrics every epoch, final metrics and files at the end.

    Every call is guarded: the first failure warns once (``TKSWarning``) and turns the tracker off.

    Args:
        run_dir: the run folder (its name names the MLflow run).
        config: the run's config, logged as parameters.
    """

    def __init__(self, run_dir: Path, config: Config) -> None:
        self.mlflow: ModuleType | None = require("mlflow", "run.tracker: mlflow")  # before training, if missing
        self.run_dir = Path(run_dir)
        self.run_id: str | None = None
        with self._guard("start the MLflow run"):
            self.run_id = self._start(config)

    def _start(self, config: Config) -> str:
        mlflow = self.mlflow
        record = self.run_dir / TRACKER_FILE
        client = mlflow.MlflowClient()
        if record.is_file():  # a resumed run: continue the MLflow run of its first session
            run_id = json.loads(record.read_text(encoding="utf-8"))["run_id"]
            client.update_run(run_id, status="RUNNING")
            return run_id
        run = client.create_run(
            _experiment_id(client), run_name=self.run_dir.name, tags={"tks.run_dir": str(self.run_dir)}
        )
        params = [mlflow.entities.Param(k, v[:6000]) for k, v in config_params(config).items()]
        client.log_batch(run.info.run_id, params=params)
        record.write_text(json.dumps({"tracker": "mlflow", "run_id": run.info.run_id}) + "\n", encoding="utf-8")
        return run.info.run_id

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Run a tracker call; on failure warn once and switch the tracker off."""
        if self.mlflow is None:
            yield
            return
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - whatever the tracking client raises: the run must go on
            self.mlflow = None
            warnings.warn(
                f"MLflow tracking stopped: could not {what} ({short_message(exc)}); the run goes on, and its folder "
                f"{self.run_dir} holds everything",
                TKSWarning,
                stacklevel=3,
            )

    def _log(self, what: str, call: Callable[[ModuleType, str], None]) -> None:
        if self.mlflow is None or self.run_id is None:
            return
        with self._guard(what):
            call(self.mlflow, self.run_id)

    def epoch(self, record: Mapping[str, Any]) -> None:
        """Log one epoch's numbers at step ``epoch``."""

        def log(mlflow: ModuleType, run_id: str) -> None:
            step = int(record["epoch"])
            metrics = [mlflow.entities.Metric(k, v, 0, step) for k, v in epoch_metrics(record).items()]
            mlflow.MlflowClient().log_batch(run_id, metrics=metrics)

        self._log(f"log epoch {record.get('epoch')}", log)

    def finish(self, metrics: Mapping[str, Any]) -> None:
        """Log the final (and selected) metrics and the run folder's files, and end the MLflow run."""

        def log(mlflow: ModuleType, run_id: str) -> None:
            client = mlflow.MlflowClient()
            step = int(metrics.get("epoch") or 0)
            client.log_batch(
                run_id, metrics=[mlflow.entities.Metric(k, v, 0, step) for k, v in final_metrics(metrics).items()]
            )
            for path in sorted(p for p in self.run_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
                client.log_artifact(run_id, str(path))
            client.set_terminated(run_id)

        self._log("log the final metrics and files", log)

    def __call__(self, end: Any) -> None:
        """An epoch-end hook (``tks.engine.EpochEnd``)."""
        self.epoch(end.record)


def log_files(files: list[Path], run_name: str) -> str | None:
    """Log files (e.g. ``tks compare``'s tables) as the artifacts of a new MLflow run; its id, or None on failure.

    A failure warns (``TKSWarning``) and returns None: the files are written already.
    """
    mlflow = require("mlflow", "--tracker mlflow")
    try:
        client = mlflow.MlflowClient()
        run = client.create_run(_experiment_id(client), run_name=run_name)
        for path in files:
            client.log_artifact(run.info.run_id, str(path))
        client.set_terminated(run.info.run_id)
        return run.info.run_id
    except Exception as exc:  # noqa: BLE001 - the tables are on disk whatever the tracker does
        warnings.warn(f"MLflow tracking failed: {short_message(exc)}; the files are in place", TKSWarning, stacklevel=2)
        return None
