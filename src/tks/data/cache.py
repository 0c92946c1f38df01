"""The frame cache: event recordings framed once, stored as one memory-mappable array, checked before every use.

A cache folder ``<cache root>/<dataset>-<split scheme>-<split>-T<T>-<S>px-<source hash>/`` holds
``frames.npy`` (float32 ``[N, T, 2, S, S]``), ``labels.npy`` (int64 ``[N]``) and ``manifest.json``. The
manifest records the format version, dataset, split, T, S, the source folder and a fingerprint of every source
file (path, size, modification time, label). A cache is used only when all of these match and both arrays have
the recorded shape; otherwise it is stale or partial and is rebuilt, with a warning saying why.

A build writes into a sibling ``*.partial-<pid>`` folder and renames it into place when complete (manifest
last), so an interrupted build never leaves a cache that looks valid. Several processes may ask for one cache at
once (two trainings, ``tks prepare``): one builds, holding a lock beside the folder, and the others wait for it
and use its copy; a valid cache is never rebuilt or deleted (``tks.locks``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tks.data.errors import DatasetError
from tks.data.files import atomic_write_bytes
from tks.data.frames import Framing
from tks.locks import build_lock, partial_path, publish, remove_dead_partials

FORMAT_VERSION = 1
"""Bumped whenever the framing changes, so that caches written by older code are rebuilt."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheKey:
    """What a frame cache depends on, besides the source files themselves."""

    dataset: str
    split: str
    split_scheme: str
    num_frames: int
    frame_size: int
    source: str

    def folder_name(self) -> str:
        """``<dataset>-<scheme>-<split>-T<T>-<S>px-<8 hex digits of the source path's hash>``."""
        digest = hashlib.sha256(self.source.encode()).hexdigest()[:8]
        return f"{self.dataset}-{self.split_scheme}-{self.split}-T{self.num_frames}-{self.frame_size}px-{digest}"


@dataclass(frozen=True)
class FrameJob:
    """What one cache holds: the frames of ``files`` (in order) made by ``framing``, labelled ``targets``."""

    key: CacheKey
    files: Sequence[Path]
    targets: np.ndarray
    framing: Framing


def fingerprint(files: Sequence[Path], targets: np.ndarray) -> str:
    """SHA-256 over each source file's path, size, modification time and label: a changed file changes it."""
    digest = hashlib.sha256()
    for path, label in zip(files, targets, strict=True):
        stat = path.stat()
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\t{label}\n".encode())
    return digest.hexdigest()


def check(folder: Path, job: FrameJob) -> str | None:
    """Why the cache in ``folder`` cannot be used for ``job``, or ``None`` when it is complete and up to date."""
    key, files, targets = job.key, job.files, job.targets
    manifest_file = folder / "manifest.json"
    if not folder.is_dir():
        return "missing"
    if not manifest_file.is_file():
        return "partial (no manifest.json)"
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError):
        return "partial (manifest.json unreadable)"
    if manifest.get("version") != FORMAT_VERSION:
        return f"stale (format version {manifest.get('version')}, this code writes {FORMAT_VERSION})"
    recorded = {name: manifest.get(name) for name in asdict(key)}
    if recorded != asdict(key):
        changed = ", ".join(name for name in recorded if recorded[name] != getattr(key, name))
        return f"stale ({changed} differ)"
    if manifest.get("count") != len(files) or manifest.get("fingerprint") != fingerprint(files, targets):
        return "stale (the source files changed)"
    shape = (len(files), key.num_frames, 2, key.frame_size, key.frame_size)
    try:
        frames = np.load(folder / "frames.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy")
    except (OSError, ValueError) as exc:  # numpy raises ValueError for a file shorter than its header says
        return f"partial ({type(exc).__name__}: {exc})"
    if frames.shape != shape or frames.dtype != np.float32:
        return f"partial (frames.npy is {frames.dtype}{list(frames.shape)}, expected float32{list(shape)})"
    if not np.array_equal(labels, targets):
        return "stale (labels differ)"
    return None


def _one_thread() -> None:
    torch.set_num_threads(1)  # each worker process frames one file at a time; threads would only compete


def _frames_in_order(framing: Framing, files: Sequence[Path], workers: int) -> Iterator[np.ndarray]:
    if workers <= 1:
        yield from map(framing, files)
        return
    with ProcessPoolExecutor(workers, initializer=_one_thread) as pool:
        yield from pool.map(framing, files, chunksize=8)


def build(folder: Path, job: FrameJob, *, workers: int = 0, progress: bool = True) -> None:
    """Frame every file of ``job`` and publish the cache atomically (see the module docstring).

    The caller holds the folder's build lock (``ensure`` does).

    Args:
        folder: the cache folder to (re)create.
        job: the files, labels, framing (its T and S match ``job.key``) and the key written to the manifest.
        workers: processes that frame files in parallel (0 or 1: this process).
        progress: show a progress bar on a terminal.
    """
    key, files, targets = job.key, job.files, job.targets
    remove_dead_partials(folder)  # left by a build that was killed
    tmp = partial_path(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shape = (len(files), key.num_frames, 2, key.frame_size, key.frame_size)
        frames = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=np.float32, shape=shape)
        desc = f"framing {key.dataset} {key.split} (T={key.num_frames}, {key.frame_size}px)"
        with tqdm(total=len(files), desc=desc, unit="sample", disable=None if progress else True) as bar:
            for i, sample in enumerate(_frames_in_order(job.framing, files, workers)):
                frames[i] = sample
                bar.update()
        frames.flush()
        del frames
        np.save(tmp / "labels.npy", np.asarray(targets, dtype=np.int64))
        manifest = {
            "version": FORMAT_VERSION,
            **asdict(key),
            "count": len(files),
            "fingerprint": fingerprint(files, targets),
        }
        atomic_write_bytes(tmp / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
        publish(tmp, folder, lambda f: check(f, job) is None)
    except OSError as exc:  # a full disk: one line, and no half-built cache left (below)
        raise DatasetError(f"cannot write the frame cache {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; removes a failed build's half-written files


def ensure(root: Path, job: FrameJob, *, workers: int = 0, progress: bool = True) -> Path:
    """The folder of a valid cache for ``job`` under ``root``, built or rebuilt first when needed.

    Returns:
        The cache folder; its ``frames.npy`` holds the frames of ``job.files`` in order.
    """
    folder = root / job.key.folder_name()
    if check(folder, job) is None:
        return folder
    with build_lock(folder, f"the frame cache {folder}"):
        reason = check(folder, job)  # again: another process may have built it while this one waited
        if reason is not None:
            if reason != "missing":
                log.warning("frame cache %s is %s; rebuilding it", folder, reason)
            build(folder, job, workers=workers, progress=progress)
    return folder
