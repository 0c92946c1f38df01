"""Event readers and framing, on files the tests write byte by byte and on two real recordings."""

import struct
from pathlib import Path

import numpy as np
import pytest
from data_files import EVENTS, aedat2_bytes, aedat4_bytes, columns
from tonic.io import events_struct, read_mnist_file
from tonic.io import read_aedat4 as tonic_read_aedat4

from tks.data.errors import EventFileError
from tks.data.event_io import EVENTS as OUR_EVENTS
from tks.data.event_io import read_aedat2, read_aedat4, read_atis_bin, write_atis_bin
from tks.data.frames import Framing, frame_events

REAL = Path(__file__).parents[1] / ".." / "shared" / "data" / "events"
needs_real = pytest.mark.skipif(
    not (REAL / "README.md").is_file(), reason="the real recordings of ../shared/data/events/ are not present"
)


def fields(stream):
    e = stream.events
    return list(zip(e["x"].tolist(), e["y"].tolist(), e["t"].tolist(), e["p"].astype(int).tolist(), strict=True))


# ------------------------------------------------------------------------------------------------ readers


def test_atis_bin_round_trip_matches_tonic(tmp_path):
    events = [*EVENTS, (255, 239, 2**23 - 1, 1)]
    path = tmp_path / "a.bin"
    write_atis_bin(path, *columns(events))
    assert path.stat().st_size == 5 * len(events)
    stream = read_atis_bin(path)
    assert fields(stream) == events and stream.sensor_size is None
    assert stream.offsets.tolist() == [5 * i for i in range(len(events))]
    tonic = read_mnist_file(str(path), dtype=stream.events.dtype)
    assert np.array_equal(tonic, stream.events)


def test_atis_overflow_marker_is_dropped_and_offsets_skip_it(tmp_path):
    path = tmp_path / "a.bin"
    write_atis_bin(path, *columns(EVENTS[:2]))
    path.write_bytes(path.read_bytes()[:5] + bytes([0, 240, 0, 0, 0]) + path.read_bytes()[5:])
    stream = read_atis_bin(path)
    assert stream.offsets.tolist() == [0, 10]
    assert stream.events["t"].tolist() == [10, 20 + 2**13]  # tonic adds 2**13 us after each marker


def test_aedat2_decodes_tonic_bit_layout(tmp_path):
    path = tmp_path / "a.aedat"
    path.write_bytes(aedat2_bytes(EVENTS))
    stream = read_aedat2(path)
    assert fields(stream) == EVENTS and stream.sensor_size == (128, 128)
    header = len(b"#!AER-DAT2.0\r\n# written by the tks tests\r\n")
    assert stream.offsets.tolist() == [header + 8 * i for i in range(len(EVENTS))]


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_aedat4_matches_the_aedat_package(tmp_path, compression):
    path = tmp_path / "a.aedat4"
    path.write_bytes(aedat4_bytes(EVENTS, size=(64, 48), compression=compression))
    stream = read_aedat4(path)
    assert fields(stream) == EVENTS and stream.sensor_size == (64, 48)
    reference = tonic_read_aedat4(str(path))  # the aedat package, reading only stream 0 as we do
    assert reference["x"].tolist() == stream.events["x"].tolist()
    assert reference["t"].astype(np.int64).tolist() == stream.events["t"].tolist()


@needs_real
def test_real_nmnist_recording_as_its_readme_states():
    stream = read_atis_bin(REAL / "sample_nmnist.bin")
    e = stream.events
    assert len(e) == 4325
    assert (e["x"].min(), e["x"].max(), e["y"].min(), e["y"].max()) == (0, 33, 0, 33)
    assert e["t"].max() == 311_175 and np.all(np.diff(e["t"]) >= 0)


@needs_real
def test_real_aedat4_recording_as_its_readme_states_and_as_tonic_reads_it():
    stream = read_aedat4(REAL / "sample.aedat4")
    e = stream.events
    assert len(e) == 111_954 and stream.sensor_size == (320, 240)
    assert 0 <= e["x"].min() and e["x"].max() <= 319 and 0 <= e["y"].min() and e["y"].max() <= 239
    reference = tonic_read_aedat4(str(REAL / "sample.aedat4"))  # LZ4-compressed, with IMU and trigger packets
    for name in ("x", "y", "p"):
        assert np.array_equal(reference[name], e[name])
    assert np.array_equal(reference["t"].astype(np.int64), e["t"])


