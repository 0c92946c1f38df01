"""File helpers of the data package: the cache folder, atomic writes, natural file order."""

from __future__ import annotations

import os
import re
from pathlib import Path

CACHE_ENV = "TKS_CACHE"
"""Environment variable naming the cache folder (default ``~/.cache/tks``)."""


def cache_dir() -> Path:
    """The folder for generated data and frame caches: ``$TKS_CACHE``, else ``~/.cache/tks``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tks"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key that orders embedded numbers by value: ``x_2`` before ``x_10`` (recording order of CIFAR10-DVS)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))
