"""Readers of the event-camera file formats the event datasets come in, checked byte by byte.

Every reader returns an ``EventStream``: the events as tonic's structured array (``x``, ``y`` int16, ``t`` int64
in microseconds, ``p`` bool), the byte offset of each event in the file (for error messages) and the sensor size
the file declares. A truncated or corrupt file raises ``EventFileError`` naming the file and the byte offset; no
other exception comes out (``tests/test_data_fuzz.py`` feeds them random and mutated bytes).

- ATIS ``.bin`` (N-MNIST, N-Caltech101, digits-dvs): 5 bytes per event, no header; after a length check, decoded
  by tonic's ``read_mnist_file`` (which drops the ``y == 240`` timestamp-overflow markers and adds 2**13 us to
  every later timestamp).
- AEDAT 2.0 (the original CIFAR10-DVS release): ``#`` header lines, then big-endian ``(u32 address, u32 t)``
  pairs; x = address bits 8-14, y = bits 1-7, p = bit 0, as tonic decodes DVS128 files. Decoded here because
  tonic 1.7's ``read_dvs_128`` fails on every file (it unpacks its header reader's three values into two names).
- AEDAT 4.0 (the CIFAR10-DVS re-release that tonic reads): a FlatBuffers container, decoded here rather than by
  the ``aedat`` package because its Rust decoder panics, and can abort the interpreter, on corrupt headers.
  Packets may be uncompressed, LZ4 or Zstandard compressed.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from tks.data.errors import DatasetError, EventFileError
from tks.extras import require

EVENTS = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])
"""dtype of the events every reader returns: x, y (int16), t (int64, microseconds), p (bool, True = ON); tonic's
``events_struct``, written out so that importing this module does not import tonic (a test checks they agree)."""
FEATURE = "event data"


def _structured(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Events of dtype ``EVENTS`` from their fields, through tonic's ``make_structured_array``."""
    return require("tonic.io", FEATURE).make_structured_array(x, y, t, p, dtype=EVENTS)


@dataclass(frozen=True)
class EventStream:
    """The events of one recording.

    Attributes:
        events: structured array ``[N]`` of dtype ``EVENTS``, in file order.
        offsets: ``[N]`` int64, the byte offset of each event's record in the file (for error messages; for a
            compressed AEDAT 4.0 packet, the offset of the packet).
        sensor_size: ``(width, height)`` declared by the file, or ``None`` when the format declares none (ATIS).
    """

    events: np.ndarray
    offsets: np.ndarray
    sensor_size: tuple[int, int] | None


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the event file: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------------- ATIS .bin

ATIS_OVERFLOW_Y = 240  # a record with y == 240 marks a timestamp overflow, not an event


def read_atis_bin(path: Path) -> EventStream:
    """Read an ATIS ``.bin`` file (x u8, y u8, then p in bit 7 and t in 23 bits, big-endian order).

    Raises:
        EventFileError: when the length is not a whole number of 5-byte events.
    """
    data = _read(path)
    extra = len(data) % 5
    if extra:
        raise EventFileError(
            path, len(data) - extra, f"truncated ATIS .bin file: its last event has {extra} of 5 bytes"
        )
    events = require("tonic.io", FEATURE).read_mnist_file(io.BytesIO(data), dtype=EVENTS, is_stream=True)
    kept = np.flatnonzero(np.frombuffer(data, dtype=np.uint8)[1::5] != ATIS_OVERFLOW_Y)
    return EventStream(events, kept.astype(np.int64) * 5, None)


def write_atis_bin(path: Path, x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> None:
    """Write events as an ATIS ``.bin`` file (the inverse of ``read_atis_bin``).

    Args:
        path: file to write.
        x: ``[N]`` in 0..255.
        y: ``[N]`` in 0..255 except 240 (the overflow marker).
        t: ``[N]`` microseconds in 0..2**23-1 (no overflow markers are written).
        p: ``[N]`` polarity, 1 = ON.
    """
    x, y, t, p = (np.asarray(a, dtype=np.int64) for a in (x, y, t, p))
    if not (np.all((x >= 0) & (x < 256)) and np.all((y >= 0) & (y < 256) & (y != ATIS_OVERFLOW_Y))):
        raise ValueError("ATIS x and y must be in 0..255 and y must not be 240")
    if not (np.all((t >= 0) & (t < 2**23)) and np.all((p == 0) | (p == 1))):
        raise ValueError("ATIS timestamps must be in 0..2**23-1 and polarities 0 or 1")
    records = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1)
    Path(path).write_bytes(records.astype(np.uint8).tobytes())


# ---------------------------------------------------------------------------------------------------- AEDAT 2.0

_AEDAT2_RECORD = np.dtype([("address", ">u4"), ("t", ">u4")])
DVS128_SIZE = (128, 128)


def read_aedat2(path: Path) -> EventStream:
    """Read an AEDAT 2.0 file of a DVS128 sensor (the original CIFAR10-DVS files).

    Raises:
        EventFileError: for a missing ``#!AER-DAT2.x`` first line, an unterminated header line or a body that is
            not a whole number of 8-byte events.
    """
    data = _read(path)
    if not data.startswith(b"#!AER-DAT"):
        raise EventFileError(path, 0, "not an AEDAT file: it must start with '#!AER-DAT'")
    first_end = data.find(b"\n")
    version = data[9:first_end].strip() if first_end >= 0 else data[9:25]
    if not version.startswith(b"2."):
        raise EventFileError(path, 9, f"AEDAT version {version[:16].decode('ascii', 'replace')!r} is not 2.x")
    start = 0
    while start < len(data) and data[start] == ord("#"):  # header lines all begin with '#'
        end = data.find(b"\n", start)
        if end < 0:
            raise EventFileError(path, start, "AEDAT 2.0 header line without an end of line")
        start = end + 1
    extra = (len(data) - start) % _AEDAT2_RECORD.itemsize
    if extra:
        raise EventFileError(
            path, len(data) - extra, f"truncated AEDAT 2.0 file: its last event has {extra} of 8 bytes"
        )
    records = np.frombuffer(data, dtype=_AEDAT2_RECORD, offset=start)
    address = records["address"]
    events = _structured((address >> 8) & 0x7F, (address >> 1) & 0x7F, records["t"], address & 1)
    offsets = start + _AEDAT2_RECORD.itemsize * np.arange(len(records), dtype=np.int64)
    return EventStream(events, offsets, DVS128_SIZE)


# ---------------------------------------------------------------------------------------------------- AEDAT 4.0

AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"
_AEDAT4_EVENT = np.dtype(
    {"names": ["t", "x", "y", "on"], "formats": ["<i8", "<i2", "<i2", "?"], "offsets": [0, 8, 10, 12], "itemsize": 16}
)
_COMPRESSION = {
    0: "none",
    1: "lz4",
    2: "lz4",
    3: "zstd",
    4: "zstd",
}  # IOHeader enum: NONE, LZ4, LZ4_HIGH, ZSTD, ZSTD_HIGH
MAX_PACKET_BYTES = 1 << 28
"""Largest decompressed packet accepted (256 MiB); a corrupt size field cannot make the reader allocate more."""


class _FlatBuffer:
    """Bounds-checked reads of a FlatBuffer held in ``data[origin:]``; errors name a byte offset in the file."""

    def __init__(self, data: bytes, origin: int, path: Path, file_offset: int, exact: bool) -> None:
        self.data, self.origin, self.path = data, origin, path
        self.file_offset, self.exact = file_offset, exact  # exact: buffer bytes map 1:1 to file bytes

    def fail(self, pos: int, problem: str) -> EventFileError:
        where = self.file_offset + pos if self.exact else self.file_offset
        return EventFileError(self.path, where, problem if self.exact else f"{problem} in a compressed packet")

    def need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or self.origin + pos + size > len(self.data):
            raise self.fail(max(pos, 0), f"{what} runs past the end of the data")

    def unpack(self, fmt: str, pos: int, what: str) -> tuple:
        self.need(pos, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, self.origin + pos)

    def table(self, pos: int, what: str) -> tuple[int, tuple[int, ...]]:
        """``(pos, field offsets)`` of the table at ``pos``; a field offset of 0 means absent."""
        (back,) = self.unpack("<i", pos, what)
        vtable = pos - back
        vt_size, table_size = self.unpack("<HH", vtable, f"{what} vtable")
        if vt_size < 4 or vt_size % 2:
            raise self.fail(vtable, f"{what} vtable has an invalid size {vt_size}")
        fields = self.unpack(f"<{(vt_size - 4) // 2}H", vtable + 4, f"{what} vtable")
        if any(f >= table_size for f in fields):
            raise self.fail(vtable, f"{what} vtable points outside its table")
        self.need(pos, table_size, what)
        return pos, fields

    def field(self, table: tuple[int, tuple[int, ...]], index: int) -> int | None:
        pos, fields = table
        return pos + fields[index] if index < len(fields) and fields[index] else None

    def target(self, table: tuple[int, tuple[int, ...]], index: int, what: str) -> int | None:
        """Where the offset field ``index`` points (a vector, string or sub-table), or None if absent."""
        pos = self.field(table, index)
        return None if pos is None else pos + self.unpack("<I", pos, what)[0]

    def identifier(self, expected: bytes) -> None:
        found = self.data[self.origin + 4 : self.origin + 8]
        if found != expected:
            raise self.fail(4, f"FlatBuffer identifier {found!r} is not {expected!r}")


def _decompress(raw: bytes, compression: int) -> bytes:
    """Raises ValueError (or the codec's own error) on corrupt or oversized data."""
    if _COMPRESSION[compression] == "none":
        return raw
    if _COMPRESSION[compression] == "lz4":
        decompressor = require("lz4.frame", "compressed AEDAT 4.0 files").LZ4FrameDecompressor()
        out = decompressor.decompress(raw, max_length=MAX_PACKET_BYTES)
        if not decompressor.eof:
            raise ValueError("LZ4 frame is truncated or decompresses to more than 256 MiB")
        return out
    zstandard = require("zstandard", "compressed AEDAT 4.0 files")
    try:
        if zstandard.frame_content_size(raw) > MAX_PACKET_BYTES:
            raise ValueError("Zstandard frame decompresses to more than 256 MiB")
        return zstandard.ZstdDecompressor().decompress(raw, max_output_size=MAX_PACKET_BYTES)
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from None


def _event_stream_of(description: str, header: _FlatBuffer, pos: int) -> tuple[int, tuple[int, int]]:
    """The lowest stream id whose type is ``EVTS`` and its ``(sizeX, sizeY)``, from the IOHeader's XML."""
    try:
        root = ElementTree.fromstring(description)
    except ElementTree.ParseError as exc:
        raise header.fail(pos, f"IOHeader description is not valid XML ({exc})") from None
    streams = []
    for out_info in root.iter("node"):
        if out_info.get("name") != "outInfo":
            continue
        for node in out_info.findall("node"):
            attrs = {a.get("key"): (a.text or "").strip() for a in node.iter("attr")}
            if attrs.get("typeIdentifier") != "EVTS":
                continue
            try:
                size = (int(attrs["sizeX"]), int(attrs["sizeY"]))
                stream_id = int(node.get("name", ""))
            except (KeyError, ValueError):
                raise header.fail(pos, "IOHeader event stream without an integer id, sizeX and sizeY") from None
            if min(size) < 1 or max(size) > 1 << 15:
                raise header.fail(pos, f"IOHeader declares an invalid sensor size {size[0]}x{size[1]}")
            streams.append((stream_id, size))
    if not streams:
        raise header.fail(pos, "IOHeader declares no event stream (typeIdentifier EVTS)")
    return min(streams)