@pytest.mark.parametrize(
    ("name", "data", "offset", "message"),
    [
        ("a.bin", bytes(12), 10, "truncated ATIS .bin file: its last event has 2 of 5 bytes"),
        ("a.aedat", aedat2_bytes(EVENTS)[:-3], 74, "its last event has 5 of 8 bytes"),
        ("a.aedat", b"#!AER-DAT3.1\r\n", 9, "AEDAT version '3.1' is not 2.x"),
        ("a.aedat", b"hello", 0, "not an AEDAT file"),
        ("a.aedat", b"#!AER-DAT2.0", 0, "header line without an end of line"),
        ("a.aedat4", aedat4_bytes(EVENTS)[:-7], 706, "truncated packet: 64 bytes declared, 57 left"),
        ("a.aedat4", aedat4_bytes(EVENTS)[:40], 14, "header of 544 bytes runs past the end of the file"),
        ("a.aedat4", b"#!AER-DAT2.0\r\n", 0, "not an AEDAT 4.0 file"),
    ],
)
def test_corrupt_files_name_the_file_and_byte_offset(tmp_path, name, data, offset, message):
    path = tmp_path / name
    path.write_bytes(data)
    reader = {".bin": read_atis_bin, ".aedat": read_aedat2, ".aedat4": read_aedat4}[path.suffix]
    with pytest.raises(EventFileError) as info:
        reader(path)
    assert info.value.offset == offset and message in str(info.value) and str(path) in str(info.value)


def test_corrupt_aedat4_packet_and_events_off_the_sensor(tmp_path):
    path = tmp_path / "a.aedat4"
    good = aedat4_bytes(EVENTS, compression="lz4")
    packet = 18 + int.from_bytes(good[14:18], "little")  # the first packet follows the header
    path.write_bytes(good[: packet + 8] + b"\0" + good[packet + 9 :])  # break the LZ4 frame's magic number
    with pytest.raises(EventFileError, match=r"packet does not decompress \(lz4: .*\) \(at byte 562\)"):
        read_aedat4(path)
    data = aedat4_bytes(EVENTS, size=(10, 10))  # x=20 and x=17 lie outside a 10x10 sensor
    path.write_bytes(data)
    with pytest.raises(EventFileError, match=r"event at x=20, y=7 lies outside the 10x10 sensor") as info:
        read_aedat4(path)
    assert struct.unpack_from("<qhh", data, info.value.offset) == (20, 20, 7)  # the offset is that event's record


# ------------------------------------------------------------------------------------------------ framing


def structured(events):
    array = np.zeros(len(events), dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "?")])
    array["x"], array["y"], array["t"], array["p"] = columns(events)
    return array


def test_frames_count_events_per_time_bin_and_polarity_and_drop_the_last_instant():
    events = structured([(0, 0, 0, 1), (1, 0, 10, 0), (1, 0, 19, 0), (2, 1, 20, 1), (3, 1, 40, 1), (3, 1, 40, 0)])
    frames = frame_events(events, (4, 4), num_frames=2, frame_size=4)  # 4 -> 4 with align_corners: identity
    assert frames.shape == (2, 2, 4, 4) and frames.dtype == np.float32
    # windows of 40 // 2 = 20 us: [0, 20) holds 3 events, [20, 40) holds 1; the two at t_max = 40 are dropped
    assert frames.sum(axis=(1, 2, 3)).tolist() == [3.0, 1.0]
    assert (frames[0, 1, 0, 0], frames[0, 0, 0, 1], frames[1, 1, 1, 2]) == (1.0, 2.0, 1.0)
    shuffled = frame_events(events[[4, 2, 0, 5, 1, 3]], (4, 4), 2, 4)  # sorted by time before binning
    assert np.array_equal(shuffled, frames)
    small = frame_events(events, (4, 4), 2, 2)  # bilinear with align_corners: 4 -> 2 keeps the corner pixels
    assert np.array_equal(small, frames[:, :, ::3, ::3])
    wide = frame_events(events, (4, 2), 3, 8)  # a 4x2 sensor: frames [T, 2, H=2, W=4] before resizing
    assert wide.shape == (3, 2, 8, 8) and wide[:, :, 0, 0].sum() == 1.0


def test_implausible_timestamps_are_reported_not_binned(tmp_path):
    path = tmp_path / "a.aedat4"
    path.write_bytes(aedat4_bytes([(1, 1, 0, 1), (2, 2, 2**41, 0)], chunks=1))
    with pytest.raises(EventFileError, match=f"timestamps span {2**41} us, more than 2\\*\\*40") as info:
        Framing(read_aedat4, 2, 4)(path)
    assert struct.unpack_from("<q", path.read_bytes(), info.value.offset) == (2**41,)  # the late event's record


def test_events_dtype_is_tonics():
    # written out in tks so that importing the readers does not import tonic; tonic's framing reads these fields
    assert OUR_EVENTS == events_struct and OUR_EVENTS.names == events_struct.names
