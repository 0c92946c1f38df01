"""``tks compare`` and ``tks report`` beside the paper: the published numbers and ours minus them, by hand."""

import csv

import pytest
from run_folders import fake_run

from tks.compare import compare_runs, format_difference, group_runs, paper_rows, paper_target, read_runs, table_rows
from tks.compare.groups import Stat
from tks.report import build_report

CIFAR10_R19 = ("data.name=cifar10", "model.name=resnet19", "data.augment=official")


def cifar10_runs(tmp_path):
    """Two seeds of TKS and one of the baseline, CIFAR-10 / ResNet-19 / T=4, with chosen numbers."""
    numbers = {
        ("tks", 0): {"top1": 0.9600, "top5": 0.9990, "aurc": 0.0030},
        ("tks", 1): {"top1": 0.9650, "top5": 0.9980, "aurc": 0.0026},
        ("ce", 0): {"top1": 0.9500, "top5": 0.9990, "aurc": 0.0050},
    }
    for (loss, seed), metrics in numbers.items():
        fake_run(tmp_path, f"{loss}-s{seed}", loss=loss, seed=seed, steps=4, overrides=CIFAR10_R19, metrics=metrics)
    return tmp_path


def test_the_paper_table_gives_the_published_numbers_and_ours_minus_them(tmp_path):
    rows = table_rows(group_runs(read_runs([cifar10_runs(tmp_path)])))
    cells = {r[3]: r for r in paper_rows(rows)}
    # TKS, Table 4: 96.35 / 99.85 / 2.76. Ours: mean 96.25 (sd 0.3536), 99.85 (sd 0.0707), 2.80 (sd 0.2828)
    assert cells["TKS"][4:10] == ["Table 4, Table 1 (TKS*)", "96.35", "-0.10 ± 0.35", "99.85", "+0.00 ± 0.07", "2.76"]
    assert cells["TKS"][10] == "+0.04 ± 0.28" and cells["TKS"][11:] == ["2", "cifar10_resnet19_tks"]
    # Baseline, one run: 95.76 / 99.94 / 4.10 against 95.00 / 99.90 / 5.00, no spread
    assert cells["Baseline"][5:11] == ["95.76", "-0.76", "99.94", "-0.04", "4.10", "+0.90"]
    text = compare_runs([tmp_path], tmp_path / "tables")
    assert "Against the paper:" in text and "| 96.35 | -0.10 ± 0.35 |" in text
    table = {r["method"]: r for r in csv.DictReader((tmp_path / "tables" / "compare.csv").open())}
    paper = ("paper_top1_pct", "paper_top5_pct", "paper_aurc_x1e3", "paper_recipe")
    assert [table["TKS"][c] for c in paper] == ["96.35", "99.85", "2.76", "cifar10_resnet19_tks"]


def test_runs_the_paper_does_not_report_get_no_paper_table(tmp_path):
    fake_run(tmp_path, "digits", loss="tks")  # digits: no row of the paper
    fake_run(tmp_path, "crop", loss="tks", steps=4, overrides=(*CIFAR10_R19[:2], "data.augment=none"))
    groups = group_runs(read_runs([tmp_path]))
    assert [paper_target(g) for g in groups] == [None, None]
    assert "Against the paper" not in compare_runs([tmp_path], tmp_path / "tables")
    table = list(csv.DictReader((tmp_path / "tables" / "compare.csv").open()))
    assert [r["paper_top1_pct"] + r["paper_recipe"] for r in table] == ["", ""]


def test_the_row_without_augmentation_is_table_1s_plain_tks(tmp_path):
    fake_run(tmp_path, "cf", loss="tks", steps=4, overrides=(*CIFAR10_R19[:2], "data.augment=crop_flip"))
    (group,) = group_runs(read_runs([tmp_path]))
    target = paper_target(group)
    assert (target.recipe, target.values, target.rows) == (
        "cifar10_resnet19_tks_crop_flip",
        {"top1": 95.3},
        ("Table 1",),
    )


@pytest.mark.parametrize(("stat", "text"), [(Stat(80.0, None, 1), "-5.30"), (Stat(86.0, 1.234, 3), "+0.70 ± 1.23")])
def test_format_difference(stat, text):
    assert format_difference(stat, 85.30) == text


def test_the_report_shows_the_paper_table(tmp_path):
    page, _ = build_report(read_runs([cifar10_runs(tmp_path)]))
    assert "<h2>Against the paper</h2>" in page and "<td>-0.10 ± 0.35</td>" in page
