"""Event recordings to frames ``[T, 2, S, S]``, and the datasets that serve them.

Framing, as the official code (docs/reference.md §5.3): tonic's ``ToFrame(n_time_bins=T)`` splits the span
``[t_first, t_last]`` of a recording into T windows of ``(t_last - t_first) // T`` microseconds and counts the
events of each polarity per pixel (channel 0 = OFF, 1 = ON). The right edge of the last window is exclusive, so
the events at ``t_last`` are dropped (and, because the window length is floored, any in the last
``(t_last - t_first) % T`` microseconds); a recording shorter than T microseconds gives empty frames. The counts
become float32 and are resized to ``S x S`` with bilinear interpolation (``align_corners=True``), with no
normalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from tks.data.errors import EventFileError
from tks.data.event_io import FEATURE, EventStream
from tks.extras import require

FrameTransform = Callable[[Tensor], Tensor]
MAX_SPAN_US = 2**40
"""Longest plausible recording (about 12 days); a longer span means corrupt timestamps, which would also overflow
the int64 arithmetic of the time bins."""


def frame_events(events: np.ndarray, sensor_size: tuple[int, int], num_frames: int, frame_size: int) -> np.ndarray:
    """Count events into ``num_frames`` equal time bins per polarity and resize (see the module docstring).

    Args:
        events: structured array with fields x, y, t, p; coordinates inside ``sensor_size``; not empty.
        sensor_size: ``(width, height)``.
        num_frames: T.
        frame_size: S, the side of the square output.

    Returns:
        float32 ``[T, 2, S, S]``.
    """
    if np.any(events["t"][1:] < events["t"][:-1]):  # ToFrame bins by searching sorted timestamps
        events = events[np.argsort(events["t"], kind="stable")]
    to_frame = require("tonic.transforms", FEATURE).ToFrame(sensor_size=(*sensor_size, 2), n_time_bins=num_frames)
    counts = to_frame(events)  # int16 [T, 2, H, W]
    frames = counts.astype(np.float32)
    if frames.shape[-2:] == (frame_size, frame_size):
        return frames  # bilinear with align_corners=True maps every pixel onto itself
    return F.interpolate(
        torch.from_numpy(frames), size=(frame_size, frame_size), mode="bilinear", align_corners=True
    ).numpy()


@dataclass(frozen=True)
class Framing:
    """How one dataset turns a recording file into frames; picklable, so worker processes can run it.

    Attributes:
        read: the format's reader (``tks.data.event_io``).
        num_frames: T.
        frame_size: S.
        sensor_size: a fixed ``(width, height)``; ``None`` takes the size the file declares.
        crop_to_events: shift x and y so that their minimum is 0 and take the sensor as the events' extent
            (N-Caltech101, whose recordings differ in size: tonic and the official code do this).
    """

    read: Callable[[Path], EventStream]
    num_frames: int
    frame_size: int
    sensor_size: tuple[int, int] | None = None
    crop_to_events: bool = False

    def __call__(self, path: Path) -> np.ndarray:
        """Frames ``[T, 2, S, S]`` float32 of one recording.

        Raises:
            EventFileError: for a corrupt file, one without events, timestamps spanning more than ``MAX_SPAN_US``,
                or an event off the sensor.
        """
        stream = self.read(path)
        events = stream.events
        if len(events) == 0:
            raise EventFileError(path, 0, "the recording holds no events")
        first, last = int(np.argmin(events["t"])), int(np.argmax(events["t"]))
        if int(events["t"][last]) - int(events["t"][first]) > MAX_SPAN_US:  # corrupt timestamps, not a recording
            span = int(events["t"][last]) - int(events["t"][first])
            raise EventFileError(path, int(stream.offsets[last]), f"timestamps span {span} us, more than 2**40")
        if self.crop_to_events:
            events = events.copy()
            events["x"] -= events["x"].min()
            events["y"] -= events["y"].min()
            size = (int(events["x"].max()) + 1, int(events["y"].max()) + 1)
        else:
            size = self.sensor_size or stream.sensor_size
            if size is None:
                raise ValueError(f"{self.read.__name__} files declare no sensor size; give Framing a sensor_size")
            off = np.flatnonzero(
                (events["x"] < 0) | (events["x"] >= size[0]) | (events["y"] < 0) | (events["y"] >= size[1])
            )
            if off.size:
                e = events[off[0]]
                problem = f"event at x={e['x']}, y={e['y']} lies outside the {size[0]}x{size[1]} sensor"
                raise EventFileError(path, int(stream.offsets[off[0]]), problem)
        return frame_events(events, size, self.num_frames, self.frame_size)


def event_augmentation(frame_size: int) -> FrameTransform:
    """The official CIFAR10-DVS training augmentation: crop (pad 4), horizontal flip, rotation within +-15 degrees.

    torchvision draws one set of parameters per call and applies it to every leading index, so all T frames and
    both polarities of a sample move together.
    """
    transforms = require("torchvision.transforms", "augmentation of event data")
    return transforms.Compose(
        [transforms.RandomCrop(frame_size, padding=4), transforms.RandomHorizontalFlip(), transforms.RandomRotation(15)]
    )


class FrameDataset(Dataset):
    """Event samples ``(frames [T, 2, S, S] float32, label)``, from a frame cache or framed on every access.

    Args:
        targets: ``[N]`` labels.
        frames_file: a cache's ``frames.npy`` ``[N, T, 2, S, S]``, memory-mapped on first access (in each
            DataLoader worker, so nothing large is pickled).
        files: recordings to frame on each access, when there is no cache.
        framing: how to frame ``files``.
        transform: applied to each sample's frames tensor (training augmentation).
    """

    def __init__(
        self,
        targets: np.ndarray,
        *,
        frames_file: Path | None = None,
        files: Sequence[Path] = (),
        framing: Framing | None = None,
        transform: FrameTransform | None = None,
    ) -> None:
        if (frames_file is None) == (framing is None):
            raise ValueError("give either frames_file or files with a framing")
        self.targets = np.asarray(targets, dtype=np.int64)
        self.frames_file, self.files, self.framing, self.transform = frames_file, list(files), framing, transform
        self._frames: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if self.framing is not None:
            frames = torch.from_numpy(self.framing(self.files[index]))
        else:
            if self._frames is None:
                self._frames = np.load(self.frames_file, mmap_mode="r")
            frames = torch.from_numpy(np.array(self._frames[index]))  # copy out of the read-only map
        if self.transform is not None:
            frames = self.transform(frames)
        return frames, int(self.targets[index])
