"""Random and mutated bytes through the three event readers and the framing: only the project's errors come out."""

import os

import numpy as np
import pytest
from data_files import EVENTS, aedat2_bytes, aedat4_bytes, recording
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tks.data.errors import DatasetError
from tks.data.event_io import read_aedat2, read_aedat4, read_atis_bin, write_atis_bin
from tks.data.frames import Framing

FUZZ = settings(
    max_examples=int(os.environ.get("TKS_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def bin_bytes(tmp_path):
    path = tmp_path / "seed.bin"
    write_atis_bin(path, *zip(*recording(0, n=12), strict=True))
    return path.read_bytes()


SEEDS = {
    "bin": lambda tmp: bin_bytes(tmp),
    "aedat": lambda tmp: aedat2_bytes(EVENTS),
    "aedat4-none": lambda tmp: aedat4_bytes(EVENTS, compression="none"),
    "aedat4-lz4": lambda tmp: aedat4_bytes(EVENTS, compression="lz4"),
    "aedat4-zstd": lambda tmp: aedat4_bytes(EVENTS, compression="zstd"),
}
READERS = {"bin": read_atis_bin, "aedat": read_aedat2, "aedat4": read_aedat4}


def read_and_frame(path, kind):
    """Either frames or a DatasetError; any other exception fails the test."""
    try:
        stream = READERS[kind](path)
        assert len(stream.offsets) == len(stream.events)
        assert np.all((stream.offsets >= 0) & (stream.offsets < path.stat().st_size))
        framing = (
            Framing(READERS[kind], 3, 4, crop_to_events=True)
            if kind == "bin"
            else Framing(READERS[kind], 3, 4, (256, 256))
        )
        frames = framing(path)
        assert frames.shape == (3, 2, 4, 4) and np.all(np.isfinite(frames))
    except DatasetError as exc:
        assert str(path) in str(exc)


@FUZZ
@given(kind=st.sampled_from(sorted(READERS)), data=st.binary(max_size=400), magic=st.booleans())
def test_random_bytes(tmp_path, kind, data, magic):
    prefix = {"bin": b"", "aedat": b"#!AER-DAT2.0\r\n", "aedat4": b"#!AER-DAT4.0\r\n"}[kind] if magic else b""
    path = tmp_path / f"f.{kind}"
    path.write_bytes(prefix + data)
    read_and_frame(path, kind)


@FUZZ
@given(seed=st.sampled_from(sorted(SEEDS)), edits=st.data())
def test_mutated_valid_files(tmp_path, seed, edits):
    data = bytearray(SEEDS[seed](tmp_path))
    for _ in range(edits.draw(st.integers(1, 6), label="edits")):
        op = edits.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]), label="op")
        at = edits.draw(st.integers(0, max(len(data) - 1, 0)), label="at")
        if op == "flip" and data:
            data[at] ^= 1 << edits.draw(st.integers(0, 7), label="bit")
        elif op == "set" and data:
            data[at] = edits.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, 240]), label="value")
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = edits.draw(st.binary(min_size=1, max_size=8), label="bytes")
        elif op == "delete":
            del data[at : at + edits.draw(st.integers(1, 8), label="length")]
    kind = seed.split("-")[0]
    path = tmp_path / f"f.{kind}"
    path.write_bytes(bytes(data))
    read_and_frame(path, kind)


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_unmutated_seeds_read_cleanly(tmp_path, seed):
    kind = seed.split("-")[0]
    path = tmp_path / f"f.{kind}"
    path.write_bytes(SEEDS[seed](tmp_path))
    stream = READERS[kind](path)
    assert len(stream.events) == (12 if kind == "bin" else len(EVENTS))
