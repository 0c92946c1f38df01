import json
import re

import numpy as np
import pytest
import yaml

from tks.cli import VERBS, build_parser, main
from tks.config import ConfigError, load_config
from tks.models import create_model, list_models

FAST = ["--set", "optim.epochs=2", "--set", "data.num_steps=2", "--set", "run.progress=false"]


def result_rows(out: str) -> dict[int, list[str]]:
    """The rows of the result table that train and eval print, by T: top-1, top-5, AURC(x1e3), then each step's %."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ["T", "top-1", "top-5", "AURC(x1e3)"])
    assert set(lines[header + 1]) == {"-"}
    rows = {}
    for line in lines[header + 2 :]:
        if not re.match(r"\s*\d+\s", line):
            break
        t, *cells = line.split()
        rows[int(t)] = cells
    return rows


def assert_row_matches(cells: list[str], metrics: dict) -> None:
    """A printed row shows the saved metrics, each at its printed precision."""
    assert cells[:3] == [f"{100 * metrics['top1']:.2f}", f"{100 * metrics['top5']:.2f}", f"{1e3 * metrics['aurc']:.2f}"]
    assert cells[3:] == [f"{100 * a:.1f}" for a in metrics["per_step"]]


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
    log = [json.loads(line) for line in (trained_run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"top1", "top5", "aurc", "e_aurc", "ece", "per_step", "cumulative", "train_seconds"} <= set(metrics)
    assert metrics["num_steps"] == 2 and len(metrics["per_step"]) == 2 and metrics["num_samples"] == 360
    assert log[-1]["test"]["top1"] == pytest.approx(metrics["top1"])  # the final model is the last epoch's
    assert metrics["cumulative"][-1] == pytest.approx(metrics["top1"])  # all T steps averaged: the top-1
    assert metrics["cumulative"][0] == pytest.approx(metrics["per_step"][0])  # one step: that step alone
    assert 0 <= metrics["aurc"] <= 1 and metrics["top1"] <= metrics["top5"] and metrics["train_seconds"] > 0


def test_train_prints_epochs_and_result_table(tmp_path, capsys):
    """The console shows what log.jsonl and metrics.json record: one line per epoch, then the result table."""
    assert main(["train", *FAST, "--set", f"run.out_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / re.search(r"run folder: (\S+)", out).group(1).rsplit("/", 1)[-1]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    epoch_line = (
        r"epoch +(\d+)  loss (\S+) \(ce (\S+) tks (\S+)\)  train +(\S+)%  test +(\S+)%  lr (\S+)  (\d+) samples/s"
    )
    printed = re.findall(epoch_line, out)
    assert [int(p[0]) for p in printed] == [r["epoch"] for r in log] == [1, 2]
    for (_, loss, ce, tks, train, test, lr, rate), r in zip(printed, log, strict=True):
        assert [loss, ce, tks] == [f"{r['train'][k]:.3f}" for k in ("loss", "ce", "tks")]
        assert (train, test, lr) == (
            f"{100 * r['train']['acc']:.1f}",
            f"{100 * r['test']['top1']:.1f}",
            f"{r['lr']:.2e}",
        )
        assert int(rate) > 0
    # the first epoch's weight is 0 (linear ramp), so its loss is the CE alone; the second mixes in TKS
    assert printed[0][1] == printed[0][2] and log[1]["tks_weight"] > 0
    mixed = (1 - log[1]["tks_weight"]) * log[1]["train"]["ce"] + log[1]["tks_weight"] * log[1]["train"]["tks"]
    assert log[1]["train"]["loss"] == pytest.approx(mixed)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = result_rows(out)
    assert list(rows) == [2]
    assert_row_matches(rows[2], metrics)


def test_eval_prints_a_row_per_step_count(trained_run, capsys):
    assert main(["eval", str(trained_run / "checkpoint.pt"), "--steps", "1", "2", "4"]) == 0
    rows = result_rows(capsys.readouterr().out)
    assert list(rows) == [1, 2, 4]
    assert [len(r) for r in rows.values()] == [4, 5, 7]  # top-1, top-5, AURC, then T step accuracies
    saved = json.loads((trained_run / "metrics.json").read_text())
    for t, cells in rows.items():
        assert_row_matches(cells, saved["eval"]["checkpoint.pt"]["steps"][str(t)])
    by_t = {t: saved["eval"]["checkpoint.pt"]["steps"][str(t)]["per_step"] for t in (1, 2, 4)}
    assert by_t[4][:2] == by_t[2] and by_t[2][:1] == by_t[1]  # step t never sees later steps: the same image each step
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
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["model", "parameters"]
    counts = {name: int(count.replace(",", "")) for name, count, *_ in (line.split() for line in lines)}
    assert list(counts) == list_models()
    for name, count in counts.items():
        model = create_model(name, num_classes=10, in_channels=1)
        assert count == sum(p.numel() for p in model.parameters()), name
    assert main(["models", "--num-classes", "100", "--in-channels", "1"]) == 0
    more_classes = dict(line.split()[:2] for line in capsys.readouterr().out.splitlines()[1:])
    assert int(more_classes["spiking_cnn"].replace(",", "")) == counts["spiking_cnn"] + 90 * (512 + 1)  # wider head


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "missing.pt"], "checkpoint not found: missing.pt"),
        (["train", "missing.yaml"], "config file not found: missing.yaml"),
        (["train", "--set", "model.name=resnet"], "unknown model 'resnet'"),
        (["train", "--set", "data.name=cifar"], "unknown dataset 'cifar'"),
        (["train", "--set", "loss.name=tks2"], "unknown loss 'tks2' (did you mean 'tks'?)"),
        (["train", "--set", "loss.name=tks", "--set", "loss.options.gamma=2"], "loss 'tks' takes its options from"),
        (["train", "--set", "model.options.connect=AND"], "model 'spiking_cnn' has no option connect"),
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
    assert "steps must all be >= 1 (tks eval --steps), got [0]" in capsys.readouterr().err


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
    saved = json.loads((trained_run / "metrics.json").read_text())["eval"]["checkpoint.pt"]
    curve = saved["early_exit"]["curve"]
    assert [p["threshold"] for p in curve] == [0.5, 0.9, 1.0]
    assert curve[-1]["mean_steps"] == 2.0 and curve[-1]["accuracy"] == pytest.approx(saved["steps"]["2"]["top1"])
    steps = [p["mean_steps"] for p in curve]
    assert 1.0 <= steps[0] <= steps[1] <= steps[2]  # a higher threshold never stops earlier
    printed = re.findall(r"^ +(\d\.\d{3}) +(\S+) +(\S+)$", out, flags=re.M)
    assert printed == [(f"{p['threshold']:.3f}", f"{100 * p['accuracy']:.2f}", f"{p['mean_steps']:.2f}") for p in curve]
    # activity of spiking_cnn on 1x8x8 digits, T=2, K=10: the spiking layers and their sizes (channels x H x W)
    activity = saved["activity"]
    assert activity["num_samples"] == 360 and activity["num_steps"] == 2
    layers = activity["layers"]
    assert [(r["name"], r["neurons"]) for r in layers] == [
        ("features.1", 32 * 8 * 8),
        ("features.3", 64 * 8 * 8),
        ("features.6", 128 * 4 * 4),
    ]
    for r in layers:
        assert r["rate"] == pytest.approx(sum(r["rate_per_step"]) / 2)
        assert r["spikes_per_sample"] == pytest.approx(r["rate"] * r["neurons"] * 2)
        assert max(r["rate_per_step"]) <= r["fired_fraction"] <= 1  # a neuron that fires at any step counts once
        line = re.search(rf"^{re.escape(r['name'])} +(\d+) +(\S+) +(\S+) +(.+)$", out, flags=re.M)
        assert line and line.groups() == (
            str(r["neurons"]),
            f"{r['rate']:.3f}",
            f"{r['fired_fraction']:.3f}",
            " ".join(f"{v:.3f}" for v in r["rate_per_step"]),
        )
    totals = activity["totals"]
    # the ANN twin: every connection is a MAC, once (conv 1->32, 32->64 on 8x8, 64->128 on 4x4, linear 512->10)
    assert totals["ann_macs"] == 9 * (1 * 32 * 64 + 32 * 64 * 64 + 64 * 128 * 16) + 512 * 10
    assert totals["macs"] == 2 * 9 * 1 * 32 * 64  # the SNN: only the first conv multiplies (analog input), T times
    # each spike is an accumulate per connection it drives (a 2x2 average pool spreads it over a quarter of them)
    fan_out = [64 * 9, 128 * 9 / 4, 10 / 4]
    acs = sum(r["spikes_per_sample"] * f for r, f in zip(layers, fan_out, strict=True))
    assert totals["acs"] == pytest.approx(acs)
    assert totals["energy_uj"] == pytest.approx((4.6 * totals["macs"] + 0.9 * totals["acs"]) * 1e-6)  # 45 nm pJ
    assert totals["ann_energy_uj"] == pytest.approx(4.6 * totals["ann_macs"] * 1e-6)
    assert f"= {totals['energy_uj']:.4f} uJ" in out
    assert main(["eval", str(trained_run / "checkpoint.pt"), "--early-exit", "1.5"]) == 2
    assert "thresholds must be in [0, 1]" in capsys.readouterr().err


def test_eval_options_are_one_typed_object_whatever_builds_them():
    from tks.eval_options import EvalOptions, parse_eval_options

    parsed = parse_eval_options(["--steps", "1", "4", "--early-exit", "--event-steps", "rebin", "--activity"])
    built = EvalOptions(steps=[1, 4], early_exit=[], event_steps="rebin", activity=True)  # lists become tuples
    assert parsed == built and hash(parsed) == hash(built) and built.steps == (1, 4) and built.early_exit == ()
    assert parse_eval_options([]) == EvalOptions()  # tks eval's defaults are the object's
    for bad, message in [
        (["--steps", "0"], "steps must all be >= 1"),
        (["--early-exit", "1.5"], "thresholds must be in [0, 1]"),
        (["--event-steps", "stretch"], "invalid choice: 'stretch'"),
        (["--plugin", "x"], "unrecognized arguments: --plugin x"),  # a CLI flag, not an evaluation option
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_eval_options(bad)
    with pytest.raises(ConfigError, match="event_steps must be 'truncate' or 'rebin'"):
        EvalOptions(event_steps="stretch")