def _packet_events(
    payload: bytes, path: Path, offset: int, exact: bool, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Events ``[n]`` (``_AEDAT4_EVENT``) and their file offsets from one size-prefixed ``EventPacket``."""
    buf = _FlatBuffer(payload, 4, path, offset + 4, exact)
    (prefix,) = _FlatBuffer(payload, 0, path, offset, exact).unpack("<I", 0, "packet size prefix")
    if prefix != len(payload) - 4:
        raise buf.fail(-4, f"packet size prefix {prefix} does not match its {len(payload) - 4} bytes")
    (root,) = buf.unpack("<I", 0, "packet root offset")
    buf.identifier(b"EVTS")
    vector = buf.target(buf.table(root, "EventPacket"), 0, "event vector offset")
    if vector is None:
        return np.empty(0, _AEDAT4_EVENT), np.empty(0, np.int64)
    (count,) = buf.unpack("<I", vector, "event vector length")
    buf.need(vector + 4, count * _AEDAT4_EVENT.itemsize, f"event vector of {count} events")
    events = np.frombuffer(payload, dtype=_AEDAT4_EVENT, count=count, offset=4 + vector + 4)
    bad = np.flatnonzero((events["x"] < 0) | (events["x"] >= size[0]) | (events["y"] < 0) | (events["y"] >= size[1]))
    if bad.size:
        e = events[bad[0]]
        at = vector + 4 + _AEDAT4_EVENT.itemsize * int(bad[0])
        raise buf.fail(at, f"event at x={e['x']}, y={e['y']} lies outside the {size[0]}x{size[1]} sensor")
    first = offset + 4 + vector + 4 if exact else offset  # after the size prefix and the vector length
    offsets = first + (_AEDAT4_EVENT.itemsize * np.arange(count, dtype=np.int64) if exact else 0)
    return events, np.broadcast_to(offsets, (count,))


def read_aedat4(path: Path) -> EventStream:
    """Read the polarity events of an AEDAT 4.0 file (the lowest-numbered ``EVTS`` stream, as tonic does).

    Raises:
        EventFileError: for a wrong magic, a header or packet running past the end of the file, a malformed
            FlatBuffer, an unknown compression, a packet that does not decompress, or an event off the sensor.
    """
    data = _read(path)
    if not data.startswith(AEDAT4_MAGIC):
        raise EventFileError(path, 0, "not an AEDAT 4.0 file: it must start with '#!AER-DAT4.0\\r\\n'")
    start = len(AEDAT4_MAGIC)
    if len(data) < start + 4:
        raise EventFileError(path, start, "AEDAT 4.0 file ends before its header length")
    (header_len,) = struct.unpack_from("<I", data, start)
    body = start + 4 + header_len
    if body > len(data):
        raise EventFileError(path, start, f"AEDAT 4.0 header of {header_len} bytes runs past the end of the file")
    header = _FlatBuffer(data[: start + 4 + header_len], start + 4, path, start + 4, exact=True)
    (root,) = header.unpack("<I", 0, "IOHeader root offset")
    header.identifier(b"IOHE")
    table = header.table(root, "IOHeader")
    compression_at, position_at = header.field(table, 0), header.field(table, 1)
    compression = header.unpack("<i", compression_at, "compression")[0] if compression_at is not None else 0
    data_end = header.unpack("<q", position_at, "file data position")[0] if position_at is not None else -1
    if compression not in _COMPRESSION:
        raise header.fail(compression_at or 0, f"unknown compression {compression}")
    data_end = len(data) if data_end < 0 else data_end  # -1: packets run to the end of the file
    if not body <= data_end <= len(data):
        raise header.fail(position_at or 0, f"file data position {data_end} lies outside the packet area")
    text_at = header.target(table, 2, "description offset")
    if text_at is None:
        raise header.fail(root, "IOHeader has no stream description")
    (text_len,) = header.unpack("<I", text_at, "description length")
    header.need(text_at + 4, text_len, "description")
    raw_text = header.data[header.origin + text_at + 4 : header.origin + text_at + 4 + text_len]
    try:
        description = raw_text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise header.fail(text_at + 4 + exc.start, "IOHeader description is not UTF-8") from None
    stream_id, size = _event_stream_of(description, header, text_at)

    chunks, offsets = [], []
    pos = body
    while pos < data_end:
        if pos + 8 > data_end:
            raise EventFileError(path, pos, "truncated packet header (8 bytes expected)")
        packet_stream, packet_len = struct.unpack_from("<iI", data, pos)
        if pos + 8 + packet_len > data_end:
            raise EventFileError(
                path, pos, f"truncated packet: {packet_len} bytes declared, {data_end - pos - 8} left in the file"
            )
        if packet_stream == stream_id:
            raw = data[pos + 8 : pos + 8 + packet_len]
            try:
                payload = _decompress(raw, compression)
            except (ValueError, RuntimeError) as exc:
                raise EventFileError(
                    path, pos, f"packet does not decompress ({_COMPRESSION[compression]}: {exc})"
                ) from None
            events, where = _packet_events(payload, path, pos + 8, compression == 0, size)
            chunks.append(events)
            offsets.append(where)
        pos += 8 + packet_len
    packets = np.concatenate(chunks) if chunks else np.empty(0, _AEDAT4_EVENT)
    events = _structured(packets["x"], packets["y"], packets["t"], packets["on"])
    return EventStream(events, np.concatenate(offsets) if offsets else np.empty(0, np.int64), size)
