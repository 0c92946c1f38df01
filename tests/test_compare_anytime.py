"""tks compare --anytime: the early-exit study's tables from hand-written anytime.json files with chosen numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from run_folders import fake_run

from tks.cli import main
from tks.compare import compare_runs
from tks.compare.anytime import NOTE


def _test(steps: float, risk: float) -> dict:
    return {"mean_steps": steps, "risk": risk, "steps_histogram": [1, 1], "accuracy": 0.9, "full_accuracy": 0.9}


def _study(calibrated: tuple[float, float], empirical: tuple[float, float], fixed: tuple[float, float]) -> dict:
    return {
        "rule": "confidence",
        "risk": "disagreement",
        "delta": 0.05,
        "split": "val",
        "bounds": [
            {"epsilon": 0.01, "calibrated": {"test": _test(*calibrated)}, "empirical": {"test": _test(*empirical)}}
        ],
        "fixed": [{"threshold": 0.9, "test": _test(*fixed)}],
    }


STUDIES = {  # (method, seed): (calibrated steps, risk), (uncorrected steps, risk), (threshold 0.9 steps, risk)
    ("ce", 0): ((1.6, 0.004), (1.4, 0.012), (1.2, 0.03)),
    ("ce", 1): ((1.8, 0.006), (1.5, 0.009), (1.3, 0.02)),
    ("tks", 0): ((1.3, 0.008), (1.2, 0.011), (1.1, 0.005)),
    ("tks", 1): ((1.4, 0.002), (1.3, 0.013), (1.2, 0.004)),
}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    for (loss, seed), numbers in STUDIES.items():
        run = fake_run(tmp_path, f"{loss}-s{seed}", loss=loss, seed=seed)
        (run / "anytime.json").write_text(json.dumps(_study(*numbers)))
    return tmp_path


def _row(markdown: str, start: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(start))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_tables_hold_the_chosen_numbers(runs: Path) -> None:
    text = compare_runs([runs], runs / "out", anytime=True, paired="Baseline")
    assert (runs / "out" / "anytime.md").read_text() in text
    # Baseline: calibrated steps 1.6, 1.8 -> 1.70 ± 0.14; risks 0.004, 0.006; none above 0.01
    base = _row(text, "| Baseline | 0.01 |")
    assert base[2:5] == ["1.70 ± 0.14", "0.0050, 0.0060", "0/2"]
    assert base[5:8] == ["1.45 ± 0.07", "0.0105, 0.0120", "1/2"]  # uncorrected: 0.012 > 0.01 once
    tks = _row(text, "| TKS | 0.01 |")
    assert tks[2:8] == ["1.35 ± 0.07", "0.0050, 0.0080", "0/2", "1.25 ± 0.07", "0.0120, 0.0130", "2/2"]
    fixed = _row(text, "| Baseline | 0.9 |")
    assert fixed[2:5] == ["1.25 ± 0.07", "0.0250, 0.0300", "2/2"]
    # TKS minus Baseline by seed: -0.3, -0.4: mean -0.35, sd 0.0707, t(0.975, 1) = 12.706
    half = 12.706 * math.sqrt(0.005) / math.sqrt(2)
    paired = _row(text, "| TKS | 0.01 | 2 |")
    assert paired[3] == f"{-0.35:+.2f} [{-0.35 - half:+.2f}, {-0.35 + half:+.2f}]"


def test_a_run_without_its_study_is_one_line(runs: Path, capsys: pytest.CaptureFixture) -> None:
    (runs / "tks-s1" / "anytime.json").unlink()
    assert main(["compare", str(runs), "--anytime"]) == 2
    err = capsys.readouterr().err
    assert "anytime.json is missing: run tks calibrate" in err and err.count("\n") == 1
    (runs / "tks-s1" / "anytime.json").write_text("{")
    assert main(["compare", str(runs), "--anytime"]) == 2
    err = capsys.readouterr().err
    assert "anytime.json cannot be read (" in err and err.endswith("): rerun tks calibrate --study there\n")


def _bound(epsilon: float, calibrated: tuple[float, float], empirical: tuple[float, float]) -> dict:
    return {"epsilon": epsilon, "calibrated": {"test": _test(*calibrated)}, "empirical": {"test": _test(*empirical)}}


BLOCKS = {  # name: (loss, seed, T), the bounds (epsilon, calibrated and uncorrected test), the test at 0.9
    "ce-s0": (("ce", 0, 2), [_bound(0.01, (2.0, 0.01), (1.5, 0.02))], (1.2, 0.05)),
    "ce-s1": (("ce", 1, 2), [_bound(0.01, (1.6, 0.006), (1.3, 0.008))], (1.0, 0.01)),
    "ls-s5": (
        ("ls", 5, 2),
        [_bound(0.01, (1.5, 0.004), (1.4, 0.012)), _bound(0.05, (1.1, 0.05), (1.0, 0.07))],
        (1.1, 0.02),
    ),
    "tks-s0": (
        ("tks", 0, 2),
        [_bound(0.01, (1.4, 0.002), (1.2, 0.011)), _bound(0.05, (1.2, 0.03), (1.1, 0.06))],
        (1.1, 0.004),
    ),
    "tks-s1": (
        ("tks", 1, 2),
        [_bound(0.01, (1.2, 0.008), (1.0, 0.009)), _bound(0.05, (1.0, 0.05), (1.0, 0.04))],
        (1.0, 0.006),
    ),
    "tks-t4": (("tks", 0, 4), [_bound(0.02, (3.0, 0.02), (2.5, 0.03))], (2.0, 0.1)),
}

# Worked by hand from BLOCKS: means, sample standard deviations (|a - b| / sqrt 2 for two seeds; none for one run),
# risks (mean, max), and "above" counting risks strictly above epsilon (a risk equal to it is within the bound).
# T=2: LS ran seed 5 only, so it has no pair with Baseline; TKS ran 0.05 too, Baseline did not, so the pairs are at
# 0.01: TKS minus Baseline = 1.4 - 2.0, 1.2 - 1.6 = -0.6, -0.4: mean -0.5, sd 0.1414, half-width 12.706 x 0.1.
# T=4: one run of TKS with other settings, and no Baseline to pair with.
EXPECTED = """\
digits / spiking_cnn, T=2: early exit by confidence, risk disagreement, delta 0.05, calibrated on the val split:

