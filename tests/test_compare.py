import csv
import io
import json
import math

import pytest
from run_folders import fake_run

from tks.cli import main
from tks.compare import (
    RunFolderError,
    accuracy_by_test_steps,
    compare_runs,
    expand_run_dirs,
    group_runs,
    mean_std,
    method_label,
    per_step_accuracy,
    read_run,
    read_runs,
    steps_markdown,
    table_rows,
    to_csv,
    to_markdown,
)
from tks.config import load_config
from tks.errors import TKSWarning


def test_mean_and_sample_std_by_hand():
    stat = mean_std([1.0, 2.0, 3.0, 4.0])
    assert stat.mean == 2.5 and stat.n == 4
    assert stat.std == pytest.approx(math.sqrt((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 3))  # n - 1 = 3
    one = mean_std([7.0])
    assert (one.mean, one.std, one.n) == (7.0, None, 1)
    with pytest.raises(ValueError):
        mean_std([])


@pytest.fixture
def three_runs(tmp_path):
    """Baseline seeds 0 and 1 (top-1 80% and 90%), TKS seed 0 (top-1 95%), all trained at T=2; top-5 all 100%."""
    fake_run(tmp_path, "ce0", seed=0, metrics={"top1": 0.80, "aurc": 0.010, "per_step": [0.7, 0.8]})
    fake_run(tmp_path, "ce1", seed=1, metrics={"top1": 0.90, "aurc": 0.020, "per_step": [0.8, 1.0]})
    tks = {"top1": 0.95, "aurc": 0.005, "e_aurc": 0.004, "ece": 0.03, "per_step": [0.9, 0.9]}
    fake_run(tmp_path, "tks0", loss="tks", metrics=tks)
    return tmp_path


def test_runs_that_differ_only_in_seed_form_one_group(three_runs):
    groups = group_runs(read_runs([three_runs]))
    assert [(g.method, g.seeds) for g in groups] == [("Baseline", [0, 1]), ("TKS", [0])]
    baseline = table_rows(groups)[0].stats
    assert baseline["top1"].mean == pytest.approx(85.0)
    assert baseline["top1"].std == pytest.approx(math.sqrt(2 * 5.0**2 / 1))  # 7.071
    assert baseline["aurc"].mean == pytest.approx(15.0) and baseline["aurc"].std == pytest.approx(7.0710678)
    assert baseline["top5"].std == 0.0  # two equal values: a real zero, unlike one run's None
    assert table_rows(groups)[1].stats["top1"].std is None


def test_step_tables_by_hand(tmp_path):
    fake_run(tmp_path, "a", metrics={"top1": 0.8, "per_step": [0.7, 0.8], "eval": {"steps": {"1": {"top1": 0.6}}}})
    rebin = {"steps": {"1": {"top1": 0.5}}, "steps_rebin": {"1": {"top1": 0.3}}}
    fake_run(tmp_path, "b", loss="tks", metrics={"top1": 0.9, "per_step": [0.9, 1.0], "eval": rebin})
    text = steps_markdown(group_runs(read_runs([tmp_path])))
    assert "digits / spiking_cnn, trained at T=2: top-1 (%) at each test T:" in text
    assert "| Baseline | 60.00 | 80.00 |\n| TKS | 50.00 | 90.00 |" in text
    assert "the same, frames re-binned:\n\n| Method | T=1 | T=2 |\n|:---|---:|---:|\n| Baseline |  | 80.00 |\n" in text
    assert "| TKS | 30.00 | 90.00 |" in text  # the trained T: the top level, as for truncation
    assert "accuracy (%) of each single step t:\n\n| Method | t=1 | t=2 |" in text
    assert "| Baseline | 70.00 | 80.00 |\n| TKS | 90.00 | 100.00 |" in text


def test_no_test_steps_table_for_runs_evaluated_at_the_trained_t_only(three_runs):
    text = steps_markdown(group_runs(read_runs([three_runs])))
    assert "test T" not in text and "| Baseline | 75.00 ± 7.07 | 90.00 ± 14.14 |" in text


def test_per_step_and_test_steps_statistics(tmp_path):
    fake_run(
        tmp_path, "a", seed=0, metrics={"top1": 0.8, "per_step": [0.7, 0.8], "eval": {"steps": {"1": {"top1": 0.6}}}}
    )
    fake_run(
        tmp_path, "b", seed=1, metrics={"top1": 0.9, "per_step": [0.9, 1.0], "eval": {"steps": {"1": {"top1": 0.7}}}}
    )
    (group,) = group_runs(read_runs([tmp_path]))
    assert [s.mean for s in per_step_accuracy(group)] == pytest.approx([80.0, 90.0])
    by_steps = accuracy_by_test_steps(group)
    assert list(by_steps) == [1, 2]  # T=2 comes from the top level: the trained T
    assert by_steps[1].mean == pytest.approx(65.0) and by_steps[2].mean == pytest.approx(85.0)


def test_markdown_has_the_table_4_layout_with_bold_best(three_runs):
    markdown = to_markdown(table_rows(group_runs(read_runs([three_runs]))))
    lines = markdown.splitlines()
    assert lines[0].startswith("| Dataset | Model | T | Method | top-1 (%) | top-5 (%) | AURC (x10^3) |")
    assert lines[2] == (
        "| digits | spiking_cnn | 2 | Baseline | 85.00 ± 7.07 | **100.00 ± 0.00** | 15.00 ± 7.07 | 5.00 ± 0.00 "
        "| **2.00 ± 0.00** | 2 |"
    )
    # the block's cells are merged as in the paper; ties are bold in both rows; a single run has no ±
    assert lines[3] == "|  |  |  | TKS | **95.00** | **100.00** | **5.00** | **4.00** | 3.00 | 1 |"
    assert "sample standard deviation" in markdown


def test_csv_holds_means_and_stds(three_runs):
    rows = list(csv.DictReader(io.StringIO(to_csv(table_rows(group_runs(read_runs([three_runs])))))))
    assert [r["method"] for r in rows] == ["Baseline", "TKS"]
    assert float(rows[0]["top1_pct_mean"]) == pytest.approx(85.0)
    assert float(rows[0]["aurc_x1e3_std"]) == pytest.approx(7.0710678)
    assert rows[0]["seeds"] == "0;1" and rows[0]["n"] == "2"
    assert rows[1]["top1_pct_std"] == ""  # one run: no standard deviation


@pytest.mark.parametrize(
    ("overrides", "label"),
    [
        (["loss.name=ce"], "Baseline"),
        (["loss.name=ls"], "LS"),
        (["loss.name=tet"], "TET"),
        (["loss.name=tks"], "TKS"),
        (["loss.tks.teacher=mean", "loss.tks.student=mean", "loss.tks.student_temperature=3"], "TKS (paper Eq. 5-7)"),
        (["loss.tks.teacher=mean"], "TKS (teacher=mean)"),
        (
            ["loss.tks.detach_teacher=true", "loss.tks.teacher_target=logits"],
            "TKS (detach_teacher, teacher_target=logits)",
        ),
        (["loss.tks.teacher_source=consensus"], "TKS (teacher_source=consensus)"),
        (["loss.name=strong_weak"], "Weak2Strong"),
        (["loss.name=strong_weak", "loss.strong_weak.direction=strong2weak"], "Strong2Weak"),
        (["loss.name=strong_weak", "loss.strong_weak.direction=both"], "Strong2Weak+Weak2Strong"),
        (["loss.name=strong_weak", "loss.strong_weak.direction=cascade"], "Strong2Weak cascade"),
        (
            ["loss.name=strong_weak", "loss.strong_weak.selection=sample", "loss.strong_weak.scale_t2=true"],
            "Weak2Strong (selection=sample, scale_t2)",
        ),
        (["loss.name=ce", "loss.strong_weak.direction=both"], "Baseline"),
    ],
)
def test_method_labels(overrides, label):
    assert method_label(load_config(None, overrides).loss) == label


def test_groups_of_one_label_are_told_apart_by_what_differs(tmp_path):
    fake_run(tmp_path, "t3", loss="tks", overrides=("loss.tks.temperature=3",))
    fake_run(tmp_path, "t5", loss="tks", overrides=("loss.tks.temperature=5",))
    fake_run(tmp_path, "t5-other-name", loss="tks", seed=1, overrides=("loss.tks.temperature=5", "run.name=x"))
    fake_run(tmp_path, "t4", loss="tks", steps=4)  # another T: another block, plain label
    groups = group_runs(read_runs([tmp_path]))
    # temperature 3 is the default: that group keeps the plain label
    assert [(g.num_steps, g.method, len(g.runs)) for g in groups] == [
        (2, "TKS", 1),
        (2, "TKS (loss.tks.temperature=5.0)", 2),
        (4, "TKS", 1),
    ]


def test_each_group_of_one_label_shows_only_where_it_departs_from_the_defaults(tmp_path):
    fake_run(tmp_path, "official", loss="tks")
    fake_run(tmp_path, "a03", loss="tks", overrides=("loss.tks.alpha=0.3",))
    fake_run(tmp_path, "t1", loss="tks", overrides=("loss.tks.temperature=1",))
    fake_run(tmp_path, "t5-a03", loss="tks", overrides=("loss.tks.temperature=5", "loss.tks.alpha=0.3"))
    assert sorted(g.method for g in group_runs(read_runs([tmp_path]))) == [
        "TKS",
        "TKS (loss.tks.alpha=0.3)",
        "TKS (loss.tks.alpha=0.3, loss.tks.temperature=5.0)",
        "TKS (loss.tks.temperature=1.0)",
    ]


def test_parent_folders_expand_to_their_runs(three_runs):
    run = three_runs / "tks0"
    assert expand_run_dirs([three_runs]) == [three_runs / "ce0", three_runs / "ce1", run]
    assert expand_run_dirs([run, three_runs]) == [run, three_runs / "ce0", three_runs / "ce1"]  # once each


def test_unfinished_runs_in_a_parent_folder_are_left_out_with_a_warning(three_runs):
    (three_runs / "ce1" / "metrics.json").unlink()  # as while the run is still training
    with pytest.warns(TKSWarning, match=r"left out 1 unfinished run\(s\) \(no final metrics.json\): ce1"):
        assert expand_run_dirs([three_runs]) == [three_runs / "ce0", three_runs / "tks0"]
    with pytest.raises(RunFolderError, match="metrics.json is missing"):
        read_runs([three_runs / "ce1"])  # named on its own, it is an error


def test_the_cli_shows_our_warnings_as_one_line(three_runs, capsys):
    (three_runs / "ce1" / "metrics.json").unlink()
    assert main(["compare", str(three_runs)]) == 0
    out, err = capsys.readouterr()
    assert err == "tks: warning: left out 1 unfinished run(s) (no final metrics.json): ce1\n"
    assert "| Baseline |" in out


def _break(run, name, text):
    (run / name).write_text(text)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda run: (run / "metrics.json").unlink(), "metrics.json is missing"),
        (lambda run: _break(run, "metrics.json", '{"top1": 0.9,'), "metrics.json is not valid JSON"),
        (lambda run: _break(run, "metrics.json", json.dumps({"top1": 0.9})), "metrics.json lacks top5, aurc"),
        (lambda run: _break(run, "metrics.json", "[1, 2]"), "metrics.json must hold a JSON object"),
        (lambda run: _break(run, "log.jsonl", '{"epoch": 1}\n{"epoch"\n'), "log.jsonl, line 2 is not valid JSON"),
        (lambda run: (run / "log.jsonl").unlink(), "log.jsonl is missing"),
        (lambda run: _break(run, "config.yaml", "loss: {nam: tks}"), "config.yaml is not a valid tks config"),
        (lambda run: _break(run, "config.yaml", "loss: [1"), "config.yaml is not a valid tks config"),
        (lambda run: (run / "config.yaml").unlink(), "is not a run folder (no config.yaml)"),
    ],
)
def test_broken_run_folders_give_one_line_naming_the_file(tmp_path, damage, message, capsys):
    run = fake_run(tmp_path, "run")
    damage(run)
    with pytest.raises(RunFolderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_runs([run])
    assert main(["compare", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tks: error: ") and str(run) in err and message in err and "\n" not in err


def test_missing_folder_and_empty_parent(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert main(["compare", str(tmp_path)]) == 2
    assert "holds no run folders" in capsys.readouterr().err


def test_cli_compare_prints_and_writes_markdown_and_csv(three_runs, tmp_path, capsys):
    out = tmp_path / "table"
    assert main(["compare", str(three_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "compare.md").read_text() in printed
    assert (out / "compare.md").read_text() == compare_runs([three_runs])
    assert (out / "compare.csv").read_text().startswith("dataset,model,T,method,top1_pct_mean")


def test_reads_a_real_run(digits_runs):
    _, (ce, tks) = digits_runs
    run = read_run(tks)
    assert run.num_steps == 2 and run.seed == 0 and len(run.log) == 2
    assert list(run.top1_by_steps()) == [1, 2, 3]
    assert [g.method for g in group_runs([read_run(ce), run])] == ["Baseline", "TKS"]


def test_paired_differences_by_hand(tmp_path):
    # TKS - Baseline top-1 differences 2.0, 1.0, 0.5 points: mean 7/6, sd 0.7638, t(0.975, 2) = 4.3027
    for seed, (tks, ce) in enumerate([(0.90, 0.88), (0.91, 0.90), (0.89, 0.885)]):
        fake_run(tmp_path, f"tks{seed}", seed=seed, loss="tks", metrics={"top1": tks, "aurc": 0.010 + seed / 1000})
        fake_run(tmp_path, f"ce{seed}", seed=seed, metrics={"top1": ce, "aurc": 0.020 + seed / 1000})
    fake_run(tmp_path, "ls5", seed=5, loss="ls", metrics={"top1": 0.5})  # no seed in common with TKS: no row
    text = compare_runs([tmp_path], paired="TKS")
    row = next(line for line in text.splitlines() if "TKS − Baseline" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["digits / spiking_cnn / T=2", "TKS − Baseline", "3"]
    assert cells[3] == "+1.17 [-0.73, +3.06]"  # 7/6 ± 4.3027 * 0.7638 / sqrt(3): contains 0, no star
    assert cells[5] == "-10.00 [-10.00, -10.00]*"  # AURC x10^3 lower by exactly 10 each seed: excludes 0
    assert "TKS − LS" not in text
    with pytest.raises(RunFolderError, match="paired='TET': no such method"):
        compare_runs([tmp_path], paired="TET")


def test_cli_compare_paired(three_runs, capsys):
    assert main(["compare", str(three_runs), "--paired", "TKS"]) == 0
    out = capsys.readouterr().out
    assert "| digits / spiking_cnn / T=2 | TKS − Baseline | 1 | +15.00 |" in out  # seed 0 only (95 - 80), no interval


def selected_entry(top1, selected_on="val", epoch=1):
    return {"epoch": epoch, "selected_on": selected_on, "top1": top1, "top5": 1.0, "aurc": 0.02, "e_aurc": 0.01}


def test_compare_reports_the_final_model_unless_asked_for_the_selected_one(tmp_path, capsys):
    steps = {"per_step": [0.5, 0.5], "num_steps": 2, "ece": 0.1}
    for seed, (final, chosen) in enumerate([(0.80, 0.70), (0.90, 0.60)]):
        selected = {**selected_entry(chosen, epoch=seed + 1), **steps}
        fake_run(tmp_path, f"ce{seed}", seed=seed, metrics={"top1": final, "selected_on": "val", "selected": selected})
    final = compare_runs([tmp_path])
    assert "| 85.00 ± 7.07 |" in final and "Final model of each run (last epoch, checkpoint.pt)." in final
    selected = compare_runs([tmp_path], model="selected")
    assert "| 65.00 ± 7.07 |" in selected and "85.00" not in selected
    assert "Selected model of each run (best.pt, the epoch of the best validation top-1 (2 runs))." in selected
    assert main(["compare", str(tmp_path), "--model", "selected"]) == 0
    assert "| 65.00 ± 7.07 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="model must be one of"):
        compare_runs([tmp_path], model="best")


def test_selected_models_chosen_on_the_test_set_are_flagged(tmp_path):
    steps = {"per_step": [0.5, 0.5], "num_steps": 2, "ece": 0.1}
    fake_run(tmp_path, "a", metrics={"selected": {**selected_entry(0.7, "test"), **steps}})
    fake_run(tmp_path, "b", seed=1, metrics={"selected": {**selected_entry(0.7, "val"), **steps}})
    note = compare_runs([tmp_path], model="selected").split("\n\n")[1]
    assert "the best validation top-1 (1 run)" in note and "test numbers optimistic (1 run)" in note


def test_runs_without_selected_metrics_name_the_file(tmp_path, capsys):
    run = fake_run(tmp_path, "old")
    assert main(["compare", str(run), "--model", "selected"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics.json'} has no 'selected' metrics" in err and "--model final" in err
    fake_run(tmp_path, "partial", seed=1, metrics={"selected": {"top1": 0.5}})
    with pytest.raises(RunFolderError, match="'selected' lacks top5"):
        compare_runs([tmp_path / "partial"], model="selected")


def test_selected_model_of_real_runs(digits_runs):
    root, runs = digits_runs
    metrics = [read_run(r).metrics for r in runs]
    table = compare_runs([root], model="selected")
    cells = [line.split("|") for line in table.split("\n\n")[0].splitlines()[2:]]
    top1 = {row[4].strip(): row[5].strip(" *") for row in cells}  # without the bold of the best
    for m, label in zip(metrics, ("Baseline", "TKS"), strict=True):
        assert m["selected_on"] == "test"  # no validation split: chosen on the test set, as the official code
        assert top1[label] == f"{100 * m['selected']['top1']:.2f}"
    assert "the best test top-1, which makes the test numbers optimistic (2 runs)" in table


def test_runs_repeating_a_seed_count_once_with_a_warning(tmp_path):
    """A seed loop run twice: {0, 0, 1} is two seeds, and the other method's seed 0 is paired once."""
    fake_run(tmp_path, "ce0", seed=0, metrics={"top1": 0.80})
    fake_run(tmp_path, "ce0_copy", seed=0, metrics={"top1": 0.70})
    fake_run(tmp_path, "ce1", seed=1, metrics={"top1": 0.90})
    fake_run(tmp_path, "tks0", loss="tks", seed=0, metrics={"top1": 0.95})
    fake_run(tmp_path, "tks1", loss="tks", seed=1, metrics={"top1": 0.91})
    with pytest.warns(TKSWarning) as caught:
        groups = group_runs(read_runs([tmp_path]))
    (warning,) = caught
    copy, first = tmp_path / "ce0_copy", tmp_path / "ce0"
    assert str(warning.message) == f"{copy} repeats seed 0 of Baseline ({first}): counted once, from {first}"
    baseline = groups[0]
    assert baseline.seeds == [0, 1] and [r.path.name for r in baseline.runs] == ["ce0", "ce1"]
    assert table_rows(groups)[0].stats["top1"].mean == pytest.approx(85.0)  # 80 and 90, not the copy's 70
    with pytest.warns(TKSWarning, match="repeats seed 0"):
        text = compare_runs([tmp_path], paired="TKS")
    row = next(line for line in text.splitlines() if "TKS − Baseline" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "2" and cells[3].startswith("+8.00 [")  # (95 - 80 + 91 - 90) / 2 over 2 pairs


def test_a_config_edited_after_training_is_refused_naming_what_changed(tmp_path):
    run = fake_run(tmp_path, "ce0")
    config = run / "config.yaml"
    original = config.read_text()
    config.write_text(original.replace("epochs: 15", "epochs: 6").replace("\n  val_size: null", "\n  val_size: 300"))
    message = (
        f"{config} was changed after training (data.val_size: None in metrics.json, 300 in config.yaml; "
        "optim.epochs: 15 in metrics.json, 6 in config.yaml): it no longer describes what was measured; put it back, "
        "or move the folder away"
    )
    with pytest.raises(RunFolderError) as caught:
        read_run(run)
    assert str(caught.value) == message
    config.write_text(original + "\n# a comment, and a change to how it runs only\n")
    config.write_text(config.read_text().replace("num_workers: 0", "num_workers: 3"))
    assert read_run(run).config.data.num_workers == 3  # where or how data are read: not the experiment
