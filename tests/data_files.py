"""Writers of tiny dataset files in each native layout (byte layouts: docs/datasets.md)."""

import gzip
import pickle
import struct
from pathlib import Path

import lz4.frame
import numpy as np
import scipy.io
import zstandard
from PIL import Image

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


def write_cifar10_dvs(root: Path, fmt: str = "aedat4", per_class: int = 10, classes=("airplane", "automobile")) -> Path:
    for c in classes:
        for i in range(per_class):
            write_events(root / c / f"cifar10_{c}_{i}.{fmt}", fmt, recording(i + 100 * len(c)))
    return root


def write_ncaltech101(root: Path, per_class=(7, 5), classes=("accordion", "BACKGROUND_Google")) -> Path:
    for c, n in zip(classes, per_class, strict=True):
        for i in range(n):
            events = [(x + 40, y + 30, t, p) for x, y, t, p in recording(i + 7 * len(c))]  # offset: cropped away
            write_events(root / "Caltech101" / c / f"image_{i + 1:04d}.bin", "bin", events)
    return root


# ------------------------------------------------------------------------------------------------ image layouts


def _image(path: Path, seed: int, size=(40, 30), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def write_cifar(root: Path, name: str = "cifar10", per_batch: int = 6) -> Path:
    folder, files, key = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels"),
        "cifar100": ("cifar-100-python", ["train", "test"], "fine_labels"),
    }[name]
    (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in files:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), key: list(range(per_batch))}
        (root / folder / f).write_bytes(pickle.dumps(batch))
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    return (
        bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    )


def write_fashion_mnist(root: Path, n: int = 12, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        for kind, array in (("images-idx3", rng.integers(0, 256, (n, 28, 28))), ("labels-idx1", np.arange(n) % 10)):
            data = idx_bytes(np.asarray(array))
            name = f"{prefix}-{kind}-ubyte"
            (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return root


def write_imagenet(root: Path, classes=("n01440764", "n01443537"), per_class: int = 2) -> Path:
    for split in ("train", "val"):
        for c in classes:
            for i in range(per_class):
                _image(root / split / c / f"{c}_{i}.JPEG", i)
    return root


def write_cub(root: Path) -> Path:
    base = root / "CUB_200_2011"
    rows = [(1, "001.Black_footed_Albatross/a_1.jpg", 1, 1), (2, "001.Black_footed_Albatross/a_2.jpg", 1, 0)]
    rows += [(3, "200.Common_Yellowthroat/c_1.jpg", 200, 1), (4, "200.Common_Yellowthroat/c_2.jpg", 200, 1)]
    for i, path, _, _ in rows:
        _image(base / "images" / path, i)
    (base / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _, _ in rows))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (base / "train_test_split.txt").write_text("".join(f"{i} {s}\n" for i, _, _, s in rows))
    return root


def write_dogs(root: Path) -> Path:
    lists = {
        "train": ["n02085620-Chihuahua/n02085620_1.jpg", "n02116738-African_hunting_dog/n02116738_1.jpg"],
        "test": ["n02085620-Chihuahua/n02085620_2.jpg"],
    }
    labels = {"train": [1, 120], "test": [1]}
    for split, files in lists.items():
        for i, f in enumerate(files):
            _image(root / "Images" / f, i)
        scipy.io.savemat(
            root / f"{split}_list.mat",
            {"file_list": np.array(files, dtype=object), "labels": np.array(labels[split]), "annotation_list": files},
        )
    return root


def write_cars(root: Path) -> Path:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    scipy.io.savemat(
        base / "devkit" / "cars_meta.mat", {"class_names": np.array([f"car {i}" for i in range(196)], dtype=object)}
    )
    for split, annos, classes in (
        ("train", base / "devkit" / "cars_train_annos.mat", [1, 196, 5]),
        ("test", base / "cars_test_annos_withlabels.mat", [196, 2]),  # torchvision needs 2+ (squeeze_me)
    ):
        ann = np.zeros(len(classes), dtype=[("fname", "O"), ("class", "O")])
        ann["fname"] = [f"{i:05d}.jpg" for i in range(len(classes))]
        ann["class"] = classes
        for i in range(len(classes)):
            _image(base / f"cars_{split}" / f"{i:05d}.jpg", i)
        scipy.io.savemat(annos, {"annotations": ann})
    return root
