"""The checkpoint file: one typed record (``CheckpointRecord``), written atomically and read safely.

This is the only module that knows the layout of ``checkpoint.pt`` and ``best.pt`` (docs/run-files.md): the record
turns into the file's dict in ``to_payload`` and back in ``from_payload``; files are read with ``weights_only=True``
and every failure is one ``CheckpointError`` line.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tks.errors import TKSError, short_message


class CheckpointError(TKSError):
    """A checkpoint that is missing, truncated or not ours."""


@dataclass(frozen=True)
class CheckpointRecord:
    """What a checkpoint holds: a trained model with its config, and what a run needs to continue exactly.

    Only ``model`` and ``config`` are required: a file with just those (an export's input, or a model saved by
    hand) loads as a model. Training writes every field. Fields added over time are optional on reading, so that
    checkpoints of older versions still load (``from_payload``).
    """

    model: Mapping[str, Tensor]
    """The weights: ``state_dict`` of the plain model (no DDP or ``torch.compile`` wrapper)."""
    config: Mapping[str, Any]
    """The resolved config as a plain dict (``tks.config.to_dict``)."""
    optimizer: Mapping[str, Any] | None = None
    scaler: Mapping[str, Any] | None = None
    """The fp16 gradient scaler's state (None for other precisions)."""
    epoch: int | None = None
    """Completed epochs of the weights (None when the file does not say)."""
    best_top1: float | None = None
    """Best top-1 so far on the selecting set."""
    best_epoch: int | None = None
    """The (1-based) epoch that reached it: the weights in ``best.pt``."""
    selected: Mapping[str, Any] | None = None
    """That epoch's test metrics (None in checkpoints written before they were recorded)."""
    train_seconds: float = 0.0
    """Wall time of every training session up to this checkpoint (0 in checkpoints written before it was)."""
    rng: Mapping[str, Any] | None = None
    """Every random generator's state (``tks.seeding.rng_state``; rank 0's when several processes trained)."""
    rng_ranks: Sequence[Mapping[str, Any]] | None = None
    """Each process's generator states, in rank order, when several trained (None: one process, or an older file)."""
    log: Mapping[str, Any] | None = None
    """This epoch's line of ``log.jsonl``: a resume puts it back when the append after the checkpoint was lost."""
    exit_rule: Mapping[str, Any] | None = None
    """The early-exit rule calibrated for these weights (``tks calibrate``, ``tks.anytime.ExitRule.to_dict``)."""

    @property
    def resumable(self) -> bool:
        """Whether it holds what continuing the run needs: optimizer, progress and generator states."""
        return None not in (self.optimizer, self.epoch, self.best_top1, self.best_epoch, self.rng)

    def rng_of(self, rank: int, world_size: int) -> Mapping[str, Any] | None:
        """The generator states that process ``rank`` of ``world_size`` continues from.

        Its own when the run was trained by as many processes: the ranks draw different numbers of random values
        (an augmentation whose draws depend on the image), so rank 0's states are not the others'. Otherwise
        (another number of processes, or a file without ``rng_ranks``) rank 0's.
        """
        if self.rng_ranks is not None and len(self.rng_ranks) == world_size:
            return self.rng_ranks[rank]
        return self.rng

    def load_weights(self, model: nn.Module, where: str | Path) -> None:
        """Put the record's weights into ``model`` (the plain model its config builds).

        Raises:
            CheckpointError: when the weights do not fit (a checkpoint of another version or a hand-edited config).
        """
        try:
            model.load_state_dict(self.model)
        except RuntimeError as exc:
            name = self.config.get("model", {}).get("name")
            raise CheckpointError(f"{where}: its weights do not fit model {name!r}: {short_message(exc)}") from None

    def to_payload(self) -> dict[str, Any]:
        """The dict stored in the file: tensors and plain Python values only (loadable with ``weights_only``)."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "epoch": self.epoch,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "selected": self.selected,
            "train_seconds": self.train_seconds,
            "rng": self.rng,
            "rng_ranks": self.rng_ranks,
            "log": self.log,
            "exit_rule": self.exit_rule,
            "config": self.config,
        }

    @classmethod
    def from_payload(cls, payload: Any, where: str | Path) -> CheckpointRecord:
        """The record of a file's dict, from this version or an older one.

        Raises:
            CheckpointError: when ``payload`` is not a dict with the mappings ``model`` and ``config``.
        """
        if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
            raise CheckpointError(f"{where} is not a tks checkpoint (expected a dict with 'model' and 'config')")
        for key in ("model", "config"):
            if not isinstance(payload[key], Mapping):
                kind = type(payload[key]).__name__
                raise CheckpointError(f"{where} is not a tks checkpoint: its {key!r} entry is a {kind}, not a mapping")
        return cls(
            model=payload["model"],
            config=payload["config"],
            optimizer=payload.get("optimizer"),
            scaler=payload.get("scaler") or None,
            epoch=payload.get("epoch"),
            best_top1=payload.get("best_top1"),
            best_epoch=payload.get("best_epoch"),
            selected=payload.get("selected"),
            train_seconds=payload.get("train_seconds", 0.0),
            rng=payload.get("rng"),
            rng_ranks=payload.get("rng_ranks"),
            log=payload.get("log"),
            exit_rule=payload.get("exit_rule"),
        )


def save_checkpoint(path: str | Path, record: CheckpointRecord) -> None:
    """Write ``record`` to ``path`` so that a crash never leaves a partial file behind.

    The data goes to a temporary file in the same folder, is flushed to disk, then renamed over ``path`` (an atomic
    replace on POSIX and Windows): readers see the old checkpoint or the new one, never a mix.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(record.to_payload(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(exc)
        if cause is not None:  # e.g. "No space left on device": the previous checkpoint is still whole
            raise CheckpointError(f"cannot write {path}: {cause.strerror or cause}") from None
        if isinstance(exc, RuntimeError) and "write" in str(exc).lower():  # torch.save wraps errors of its writer
            raise CheckpointError(f"cannot write {path}: {_first_line(exc)}") from None
        raise


def _os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc``: itself, or one it was raised while handling.

    torch's zip writer, failing on a full disk, raises ``RuntimeError: [enforce fail at inline_container.cc]
    unexpected pos`` over the ``OSError`` of the write.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> CheckpointRecord:
    """Read a checkpoint written by ``save_checkpoint``, by this version or an older one.

    Raises:
        CheckpointError: when the file is missing, corrupt, or holds something other than a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():  # torch's own hint would be to load it unsafely
            raise CheckpointError(
                f"refused {path}: the file holds objects other than tensors and plain data; not loaded, for safety"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {path} (corrupt or truncated?): {_first_line(exc)}") from None
    # what torch's readers raise on a file cut short or overwritten: its zip reader an OSError (EINVAL) for a file
    # cut past its first 4 KiB, the unpickler a LookupError (KeyError, IndexError) for garbage opcodes, and a
    # truncated file of the legacy format a struct.error
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, LookupError, struct.error) as exc:
        raise CheckpointError(f"cannot read checkpoint {path} (corrupt or truncated?): {_first_line(exc)}") from None
    return CheckpointRecord.from_payload(payload, path)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def copy_checkpoint(source: str | Path, target: str | Path) -> None:
    """Copy a checkpoint file atomically (temporary file in the target's folder, then rename)."""
    target = Path(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write {target}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise
