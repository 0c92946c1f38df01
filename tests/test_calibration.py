"""tks calibrate end to end on a real digits run: the rule, its test-set evaluation, and its travel with the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tks.anytime import (
    ExitRule,
    calibrate,
    evaluate_rule,
    exit_losses,
    exit_rule_of,
    exit_steps,
    exit_stream,
    running_scores,
    threshold_grid,
)
from tks.checkpoint import load_checkpoint
from tks.checkpoint_model import load_model
from tks.cli import main
from tks.config import load_config
from tks.data.encoding import to_time_major
from tks.data.loading import load_split, load_training_data
from tks.experiment import train
from tks.locks import lock_run_dir

VAL = 400


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short digits run at T=4 with a validation split of 400 images."""
    root = tmp_path_factory.mktemp("calibrated")
    overrides = ["optim.epochs=3", "data.num_steps=4", f"data.val_size={VAL}", "run.progress=false", "run.device=cpu"]
    return train(load_config(None, [*overrides, "run.name=cal", f"run.out_dir={root}"])).run_dir


def _logits_by_hand(checkpoint: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's per-step logits over a split, one plain forward per 100 images (no tks loader)."""
    model, info, cfg, _, _ = load_model(checkpoint)
    dataset = load_training_data(cfg.data).val if split == "val" else load_split(cfg.data, "test")[0]
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    with torch.no_grad():
        chunks = [model(to_time_major(x, info.kind, cfg.data.num_steps)) for x in images.split(100)]
    return torch.cat(chunks, dim=1), labels


def _assert_same_result(measured: dict, expected: dict) -> None:
    """``evaluate_rule``'s keys equal: the histogram exactly, the rest to rounding."""
    expected = dict(expected)
    assert measured["steps_histogram"] == expected.pop("steps_histogram")
    assert {k: measured[k] for k in expected} == pytest.approx(expected)


def test_calibrate_chooses_the_rule_of_the_validation_split(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["calibrate", str(run), "--risk", "0.02", "--delta", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "exit rule: confidence >=" in out and "400 samples of the val split" in out
    written = json.loads((run / "exit-rule.json").read_text())
    rule = ExitRule.from_dict(written)
    assert written["checkpoint"] == "checkpoint.pt" and written["epoch"] == 3
    assert load_checkpoint(run / "checkpoint.pt").exit_rule == rule.to_dict()
    logits, labels = _logits_by_hand(run / "checkpoint.pt", "val")
    assert rule == calibrate(logits, labels, epsilon=0.02, delta=0.1)
    assert rule.num_samples == VAL and rule.threshold is not None and rule.calibration_steps < 4


def test_eval_applies_the_stored_rule_on_the_test_set(run: Path, capsys: pytest.CaptureFixture) -> None:
    main(["calibrate", str(run), "--risk", "0.02", "--delta", "0.1"])
    checkpoint = run / "checkpoint.pt"
    assert main(["eval", str(checkpoint), "--exit-rule", "--activity"]) == 0
    out = capsys.readouterr().out
    assert "steps on average of 4" in out and "the bound 0.02" in out and "energy per sample" in out
    stored = json.loads((run / "metrics.json").read_text())["eval"]["checkpoint.pt"]
    measured = stored["exit_rule"]
    rule = ExitRule.from_dict(measured["rule"])
    logits, labels = _logits_by_hand(checkpoint, "test")
    _assert_same_result(measured, evaluate_rule(rule, logits, labels))
    assert sum(measured["steps_histogram"]) == 360
    # the energy of all T steps is the activity measured at the trained T, and early exit spends less
    assert measured["full_energy_uj"] == pytest.approx(stored["activity"]["totals"]["energy_uj"])
    assert 0 < measured["energy_uj"] < measured["full_energy_uj"]


def test_the_rule_travels_through_nir_and_a_stream(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("nir")
    import nir

    main(["calibrate", str(run), "--risk", "0.02", "--delta", "0.1", "--rule", "margin"])
    rule = ExitRule.from_dict(load_checkpoint(run / "checkpoint.pt").exit_rule)
    assert main(["export", str(run / "checkpoint.pt"), "--out", str(tmp_path / "model.nir")]) == 0
    assert exit_rule_of(nir.read(tmp_path / "model.nir").metadata) == rule
    # a causal network run on the first t steps gives step t's logits: the stream of a deployment
    model, info, cfg, _, _ = load_model(run / "checkpoint.pt")
    x, _ = next(iter(torch.utils.data.DataLoader(load_split(cfg.data, "test")[0], batch_size=64)))
    frames = to_time_major(x, info.kind, 4)
    with torch.no_grad():
        full = model(frames)
        answers, used = exit_stream(rule, (model(frames[:t])[-1] for t in range(1, 5)))
    expected = evaluate_rule(rule, full, full.mean(0).argmax(-1))
    assert used.double().mean().item() == pytest.approx(expected["mean_steps"])
    assert (answers == full.mean(0).argmax(-1)).double().mean().item() == pytest.approx(expected["accuracy"])


def test_a_rule_file_and_the_refusals(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["calibrate", str(run), "--risk", "0.05"])
    capsys.readouterr()
    other = tmp_path / "rule.json"
    other.write_text(json.dumps({**json.loads((run / "exit-rule.json").read_text()), "threshold": None}))
    assert main(["eval", str(run / "checkpoint.pt"), "--exit-rule", str(other)]) == 0
    assert "exit rule: never before T" in capsys.readouterr().out
    cases = [
        (["calibrate", str(run), "--split", "test"], "would promise nothing about it"),
        (["calibrate", str(run), "--risk", "0"], "epsilon (--risk) must be in (0, 1)"),
        (["eval", str(run / "checkpoint.pt"), "--exit-rule", str(tmp_path / "none.json")], "cannot read the exit rule"),
    ]
    with lock_run_dir(run):  # a training session holds the folder: the checkpoint is not rewritten under it
        assert main(["calibrate", str(run)]) == 2
        assert "is in use by" in capsys.readouterr().err
    bare = train(
        load_config(
            None,
            ["optim.epochs=1", "loss.name=ce", "data.train_limit=300", "run.progress=false", f"run.out_dir={tmp_path}"],
        )
    ).run_dir
    cases += [
        (["calibrate", str(bare)], "the run has no validation split (data.val_size is null)"),
        (["eval", str(bare / "checkpoint.pt"), "--exit-rule"], "has no calibrated exit rule: run tks calibrate"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_study_measures_calibrated_and_uncorrected_rules(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["calibrate", str(run.parent), "--study", "--risk", "0.01", "0.05", "--delta", "0.1"]) == 0
    assert "epsilon 0.05: calibrated" in capsys.readouterr().out
    study = json.loads((run / "anytime.json").read_text())
    val, val_labels = _logits_by_hand(run / "checkpoint.pt", "val")
    test, test_labels = _logits_by_hand(run / "checkpoint.pt", "test")
    scores, answers = running_scores(val.double(), "confidence")
    for bound in study["bounds"]:
        rule = calibrate(val, val_labels, epsilon=bound["epsilon"], delta=0.1)
        assert bound["calibrated"]["rule"] == rule.to_dict()
        _assert_same_result(bound["calibrated"]["test"], evaluate_rule(rule, test, test_labels))
        # uncorrected: the lowest grid threshold whose validation risk is <= epsilon, found threshold by threshold
        risks = {
            float(t): exit_losses(answers, exit_steps(scores, float(t)), None, "disagreement").mean().item()
            for t in threshold_grid()
        }
        assert bound["empirical"]["threshold"] == min(t for t, r in risks.items() if r <= bound["epsilon"])
    fixed = {f["threshold"]: f["test"] for f in study["fixed"]}
    assert set(fixed) == {0.9, 0.99}
    by_hand = ExitRule("confidence", 0.9, 4, "disagreement", 0.5, 0.1, "none", 0, 0.0, 0.0)
    assert fixed[0.9]["mean_steps"] == pytest.approx(evaluate_rule(by_hand, test, test_labels)["mean_steps"])
    assert main(["calibrate", str(run), "--risk", "0.01", "0.05"]) == 2
    assert "several --risk values need --study" in capsys.readouterr().err
