"""digits-dvs: the 1,797 bundled digits (``tks.data.digits``) seen by a simulated event camera, as N-MNIST was.

Each 8x8 digit is upscaled x3 (bilinear) to 24x24 and placed in the middle of a 34x34 sensor (N-MNIST's size),
then moved along three 100 ms saccades that trace a triangle. Every 4 ms the simulated pixel compares its log
intensity ``log(I + 0.1)`` with its level at its last event and emits one event per contrast threshold crossed
(threshold 0.3, varied per pixel by a fixed 2% mismatch): ON when brighter, OFF when darker, each stamped at the
time within the step where the linearly interpolated log intensity crosses its level. There is no noise.

The result is deterministic. It is generated on first use (a few seconds) into ``$TKS_CACHE/digits-dvs`` (or the
given root) as one ATIS ``.bin`` file per digit, ``<label>/digit_<index>.bin``, and read back through the same
reader and framing as N-Caltech101 (on the fixed 34x34 sensor).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tks.data.digits import digit_arrays
from tks.data.errors import DatasetError
from tks.data.event_io import write_atis_bin
from tks.data.files import atomic_write_bytes
from tks.locks import build_lock, partial_path, publish, remove_dead_partials

VERSION = 1
SENSOR = 34
SCALE = 3
LOG_EPS = 0.1
CONTRAST = 0.3
MISMATCH = 0.02
STEP_US = 4_000
SACCADE_US = 100_000
SACCADES = np.array([(-2.0, -1.5), (2.0, -1.5), (0.0, 2.0), (-2.0, -1.5)])  # (x, y) offsets of the triangle's corners
SEED = 0


def _render(canvas: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``canvas`` ``[N, H, W]`` shifted by ``(dx, dy)`` pixels with bilinear interpolation.

    The digit sits at least 3 pixels from every border, so rolling never wraps it around.
    """
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - ix, dy - iy
    rows = (1 - fy) * np.roll(canvas, iy, axis=1) + fy * np.roll(canvas, iy + 1, axis=1)
    return (1 - fx) * np.roll(rows, ix, axis=2) + fx * np.roll(rows, ix + 1, axis=2)


