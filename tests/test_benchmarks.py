"""Every benchmark script runs in its quick mode and prints the table it documents.

Nothing is asserted on speed. Each table is parsed: its header, its rows (the models, step counts and precisions the
quick mode runs), the parameter counts against the models themselves, and every derived column (ratios, rates,
epoch times) against the columns it is computed from. Printed numbers are rounded, so a derived number is checked
with interval arithmetic: it must lie in the range its rounded inputs allow.
"""

import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tks.models import create_model, list_models

ROOT = Path(__file__).parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


@dataclass(frozen=True)
class Num:
    """A printed number as the interval of values that print that way ("1.25" is [1.245, 1.255])."""

    lo: float
    hi: float

    @classmethod
    def parse(cls, text: str) -> "Num":
        match = re.match(r"-?[\d,]*\d(\.\d+)?", text.strip())
        assert match, f"not a number: {text!r}"
        value = float(match.group().replace(",", ""))
        half = 0.5 * 10 ** -len((match.group(1) or ".")[1:])
        return cls(value - half, value + half)

    def __sub__(self, other: "Num") -> "Num":
        return Num(self.lo - other.hi, self.hi - other.lo)

    def __truediv__(self, other: "Num | float") -> "Num":
        other = other if isinstance(other, Num) else Num(other, other)
        if other.lo <= 0:  # a denominator printed as 0 bounds nothing
            return Num(-math.inf, math.inf)
        ends = [a / b for a in (self.lo, self.hi) for b in (other.lo, other.hi)]
        return Num(min(ends), max(ends))

    def __mul__(self, k: float) -> "Num":
        return Num(self.lo * k, self.hi * k)

    def agrees(self, other: "Num") -> bool:
        return self.lo <= other.hi and other.lo <= self.hi

    @property
    def value(self) -> float:
        return (self.lo + self.hi) / 2


