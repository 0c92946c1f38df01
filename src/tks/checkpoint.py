"""Checkpoints: written atomically, read with ``weights_only=True``, failing with a clear message."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tks.errors import TKSError


class CheckpointError(TKSError):
    """A checkpoint that is missing, truncated or not ours."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` so that a crash never leaves a partial file behind.

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
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # e.g. "No space left on device": the previous checkpoint is still whole
            raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
        if isinstance(exc, RuntimeError) and "write" in str(exc).lower():  # torch.save wraps errors of its writer
            raise CheckpointError(f"cannot write {path}: {_first_line(exc)}") from None
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors and plain Python values only).

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
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path} (corrupt or truncated?): {_first_line(exc)}") from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path} is not a tks checkpoint (expected a dict with 'model' and 'config')")
    for key in ("model", "config"):
        if not isinstance(payload[key], Mapping):
            kind = type(payload[key]).__name__
            raise CheckpointError(f"{path} is not a tks checkpoint: its {key!r} entry is a {kind}, not a mapping")
    return payload


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
