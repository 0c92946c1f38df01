"""A run folder and its files other than checkpoints, written here only, so that nothing is lost, duplicated or mixed.

``config.yaml``, ``log.jsonl``, ``metrics.json`` and ``features.npz`` are written by this module's functions;
``provenance.json`` through ``write_json``; the checkpoints by ``tks.checkpoint`` (docs/run-files.md).

* ``log.jsonl`` gets an epoch's line only after that epoch's checkpoint is on disk, and the checkpoint carries the
  line too: a crash between the two leaves the log one line short, and ``repair_log`` (run by every resume) puts
  back exactly the checkpoint's epochs, so no epoch is missing or written twice.
* ``metrics.json`` is merged, never overwritten: training writes the top level (the final model), ``tks eval``
  writes an entry per checkpoint file under ``eval``, stamped with the checkpoint's epoch, so results of two models
  never share a table and an evaluation of an intermediate checkpoint is recognisable as such.
* Every write is atomic (a temporary file renamed over the target); a write that fails names the file and the
  cause in one line (``RunFileError``).

Torch-free, so that the commands that only read run files stay light.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from tks.config import Config, ConfigError, dump_config, load_config
from tks.config.identity import changed_settings, describe_changes, identity_settings
from tks.errors import TKSError
from tks.paths import atomic_file

FINAL_CHECKPOINT = "checkpoint.pt"
"""The file holding a run's latest (at the end: final) model."""
BEST_CHECKPOINT = "best.pt"
"""The file holding the model of the best epoch on the selecting set."""
LOG = "log.jsonl"
"""One line per completed epoch."""


class RunFileError(TKSError):
    """A run file that cannot be read as tks wrote it, or cannot be written."""


def _cannot_write(path: Path, exc: OSError) -> RunFileError:
    return RunFileError(f"cannot write {path}: {exc.strerror or exc}")


def _write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary file, then rename); one ``RunFileError`` line when it fails."""
    with atomic_file(path, RunFileError) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename); one ``RunFileError`` line when the write fails."""
    _write_text(Path(path), json.dumps(data, indent=2) + "\n")


def check_config_file(run_dir: str | Path, config: Config) -> None:
    """Refuse a run folder whose ``config.yaml`` no longer describes ``config``, the experiment its checkpoint holds.

    A folder holds one experiment: an edited ``config.yaml`` would label the checkpoint's results with settings it
    was not trained with (``tks sweep`` and ``tks compare`` read that file).

    Raises:
        RunFileError: naming the settings that differ, or why the file cannot be read.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return
    try:
        on_disk = load_config(path, stored=True)
    except ConfigError as exc:
        raise RunFileError(f"{path} is no valid config any more ({' '.join(str(exc).split())})") from None
    changes = changed_settings(identity_settings(config), on_disk)
    if changes:
        what = describe_changes(changes, "the checkpoint", "config.yaml")
        raise RunFileError(
            f"{path} was changed after the run started ({what}): a run folder holds one experiment; put config.yaml "
            "back to resume, or train the new settings as a new run"
        )


def write_config(run_dir: str | Path, config: Config) -> None:
    """Write the resolved config of a new run to ``config.yaml`` (what ``tks compare`` and sweeps read)."""
    _write_text(Path(run_dir) / "config.yaml", dump_config(config))


def write_features(path: str | Path, features: np.ndarray, labels: np.ndarray, predictions: np.ndarray) -> None:
    """Write ``tks eval``'s features (``[N, D]``, labels and predictions ``[N]``) as a compressed ``.npz``."""
    with atomic_file(path, RunFileError) as tmp, open(tmp, "wb") as file:  # a file: numpy adds no suffix
        np.savez_compressed(file, features=features, labels=labels, predictions=predictions)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line; one ``RunFileError`` line when the write fails."""
    path = Path(path)
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as exc:
        raise _cannot_write(path, exc) from None


def read_metrics(path: str | Path) -> dict[str, Any]:
    """``metrics.json`` as a dict (empty when there is none yet).

    Raises:
        RunFileError: when the file is not a JSON object, so that nothing is computed only to be lost on writing.
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else " ".join(str(exc).split())
        raise RunFileError(f"{path} cannot be read as JSON ({reason}); repair or move it away, then retry") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path} holds a JSON {_json_kind(data)}, not an object; repair or move it away")
    evaluations = data.get("eval", {})
    if not isinstance(evaluations, dict):
        raise RunFileError(
            f'{path}: its "eval" holds a JSON {_json_kind(evaluations)}, not an object of evaluations by checkpoint '
            "file; repair or move it away"
        )
    if "checkpoint" not in evaluations:  # (a flat entry naming its file: the layout before one entry per file)
        for name, entry in evaluations.items():
            if not isinstance(entry, dict):
                raise RunFileError(
                    f'{path}: its "eval" entry {name!r} holds a JSON {_json_kind(entry)}, not an object of metrics; '
                    "repair or move it away"
                )
    return data