def run_quick(script: Path) -> str:
    result = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def table(stdout: str) -> tuple[list[str], list[dict[str, str]]]:
    """The one markdown table of a script's output: its header and its rows as {column: cell}."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header, separator, *body = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert len(separator) == len(header) and all(re.fullmatch(r":?-{3,}:?", cell) for cell in separator), separator
    assert body, "the table has no rows"
    assert all(len(row) == len(header) for row in body), body
    return header, [dict(zip(header, row, strict=True)) for row in body]


def parameters(name: str, in_channels: int) -> int:
    return sum(p.numel() for p in create_model(name, num_classes=10, in_channels=in_channels).parameters())


def assert_ratio(printed: str, numerator: Num, denominator: Num) -> None:
    assert Num.parse(printed).agrees(numerator / denominator), (printed, numerator, denominator)


def check_flops(out: str) -> None:
    header, rows = table(out)
    assert header == [
        "model",
        "parameters",
        "forward MFLOPs/sample",
        "train samples/s",
        "eval samples/s",
        "train s/epoch",
    ]
    assert [r["model"] for r in rows] == ["spiking_lenet", "spiking_convnet", "spiking_convnet_wide"]
    for r in rows:
        assert Num.parse(r["parameters"]).value == parameters(r["model"], 1)
        assert all(Num.parse(r[c]).lo > 0 for c in header[2:]), r
        assert_ratio(r["train s/epoch"], Num(55_000, 55_000), Num.parse(r["train samples/s"]))  # the epoch it implies
    flops = {r["model"]: Num.parse(r["forward MFLOPs/sample"]).value for r in rows}
    assert flops["spiking_convnet_wide"] > flops["spiking_convnet"]  # the same network with wider layers


def check_frame_loading(out: str) -> None:
    header, rows = table(out)
    assert header == ["what", "workers", "samples/s"]
    plain, augmented = "cache read", "cache read + CIFAR10-DVS augmentation"
    step = "spiking_cnn training step (forward + backward + AdamW)"
    expected = [(plain, "0"), (augmented, "0"), (plain, "2"), (augmented, "2"), (step, "-")]
    assert [(r["what"], r["workers"]) for r in rows] == expected
    assert all(Num.parse(r["samples/s"]).lo > 0 for r in rows)


def check_gpu(out: str) -> None:
    header, rows = table(out)
    assert header == (
        "model | T | batch | input | precision | compile | ann | tks | sj | tks/ann | sj/tks | peak ann | peak tks "
        "| peak sj | tks/sj memory"
    ).split(" | ")
    expected = [  # every eager row first; the CPU smoke test compiles the smallest network only, in fp32
        ("spiking_cnn", "2", "4", "1x8x8", "fp32", "off"),
        ("spiking_cnn", "2", "4", "1x8x8", "bf16", "off"),
        ("vgg_snn_small", "2", "2", "2x16x16", "fp32", "off"),
        ("vgg_snn_small", "2", "2", "2x16x16", "bf16", "off"),
        ("spiking_cnn", "2", "4", "1x8x8", "fp32", "on"),
    ]
    skipped = re.search(r"(\d+) row\(s\) skipped", out)
    assert len(rows) + (int(skipped.group(1)) if skipped else 0) == len(expected)  # rows past the time budget
    assert [tuple(r[c] for c in header[:6]) for r in rows] == expected[: len(rows)]
    for r in rows:
        ann, tks, sj = (Num.parse(r[c]) for c in ("ann", "tks", "sj"))
        assert min(ann.lo, tks.lo, sj.lo) > 0, r
        assert_ratio(r["tks/ann"], tks, ann)
        assert_ratio(r["sj/tks"], sj, tks)
        assert [r[c] for c in header[11:]] == ["-"] * 4  # no CUDA memory statistics on the CPU


def check_inference(out: str) -> None:
    header, rows = table(out)
    assert header == ["batch", "T", "latency (ms)", "fraction of T=max", "T / T_max"]
    assert [(r["batch"], r["T"]) for r in rows] == [("1", t) for t in ("1", "2", "4", "8", "10")]
    longest = Num.parse(rows[-1]["latency (ms)"])
    for r in rows:
        assert Num.parse(r["latency (ms)"]).lo > 0
        assert_ratio(r["fraction of T=max"], Num.parse(r["latency (ms)"]), longest)
        assert r["T / T_max"] == f"{int(r['T']) / 10:.2f}"
    assert rows[-1]["fraction of T=max"] == "1.00"


def check_memory(out: str) -> None:
    header, rows = table(out)
    assert header == ["T", "ann", "tks", "sj", "tks / sj"]
    assert [r["T"] for r in rows] == ["1"]
    for r in rows:
        cells = {v: re.fullmatch(r"(\d+) \((\d+)\)", r[v]) for v in ("ann", "tks", "sj")}  # "peak rise (saved)"
        assert all(cells.values()), r
        rise = {v: Num.parse(m.group(1)) for v, m in cells.items()}
        assert all(Num.parse(m.group(2)).hi > 0 for m in cells.values()), r  # every variant saves activations
        assert_ratio(r["tks / sj"], rise["tks"], rise["sj"])


def check_models(out: str) -> None:
    header, rows = table(out)
    assert header == ["model", "input", "batch", "parameters", "step (ms)", "GFLOPs/step", "GFLOP/s", "utilisation"]
    assert [r["model"] for r in rows] == list_models()
    peak = Num.parse(re.search(r"matmul: ([\d.]+) GFLOP/s", out).group(1))
    inputs = {"spiking_cnn": "1x8x8", "spiking_lenet": "1x28x28", "spiking_convnet": "1x28x28"}
    inputs |= {"spiking_convnet_wide": "1x28x28", "vgg_snn": "2x32x32", "vgg_snn_small": "2x16x16"}  # capped at 32
    for r in rows:
        assert r["input"] == inputs.get(r["model"], "3x32x32") and r["batch"] == "2", r
        assert Num.parse(r["parameters"]).value == parameters(r["model"], int(r["input"][0])), r
        rate = Num.parse(r["GFLOPs/step"]) / (Num.parse(r["step (ms)"]) * 1e-3)
        assert Num.parse(r["GFLOPs/step"]).lo > 0 and Num.parse(r["GFLOP/s"]).agrees(rate), r
        assert_ratio(r["utilisation"], Num.parse(r["GFLOP/s"]), peak)


def check_recipe_step(out: str) -> None:
    header, rows = table(out)
    assert header == ["precision", "step (s)", "samples/s", "epoch of 50,000 (min, 3125 steps)"]  # batch 16
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    step = {r["precision"]: Num.parse(r["step (s)"]) for r in rows}
    for r in rows:
        assert Num.parse(r["samples/s"]).lo > 0
        assert_ratio(r["samples/s"], Num(16, 16), step[r["precision"]])
        assert Num.parse(r[header[3]]).agrees(step[r["precision"]] * (3125 / 60))
    speed_up = re.search(r"^bf16 speed-up: (\S+)x$", out, flags=re.M)
    assert speed_up, out
    assert_ratio(speed_up.group(1), step["fp32"], step["bf16"])


def check_training_step(out: str) -> None:
    header, rows = table(out)
    assert header == (
        "model | input | batch | ann | tks | sj | tks/ann | (tks-ann)/(sj-ann) | sj/tks | TKS-loss overhead "
        "| tks bf16 | bf16 speed-up"
    ).split(" | ")
    assert [(r["model"], r["input"], r["batch"]) for r in rows] == [
        ("spiking_cnn", "1x8x8", "16"),
        ("vgg_snn", "2x16x16", "2"),
    ]
    assert re.fullmatch(r"\d+ \(sj-layers \d+\)", rows[0]["sj"])  # the digits CNN also in SpikingJelly's own layers
    for r in rows:
        ann, tks, sj, bf16 = (Num.parse(r[c]) for c in ("ann", "tks", "sj", "tks bf16"))
        assert min(ann.lo, tks.lo, sj.lo, bf16.lo) > 0, r
        assert_ratio(r["tks/ann"], tks, ann)
        assert_ratio(r["sj/tks"], sj, tks)
        assert_ratio(r["bf16 speed-up"], tks, bf16)
        if r["(tks-ann)/(sj-ann)"] == "nan":  # printed only when sj was not slower than the ANN twin
            assert sj.lo <= ann.hi, r
        else:
            assert_ratio(r["(tks-ann)/(sj-ann)"], tks - ann, sj - ann)
        assert re.fullmatch(r"-?\d+\.\d\d%", r["TKS-loss overhead"]), r


def check_before_after(out: str) -> None:
    header, rows = table(out)
    assert header == (
        "model | input | batch | train before | train after | train after/before | infer before | infer after "
        "| infer after/before"
    ).split(" | ")
    assert [(r["model"], r["input"], r["batch"]) for r in rows] == [("spiking_cnn", "1x8x8", "16")]
    for part in ("train", "infer"):
        before, after = Num.parse(rows[0][f"{part} before"]), Num.parse(rows[0][f"{part} after"])
        assert min(before.lo, after.lo) > 0
        assert_ratio(rows[0][f"{part} after/before"], after, before)
    assert re.search(r"before: \w+(\+dirty)? \(.+\); after: \w+", out), out  # the two versions are named


def check_sweep_vs_lanes(out: str) -> None:
    header, rows = table(out)
    assert header == ["schedule", "wall (s)", "/ sweep span"]
    assert [r["schedule"] for r in rows] == [
        "tks sweep --executor local, 2 runs x 1 thread: the whole command (measured)",
        "tks sweep: first run's start to last run's end (measured)",
        "old lanes [*-s0; *-s1], same run times (computed)",
        "lower bound: max(sum / 2, longest run)",
    ]
    command, span, lanes, bound = (Num.parse(r["wall (s)"]) for r in rows)
    assert 0 < span.lo and span.lo <= command.hi
    for r, wall in zip(rows, (command, span, lanes, bound), strict=True):
        assert_ratio(r["/ sweep span"], wall, span)
    total, longest = (Num.parse(x) for x in re.search(r"summed (\d+) s, longest (\d+) s", out).groups())
    # the longest lane holds the longest run, and at most every run
    assert longest.lo <= lanes.hi and lanes.lo <= total.hi
    assert bound.agrees(Num(max(total.lo / 2, longest.lo), max(total.hi / 2, longest.hi)))
    assert re.search(r"^4 runs, .*CPU: .+$", out, re.M), out


def check_imports(out: str) -> None:
    header, rows = table(out)
    assert header == ["command", "median (s)", "/ import torch"]
    assert [r["command"] for r in rows][:3] == ['python -c "pass"', 'python -c "import torch"', "tks --help"]
    assert {'python -c "import tks.losses"', "tks train --help"} <= {r["command"] for r in rows}
    torch_row = next(r for r in rows if r["command"] == 'python -c "import torch"')
    for r in rows:
        assert_ratio(r["/ import torch"], Num.parse(r["median (s)"]), Num.parse(torch_row["median (s)"]))
    assert re.search(r"CPU: .+, \d+ cores", out), out


CHECKS = {
    "before_after.py": check_before_after,
    "flops.py": check_flops,
    "frame_loading.py": check_frame_loading,
    "gpu.py": check_gpu,
    "imports.py": check_imports,
    "inference.py": check_inference,
    "memory.py": check_memory,
    "models.py": check_models,
    "recipe_step.py": check_recipe_step,
    "sweep_vs_lanes.py": check_sweep_vs_lanes,
    "training_step.py": check_training_step,
}


def test_every_benchmark_has_a_table_check():
    assert sorted(p.name for p in SCRIPTS) == sorted(CHECKS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
@pytest.mark.slow
def test_benchmark_quick_mode_prints_its_table(script):
    CHECKS[script.name](run_quick(script))


@pytest.mark.parametrize(
    ("printed", "lo", "hi"),
    [("1.25", 1.245, 1.255), ("12,698,250", 12_698_249.5, 12_698_250.5), ("0.85%", 0.845, 0.855)],
)
def test_a_printed_number_is_the_interval_that_rounds_to_it(printed, lo, hi):
    number = Num.parse(printed)
    assert (number.lo, number.hi) == (pytest.approx(lo), pytest.approx(hi))


def test_interval_ratios_accept_rounding_and_reject_wrong_ratios():
    assert Num.parse("1.23").agrees(Num.parse("31") / Num.parse("25"))  # 31/25 = 1.24, but 30.5/25.5 = 1.196
    assert not Num.parse("0.81").agrees(Num.parse("31") / Num.parse("25"))  # the inverse ratio
