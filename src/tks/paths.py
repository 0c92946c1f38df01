"""Checks that an output path can be written, made before the work whose results would go there.

Torch-free, so that the commands that only read run files (``tks compare``, ``plot``, ``report``) stay light.
"""

from __future__ import annotations

import os
from pathlib import Path

from tks.config import ConfigError


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