def _json_kind(value: Any) -> str:
    """JSON's name for the kind of a decoded value (``object``, ``array``, ``number``, ...)."""
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def is_finished(metrics: dict[str, Any]) -> bool:
    """Whether ``metrics.json`` holds the final model's metrics, which training writes when it ends."""
    return "top1" in metrics  # tks eval writes only under "eval"


def write_training_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Write the final model's metrics at the top level of ``metrics.json``, keeping the ``eval`` entries."""
    path = Path(run_dir) / "metrics.json"
    evaluations = read_metrics(path).get("eval")
    write_json(path, {**metrics, **({"eval": evaluations} if evaluations else {})})


def _entries(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    evaluations = metrics.get("eval") or {}
    if "checkpoint" in evaluations:  # written before the per-file layout: one flat entry naming its file
        flat = dict(evaluations)
        return {flat.pop("checkpoint"): flat}
    return evaluations


def merge_evaluation(run_dir: str | Path, checkpoint: str, epoch: int | None, evaluation: dict[str, Any]) -> None:
    """Add ``tks eval``'s results for one checkpoint file under ``eval[checkpoint]`` of ``metrics.json``.

    Values of T measured earlier for the same file and epoch are kept beside the new ones; an entry of another
    epoch (the file has been overwritten by later training since) is replaced. An entry without an epoch (written
    before entries had one, always of a finished run's final model) is kept and takes the new epoch.

    Args:
        run_dir: the run folder.
        checkpoint: the checkpoint's file name, e.g. ``checkpoint.pt`` or ``best.pt``.
        epoch: the completed epochs of the evaluated weights.
        evaluation: ``steps`` / ``steps_rebin`` (T -> metrics) and any of ``early_exit``, ``activity``,
            ``exit_rule``.
    """
    path = Path(run_dir) / "metrics.json"
    data = read_metrics(path)
    entries = _entries(data)
    previous = entries.get(checkpoint, {})
    if "epoch" in previous and previous["epoch"] != epoch:
        previous = {}
    merged = {**previous, **evaluation, "epoch": epoch}
    for key in ("steps", "steps_rebin"):
        steps = {**previous.get(key, {}), **evaluation.get(key, {})}
        if steps:
            merged[key] = dict(sorted(steps.items(), key=lambda kv: int(kv[0])))
    data["eval"] = {**entries, checkpoint: merged}
    write_json(path, data)


def final_evaluation(metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``tks eval`` results of the run's final model: ``eval["checkpoint.pt"]`` at the final epoch, or {}.

    An evaluation of ``checkpoint.pt`` made before training ended measured an earlier model and is left out (its
    epoch is not the final one). Files written before entries had an epoch count as the final model's.
    """
    entry = _entries(metrics).get(FINAL_CHECKPOINT, {})
    if "epoch" in entry and "epoch" in metrics and entry["epoch"] != metrics["epoch"]:
        return {}
    return entry


def repair_log(run_dir: str | Path, epoch: int, record: dict[str, Any] | None) -> None:
    """Make ``log.jsonl`` hold exactly one line for each epoch 1..``epoch`` of the checkpoint being resumed.

    Lines of later epochs (a log ahead of its checkpoint, from older versions or a crash) and a half-written last
    line are dropped; the checkpoint's own line (``record``) is put back when the crash came before it was appended.
    """
    path = Path(run_dir) / LOG
    kept: dict[int, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                line_epoch = json.loads(line)["epoch"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by the crash
            if isinstance(line_epoch, int) and 1 <= line_epoch <= epoch:
                kept.setdefault(line_epoch, line)
    if record is not None and epoch not in kept:
        kept[epoch] = json.dumps(record)
    text = "".join(kept[e] + "\n" for e in sorted(kept))
    if not path.exists() or path.read_text(encoding="utf-8", errors="replace") != text:
        _write_text(path, text)


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted write left in a run folder (``.<name>*.tmp``); returns them.

    Only safe while the folder is locked for this process (``tks.locks.lock_run_dir``): another writer's
    temporary file would otherwise be deleted under it.
    """
    stale = [p for p in Path(run_dir).glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def make_run_dir(out_dir: str | Path, name: str) -> Path:
    """Create ``<out_dir>/<name>-<YYYYmmdd-HHMMSS>`` (with a numeric suffix if it exists already).

    Runs started in the same second, even by processes racing each other, get different folders: the folder is
    created, not looked for first, and a name another process created meanwhile moves on to the next suffix.
    """
    base = Path(out_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    run_dir, n = base, 1
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            run_dir, n = base.with_name(f"{base.name}-{n}"), n + 1
