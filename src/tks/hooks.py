"""The work at the end of each training epoch (``tks.engine.fit``'s hooks): checkpoint, log line, TensorBoard.

A run (``tks.experiment``) calls them in this order on the main process: ``SaveCheckpoint`` (``checkpoint.pt``, and
``best.pt`` when the epoch improved), ``AppendLog`` (its line of ``log.jsonl``), ``TensorBoardScalars``,
``RecordSession`` (``provenance.json``), then the caller's function of the record (``OnRecord``). Checkpoint first,
log line after: a crash in between leaves a log one line short, which the resume mends from the checkpoint
(``tks.runfiles.repair_log``), never a log ahead of its checkpoint (an epoch logged twice).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tks.checkpoint import CheckpointRecord, copy_checkpoint, save_checkpoint
from tks.engine import EpochEnd, unwrap
from tks.extras import require
from tks.provenance import SessionLog
from tks.runfiles import BEST_CHECKPOINT, FINAL_CHECKPOINT, LOG, append_jsonl


class SaveCheckpoint:
    """Rewrite ``checkpoint.pt`` after every epoch (atomically); copy it to ``best.pt`` when the epoch improved.

    The checkpoint holds everything needed to continue exactly (``CheckpointRecord``): weights, optimizer, gradient
    scaler, completed epochs, best score, the selected epoch's test metrics, the random-generator states, the
    epoch's log line and ``config``.
    """

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        self.run_dir, self.config = Path(run_dir), config

    def __call__(self, end: EpochEnd) -> None:
        """Save the epoch's checkpoint, and copy it to ``best.pt`` when it is the best so far."""
        training, state = end.training, end.state
        record = CheckpointRecord(
            model=unwrap(training.model).state_dict(),
            config=self.config,
            optimizer=training.optimizer.state_dict(),
            scaler=training.scaler.state_dict() if training.scaler is not None else None,
            epoch=state.epoch,
            best_top1=state.best_top1,
            best_epoch=state.best_epoch,
            selected=state.selected,
            train_seconds=end.train_seconds,
            rng=end.rng[0],
            rng_ranks=end.rng if len(end.rng) > 1 else None,
            log=end.record,
        )
        save_checkpoint(self.run_dir / FINAL_CHECKPOINT, record)
        if end.improved:
            copy_checkpoint(self.run_dir / FINAL_CHECKPOINT, self.run_dir / BEST_CHECKPOINT)


class AppendLog:
    """Append the epoch's record to ``log.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOG

    def __call__(self, end: EpochEnd) -> None:
        """Append the record as one line."""
        append_jsonl(self.path, end.record)


class TensorBoardScalars:
    """Write the epoch's learning rate, TKS weight, training statistics and top-1/top-5/AURC to ``tensorboard/``.

    The writer is opened on construction, so that a missing tensorboard package stops the run before it trains.
    """

    def __init__(self, run_dir: Path) -> None:
        require("tensorboard", "run.tensorboard")  # torch.utils.tensorboard imports it
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def __call__(self, end: EpochEnd) -> None:
        """Add the record's scalars at step ``epoch``."""
        record, epoch = end.record, end.record["epoch"]
        self.writer.add_scalar("lr", record["lr"], epoch)
        self.writer.add_scalar("tks_weight", record["tks_weight"], epoch)
        for key, value in record["train"].items():
            self.writer.add_scalar(f"train/{key}", value, epoch)
        for split in ("val", "test", "train_eval"):
            for key in ("top1", "top5", "aurc"):
                if split in record:
                    self.writer.add_scalar(f"{split}/{key}", record[split][key], epoch)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class OnRecord:
    """Call a function with the epoch's record (the CLI prints it; a run updates its session log with it)."""

    def __init__(self, function: Callable[[dict[str, Any]], None]) -> None:
        self.function = function

    def __call__(self, end: EpochEnd) -> None:
        """Call the function with the record."""
        self.function(end.record)


class RecordSession:
    """Record the training session's progress in ``provenance.json`` (``tks.provenance.SessionLog``)."""

    def __init__(self, sessions: SessionLog) -> None:
        self.sessions = sessions

    def __call__(self, end: EpochEnd) -> None:
        """Update the session's last epoch, wall time and CPU time."""
        self.sessions.update(end.record["epoch"])