| Method | epsilon | calibrated steps | risk (mean, max) | above | uncorrected steps | risk (mean, max) | above |
|:---|---:|---:|---:|---:|---:|---:|---:|
| Baseline | 0.01 | 1.80 ± 0.28 | 0.0080, 0.0100 | 0/2 | 1.40 ± 0.14 | 0.0140, 0.0200 | 1/2 |
| LS | 0.01 | 1.50 | 0.0040, 0.0040 | 0/1 | 1.40 | 0.0120, 0.0120 | 1/1 |
| LS | 0.05 | 1.10 | 0.0500, 0.0500 | 0/1 | 1.00 | 0.0700, 0.0700 | 1/1 |
| TKS | 0.01 | 1.30 ± 0.14 | 0.0050, 0.0080 | 0/2 | 1.10 ± 0.14 | 0.0100, 0.0110 | 1/2 |
| TKS | 0.05 | 1.10 ± 0.14 | 0.0400, 0.0500 | 0/2 | 1.05 ± 0.07 | 0.0500, 0.0600 | 1/2 |

Thresholds picked by hand (SEENN-I style), on the test set:

| Method | fixed threshold | steps | risk (mean, max) | above 0.01 | above 0.05 |
|:---|---:|---:|---:|---:|---:|
| Baseline | 0.9 | 1.10 ± 0.14 | 0.0300, 0.0500 | 1/2 | 0/2 |
| LS | 0.9 | 1.10 | 0.0200, 0.0200 | 1/1 | 0/1 |
| TKS | 0.9 | 1.05 ± 0.07 | 0.0050, 0.0060 | 0/2 | 0/2 |

Calibrated mean steps, each method minus Baseline, paired by seed (negative: fewer steps):

| Method | epsilon | pairs | difference |
|:---|---:|---:|---:|
| TKS | 0.01 | 2 | -0.50 [-1.77, +0.77] |

digits / spiking_cnn, T=4: early exit by margin, risk accuracy_drop, delta 0.1, calibrated on the calibration split:

| Method | epsilon | calibrated steps | risk (mean, max) | above | uncorrected steps | risk (mean, max) | above |
|:---|---:|---:|---:|---:|---:|---:|---:|
| TKS | 0.02 | 3.00 | 0.0200, 0.0200 | 0/1 | 2.50 | 0.0300, 0.0300 | 1/1 |

Thresholds picked by hand (SEENN-I style), on the test set:

| Method | fixed threshold | steps | risk (mean, max) | above 0.02 |
|:---|---:|---:|---:|---:|
| TKS | 0.9 | 2.00 | 0.1000, 0.1000 | 1/1 |

"""
PAIRED = EXPECTED[EXPECTED.index("Calibrated mean steps") : EXPECTED.index("digits / spiking_cnn, T=4")]


def test_blocks_single_runs_unpaired_methods_and_risks_at_the_bound(tmp_path: Path) -> None:
    """The whole document worked by hand: two blocks, a method of one run, bounds some runs lack, ties at epsilon."""
    for name, ((loss, seed, steps), bounds, fixed) in BLOCKS.items():
        run = fake_run(tmp_path, name, loss=loss, seed=seed, steps=steps)
        study = {"rule": "confidence", "risk": "disagreement", "delta": 0.05, "split": "val", "bounds": bounds}
        if steps == 4:
            study.update(rule="margin", risk="accuracy_drop", delta=0.1, split="calibration")
        (run / "anytime.json").write_text(json.dumps({**study, "fixed": [{"threshold": 0.9, "test": _test(*fixed)}]}))
    compare_runs([tmp_path], tmp_path / "out", anytime=True, paired="Baseline")
    assert (tmp_path / "out" / "anytime.md").read_text() == EXPECTED + NOTE
    compare_runs([tmp_path], tmp_path / "plain", anytime=True)  # without --paired: no paired table
    assert (tmp_path / "plain" / "anytime.md").read_text() == EXPECTED.replace(PAIRED, "") + NOTE
