import json

import numpy as np
import pytest
import yaml

from tks.cli import VERBS, build_parser, main
from tks.config import load_config

FAST = ["--set", "optim.epochs=2", "--set", "data.num_steps=2", "--set", "run.progress=false"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", *FAST, "--set", f"run.out_dir={out}", "--set", "run.name=cli"]) == 0
    (run_dir,) = out.iterdir()
    return run_dir


def test_train_writes_the_run_folder(trained_run):
    assert trained_run.name.startswith("cli-")
    expected = {"config.yaml", "log.jsonl", "metrics.json", "checkpoint.pt", "best.pt"}
    assert expected <= {p.name for p in trained_run.iterdir()}
    cfg = load_config(trained_run / "config.yaml")
    assert cfg.optim.epochs == 2 and cfg.data.num_steps == 2
    assert len((trained_run / "log.jsonl").read_text().splitlines()) == 2
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"top1", "top5", "aurc", "e_aurc", "ece", "per_step", "cumulative", "train_seconds"} <= set(metrics)
    assert len(metrics["per_step"]) == 2


def test_train_prints_epochs_and_result_table(tmp_path, capsys):
    assert main(["train", *FAST, "--set", f"run.out_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "epoch   1" in out and "epoch   2" in out
    assert "top-1" in out and "AURC(x1e3)" in out and "accuracy of each step" in out


def test_eval_prints_a_row_per_step_count(trained_run, capsys):
    assert main(["eval", str(trained_run / "checkpoint.pt"), "--steps", "1", "2", "4"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["1", "2", "4"]
    assert [len(r) for r in rows] == [5, 6, 8]  # T, top-1, top-5, AURC, then T step accuracies
    saved = json.loads((trained_run / "metrics.json").read_text())
    assert (
        set(saved["eval"]["checkpoint.pt"]["steps"]) == {"1", "2", "4"} and saved["num_steps"] == 2
    )  # training metrics kept
    assert saved["eval"]["checkpoint.pt"]["steps"]["2"]["per_step"] == pytest.approx(
        saved["per_step"]
    )  # same model, same T
    assert main(["eval", str(trained_run / "checkpoint.pt"), "--steps", "3", "--features"]) == 0
    saved = json.loads((trained_run / "metrics.json").read_text())
    assert list(saved["eval"]["checkpoint.pt"]["steps"]) == ["1", "2", "3", "4"]  # merged, in order
    arrays = np.load(trained_run / "features.npz")
    assert arrays["features"].shape == (360, 512) and arrays["labels"].shape == (360,)
    assert (arrays["predictions"] == arrays["labels"]).mean() == pytest.approx(saved["top1"], abs=1e-6)


def test_models_lists_parameter_counts(capsys):
    assert main(["models", "--num-classes", "10", "--in-channels", "1"]) == 0
    assert "spiking_cnn" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "missing.pt"], "checkpoint not found: missing.pt"),
        (["train", "missing.yaml"], "config file not found: missing.yaml"),
        (["train", "--set", "model.name=resnet"], "unknown model 'resnet'"),
        (["train", "--set", "data.name=cifar"], "unknown dataset 'cifar'"),
        (["train", "--set", "loss.tks.alpha=2"], r"loss.tks.alpha must be in [0, 1]"),
        (["train", "--set", "data.num_steps=0"], "data.num_steps (T) must be >= 1"),
    ],
)
def test_user_errors_are_one_line_with_status_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tks: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "runs").exists()  # nothing written for a run that could not start


def test_eval_rejects_bad_steps(trained_run, capsys):
    assert main(["eval", str(trained_run / "checkpoint.pt"), "--steps", "0"]) == 2
    assert "--steps must all be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([verb, "--help"])
    assert exc.value.code == 0 and verb in capsys.readouterr().out


def test_train_help_lists_the_losses(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "losses (loss.name): ce, ls, tet, tks, strong_weak" in out
    assert "loss.strong_weak.direction: weak2strong, strong2weak, both, cascade" in out


def test_resolved_config_yaml_is_plain(trained_run):
    data = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert set(data) == {"data", "model", "loss", "optim", "run"}


def test_eval_activity_and_early_exit(trained_run, capsys):
    assert (
        main(
            [
                "eval",
                str(trained_run / "checkpoint.pt"),
                "--steps",
                "2",
                "--early-exit",
                "0.5",
                "0.9",
                "1.0",
                "--activity",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "anytime inference" in out and "uJ" in out and "features.1" in out
    saved = json.loads((trained_run / "metrics.json").read_text())["eval"]["checkpoint.pt"]
    curve = saved["early_exit"]["curve"]
    assert [p["threshold"] for p in curve] == [0.5, 0.9, 1.0]
    assert curve[-1]["mean_steps"] == 2.0 and curve[-1]["accuracy"] == pytest.approx(saved["steps"]["2"]["top1"])
    totals = saved["activity"]["totals"]
    assert totals["energy_uj"] > 0 and totals["ann_energy_uj"] > 0 and saved["activity"]["num_samples"] == 360
    assert main(["eval", str(trained_run / "checkpoint.pt"), "--early-exit", "1.5"]) == 2
    assert "thresholds must be in [0, 1]" in capsys.readouterr().err
