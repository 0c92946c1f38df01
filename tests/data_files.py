"""Writers of tiny dataset files in each native layout (byte layouts: ecosystem.md §2.1, docs/datasets.md)."""

import struct
from pathlib import Path

import lz4.frame
import numpy as np
import zstandard

from tks.data.event_io import write_atis_bin

EVENTS = [(3, 5, 10, 1), (20, 7, 20, 0), (3, 5, 30, 1), (17, 30, 70_000, 0), (0, 0, 100_000, 1)]  # x, y, t, p


def columns(events):
    if not events:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(4))
    x, y, t, p = (np.array(c, dtype=np.int64) for c in zip(*events, strict=True))
    return x, y, t, p


# ------------------------------------------------------------------------------------------------ event formats


def aedat2_bytes(events, header=b"#!AER-DAT2.0\r\n# written by the tks tests\r\n"):
    """AEDAT 2.0: '#' header lines, then big-endian (address, t); x in bits 8-14, y in bits 1-7, p in bit 0."""
    x, y, t, p = columns(events)
    records = np.empty(len(x), dtype=[("address", ">u4"), ("t", ">u4")])
    records["address"] = (x << 8) | (y << 1) | p
    records["t"] = t
    return header + records.tobytes()


def ioheader(description: bytes, compression: int) -> bytes:
    """FlatBuffer ``IOHeader{compression:int32, file_data_position:int64 (absent = -1), description:string}``."""
    # [0] root offset -> table at 20; [4] "IOHE"; [8] vtable (10 bytes) + 2 pad; [20] table: soffset, desc, compr.
    vtable = struct.pack("<HHHHH", 10, 12, 8, 0, 4)
    table = struct.pack("<iIi", 20 - 8, 8, compression)  # description string 8 bytes after its field at 24
    string = struct.pack("<I", len(description)) + description + b"\0"
    buf = struct.pack("<I", 20) + b"IOHE" + vtable + b"\0\0" + table + string
    return buf + b"\0" * (-len(buf) % 4)


def packet(identifier: bytes, count: int, elements: bytes) -> bytes:
    """Size-prefixed FlatBuffer ``{elements:[struct]}``, the struct array 8-byte aligned counting the prefix."""
    # after the prefix: [0] root -> table at 16; [4] identifier; [8] vtable (6) + 2 pad; [16] soffset, vector
    # offset; [24] vector length; [28] elements (absolute 32)
    body = (
        struct.pack("<I", 16)
        + identifier
        + struct.pack("<HHH", 6, 8, 4)
        + b"\0\0"
        + struct.pack("<iII", 16 - 8, 4, count)
        + elements
    )
    return struct.pack("<I", len(body)) + body


def event_packet(events) -> bytes:
    """``EventPacket``: 16-byte events ``{t: int64, x: int16, y: int16, on: bool, 3 pad}``."""
    x, y, t, p = columns(events)
    packed = np.zeros(len(x), dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "?"), ("pad", "V3")])
    packed["t"], packed["x"], packed["y"], packed["on"] = t, x, y, p
    return packet(b"EVTS", len(x), packed.tobytes())


def aedat4_bytes(events, size=(128, 128), compression="none", chunks=2) -> bytes:
    """AEDAT 4.0 with event stream 0 split into ``chunks`` packets, and one packet of a second event stream 5."""
    code = {"none": 0, "lz4": 1, "zstd": 3}[compression]
    description = (
        '<dv version="2.0"><node name="outInfo" path="/outInfo/">'
        '<node name="0" path="/outInfo/0/"><attr key="typeIdentifier" type="string">EVTS</attr>'
        f'<node name="info" path="/outInfo/0/info/"><attr key="sizeX" type="int">{size[0]}</attr>'
        f'<attr key="sizeY" type="int">{size[1]}</attr></node></node>'
        '<node name="5" path="/outInfo/5/"><attr key="typeIdentifier" type="string">EVTS</attr>'
        '<node name="info" path="/outInfo/5/info/"><attr key="sizeX" type="int">2</attr>'
        '<attr key="sizeY" type="int">2</attr></node></node>'
        "</node></dv>"
    ).encode()
    header = ioheader(description, code)
    out = b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(header)) + header
    compress = {"none": bytes, "lz4": lz4.frame.compress, "zstd": zstandard.ZstdCompressor().compress}[compression]
    for i, part in enumerate(np.array_split(np.arange(len(events)), chunks)):
        payload = compress(event_packet([events[j] for j in part]))
        out += struct.pack("<iI", 0, len(payload)) + payload
        if i == 0:
            other = compress(event_packet([(1, 1, 5, 1)]))  # a second event stream, which readers skip
            out += struct.pack("<iI", 5, len(other)) + other
    return out


def write_events(path: Path, fmt: str, events) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "bin":
        write_atis_bin(path, *columns(events))
    elif fmt == "aedat":
        path.write_bytes(aedat2_bytes(events))
    else:
        path.write_bytes(aedat4_bytes(events))


def recording(seed: int, n: int = 40, size: int = 20, span: int = 50_000):
    """A small deterministic recording: n events inside a size x size sensor, sorted by time."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, span, n))
    t[0], t[-1] = 0, span
    return list(zip(rng.integers(0, size, n), rng.integers(0, size, n), t, rng.integers(0, 2, n), strict=True))
