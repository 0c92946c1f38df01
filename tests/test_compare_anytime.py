"""tks compare --anytime: the early-exit study's tables from hand-written anytime.json files with chosen numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from run_folders import fake_run

from tks.cli import main
from tks.compare import compare_runs


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
