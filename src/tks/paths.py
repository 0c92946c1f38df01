"""Output paths: writable-path checks and ``atomic_file``, through which each file tks writes is whole or absent.

The checks run before the work whose results would go there.

Torch-free, so that the commands that only read run files (``tks compare``, ``plot``, ``report``) stay light.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tks.config import ConfigError
from tks.errors import TKSError


class WriteError(TKSError):
    """An output file that could not be written (a full disk, a file-size limit, no permission)."""


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_file(path: str | Path, error: type[TKSError] = WriteError) -> Iterator[Path]:
    """Write ``path`` whole or not at all: yields a temporary path beside it, renamed over ``path`` at the end.

    Whatever the block raises, the temporary file is removed and ``path`` keeps its old content (or stays absent).
    An ``OSError`` (``ENOSPC``, ``EFBIG``, ``EACCES``, ...) becomes one line, ``cannot write <path>: <cause>``,
    of type ``error``. Writers that infer a format from the file name must be told the format (the temporary name
    ends in ``.tmp``).

    Example::

        with atomic_file(out / "compare.md") as tmp:
            tmp.write_text(markdown)
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def check_writable_folder(path: str | Path, key: str) -> None:
    """Raise unless ``path`` is a writable folder or can be created as one.

    The first existing path on the way up decides: a file there (``path`` is a file or lies below one) or a folder
    without write permission is refused.

    Args:
        path: the folder a setting names.
        key: the setting, for the message (e.g. ``run.out_dir`` or ``--out``).
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies below the file {existing}"
        raise ConfigError(f"{key} {path} {where}; it must be a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} {path}: {existing} is read-only")


def check_writable_file(path: str | Path, key: str) -> None:
    """Raise unless ``path`` can be written as a file: not a folder, in a folder that exists or can be made.

    Args:
        path: the file a setting names.
        key: the setting, for the message (e.g. ``--out``).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{key} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{key} {path} is read-only")
    check_writable_folder(path.parent, f"{key} {path}: its folder")