def _path(time_us: float) -> tuple[float, float]:
    """Position of the image at a time: constant speed along each saccade."""
    s = min(int(time_us // SACCADE_US), len(SACCADES) - 2)
    frac = (time_us - s * SACCADE_US) / SACCADE_US
    x, y = SACCADES[s] + frac * (SACCADES[s + 1] - SACCADES[s])
    return float(x), float(y)


Events = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def simulate(images: np.ndarray, chunk: int = 128) -> list[Events]:
    """Events of each image moved along the saccade path (see the module docstring).

    Args:
        images: ``[N, 8, 8]`` intensities in [0, 1].
        chunk: images simulated together (small enough for the working arrays to stay in cache).

    Returns:
        Per image ``(x, y, t, p)``: int arrays sorted by time, x and y in 0..33, t in microseconds, p 1 = ON.
    """
    threshold = CONTRAST * (1 + MISMATCH * np.random.default_rng(SEED).standard_normal((SENSOR, SENSOR)))
    threshold = threshold.astype(np.float32)  # one sensor: the same mismatch for every image
    return [events for i in range(0, len(images), chunk) for events in _simulate(images[i : i + chunk], threshold)]


def _simulate(images: np.ndarray, threshold: np.ndarray) -> list[Events]:
    n = len(images)
    big = F.interpolate(torch.from_numpy(images[:, None].astype(np.float32)), scale_factor=SCALE, mode="bilinear")
    size = big.shape[-1]
    canvas = np.zeros((n, SENSOR, SENSOR), dtype=np.float32)
    start = (SENSOR - size) // 2
    canvas[:, start : start + size, start : start + size] = big[:, 0].numpy()

    level_prev = np.log(_render(canvas, *_path(0)) + LOG_EPS)
    reference = level_prev.copy()  # each pixel's log intensity at its last event
    flat_threshold = np.broadcast_to(threshold, canvas.shape).ravel()
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for step in range(1, (len(SACCADES) - 1) * SACCADE_US // STEP_US + 1):
        level = np.log(_render(canvas, *_path(step * STEP_US)) + LOG_EPS)
        diff = (level - reference).ravel()
        where = np.flatnonzero(np.abs(diff) >= flat_threshold)  # flat (image, y, x) indices of pixels that fire
        thr, d = flat_threshold[where], diff[where]
        count = (np.abs(d) / thr).astype(np.int64)  # thresholds crossed since the pixel's last event
        where, thr, d, count = where[count > 0], thr[count > 0], d[count > 0], count[count > 0]  # float rounding
        sign = np.sign(d)
        before, after, ref = level_prev.ravel()[where], level.ravel()[where], reference.ravel()[where]
        rep = np.repeat(np.arange(where.size), count)
        k = np.arange(rep.size) - np.repeat(np.cumsum(count) - count, count) + 1  # 1..count per pixel
        crossed = ref[rep] + (sign * thr)[rep] * k
        change = (after - before)[rep]
        # rounding can leave a pixel a hair past its level without any change: stamp it at the step's end
        frac = np.clip(np.divide(crossed - before[rep], change, out=np.ones_like(change), where=change != 0), 0, 1)
        parts.append((where[rep], np.rint((step - 1 + frac) * STEP_US).astype(np.int64), sign[rep] > 0))
        reference.ravel()[where] = ref + sign * count * thr
        level_prev = level
    flat, t, on = (np.concatenate(a) for a in zip(*parts, strict=True))
    order = np.argsort((flat // SENSOR**2) * SACCADE_US * len(SACCADES) + t, kind="stable")  # by image, then time
    flat, t, p = flat[order], t[order], on[order].astype(np.int64)
    img, y, x = flat // SENSOR**2, flat // SENSOR % SENSOR, flat % SENSOR
    bounds = np.searchsorted(img, np.arange(n + 1))
    return [tuple(a[bounds[i] : bounds[i + 1]] for a in (x, y, t, p)) for i in range(n)]


def _is_complete(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("version") == VERSION and len(list(folder.glob("*/*.bin"))) == manifest.get("count")


def ensure_digits_dvs(folder: Path) -> Path:
    """Generate digits-dvs into ``folder`` unless a complete copy of this version is there; returns ``folder``.

    Safe to call from several processes at once: one generates (holding a lock beside ``folder``) while the others
    wait and then use its copy. The files are written into a sibling ``*.partial-<pid>`` folder and renamed into
    place when complete, so a complete copy is never deleted or rewritten; an older version is replaced.

    Raises:
        DatasetError: when ``folder`` holds other files (it is never overwritten unless it holds digits-dvs).
    """
    if _is_complete(folder):
        return folder
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "manifest.json").exists():
        raise DatasetError(f"digits-dvs: {folder} holds other files; give an empty or new folder as its root")
    with build_lock(folder, f"digits-dvs in {folder}"):
        if not _is_complete(folder):  # checked again: another process may have generated it while this one waited
            _generate(folder)
    return folder


def _generate(folder: Path) -> None:
    images, labels, _, _ = digit_arrays()
    remove_dead_partials(folder)
    tmp = partial_path(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for label in range(10):
            (tmp / str(label)).mkdir(parents=True)
        recordings = simulate((images / 16.0).astype(np.float64))
        for index, (label, (x, y, t, p)) in enumerate(zip(labels, recordings, strict=True)):
            write_atis_bin(tmp / str(label) / f"digit_{index:04d}.bin", x, y, t, p)
        manifest = {"version": VERSION, "count": len(recordings), "sensor": [SENSOR, SENSOR], "seed": SEED}
        atomic_write_bytes(tmp / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
        publish(tmp, folder, _is_complete)
    except OSError as exc:  # a full disk: one line, and no half-written copy left (below)
        raise DatasetError(f"cannot write digits-dvs into {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; removes a failed build's half-written files
