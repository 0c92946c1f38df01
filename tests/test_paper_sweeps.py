"""The paper's sweep files (studies/paper/): one per table and figure, their recipes, the data root, a miniature."""

import json
import re
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from data_files import write_cifar

from tks.config import load_config
from tks.paper import published
from tks.sweep import SweepError, load_sweep

ROOT = Path(__file__).parents[1]
STUDIES = ROOT / "studies" / "paper"
FILES = sorted(STUDIES.glob("*.yaml"))
# What each file sweeps, by recipe, as the paper says (Tables 1-4 from published.csv; the figures from section 5.2)
FIGURES = {
    "figure3": {"cifar10dvs_vgg_snn_ce", "cifar10dvs_vgg_snn_tks"},
    "figure4": {f"{d}_vgg_snn_{m}" for d in ("cifar10dvs", "ncaltech101") for m in ("ce", "tks")},
}
SEEDS = [42, 0, 1]


def tks_sweep(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tks", "sweep", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_one_sweep_file_per_table_and_figure():
    assert [p.stem for p in FILES] == ["figure3", "figure4", "table1", "table2", "table3", "table4"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_file_sweeps_the_recipes_of_its_table_over_the_seeds(path, tmp_path):
    sweep = load_sweep(path, data_root=tmp_path)
    recipes = {Path(b).stem for b in yaml.safe_load(path.read_text())["base"]}
    if path.stem.startswith("table"):
        assert recipes == {p.recipe for p in published() if p.table == int(path.stem[-1])}
    else:
        assert recipes == FIGURES[path.stem]
    trained_at = [10, *range(1, 10)] if path.stem == "figure3" else [None]
    assert len(sweep.runs) == len(recipes) * len(SEEDS) * len(trained_at)
    assert {r.config.run.seed for r in sweep.runs} == set(SEEDS)
    assert {r.config.data.num_steps for r in sweep.runs} == (
        set(range(1, 11))
        if path.stem == "figure3"
        else {load_config(ROOT / "configs" / "paper" / f"{r}.yaml").data.num_steps for r in recipes}
    )
    assert sweep.out_dir == ROOT / "results" / "paper" / path.stem
    for run in sweep.runs:
        recipe = re.sub(r"(-T\d+)?-s\d+$", "", run.name)  # named {recipe}(-T{data.num_steps})-s{run.seed}
        assert recipe in recipes and run.name.endswith(f"-s{run.config.run.seed}")
        cfg = load_config(ROOT / "configs" / "paper" / f"{recipe}.yaml")
        assert (run.config.loss, run.config.model, run.config.optim) == (cfg.loss, cfg.model, cfg.optim)
        assert run.config.data == replace(
            cfg.data,
            root=str(tmp_path / Path(cfg.data.root).name),
            **({"num_steps": run.config.data.num_steps} if path.stem == "figure3" else {}),
        )


def test_figure3_evaluates_the_runs_trained_at_10_at_every_t():
    sweep = load_sweep(STUDIES / "figure3.yaml")
    for run in sweep.runs:
        calls = [str(e) for e in run.evals]
        t = " ".join(map(str, range(1, 11)))
        expected = [f"--steps {t}", f"--steps {t} --event-steps rebin"] if run.config.data.num_steps == 10 else []
        assert calls == expected


def test_data_root_keeps_each_datasets_folder_and_leaves_unset_roots(tmp_path, monkeypatch):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": str(ROOT / "configs/paper/cifar10_resnet19_tks.yaml"), "out_dir": "o"}))
    (run,) = load_sweep(sweep, data_root="/datasets").runs
    assert run.config.data.root == "/datasets/cifar10"  # the recipe's data/cifar10
    assert load_sweep(sweep).runs[0].config.data.root == "data/cifar10"
    monkeypatch.chdir(tmp_path)  # a relative --data-root is taken from the working folder: runs may start elsewhere
    assert load_sweep(sweep, data_root="sets").runs[0].config.data.root == str(tmp_path / "sets" / "cifar10")
    sweep.write_text(yaml.safe_dump({"out_dir": "o"}))  # digits: no root
    assert load_sweep(sweep, data_root="/datasets").runs[0].config.data.root is None


def test_a_run_whose_data_folder_is_missing_stops_the_sweep_in_one_line(tmp_path):
    args = ["--only", "cifar10dvs_vgg_snn_tks-s42", "--out", str(tmp_path / "out")]
    result = tks_sweep(str(STUDIES / "table2.yaml"), *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = (
        f"tks: error: {STUDIES / 'table2.yaml'}: run cifar10dvs_vgg_snn_tks-s42 reads cifar10-dvs from data.root "
        "data/cifar10-dvs, which is not a folder: give --data-root DIR, the folder holding the datasets' folders "
        "(docs/sweeps.md), or set data.root\n"
    )
    assert result.stderr == line and not (tmp_path / "out").exists()
    missing = tks_sweep(str(STUDIES / "table2.yaml"), *args, "--data-root", str(tmp_path / "none"), cwd=tmp_path)
    assert f"data.root {tmp_path / 'none' / 'cifar10-dvs'}, which is not a folder" in missing.stderr


MINIATURE = [
    "--set",
    "optim.epochs=1",
    "--set",
    "optim.warmup_epochs=0",
    "--set",
    "data.batch_size=4",
    "--set",
    "data.num_workers=0",
    "--set",
    "run.progress=false",
    "--set",
    "run.device=cpu",
]


@pytest.mark.slow
def test_a_miniature_of_table4_through_tks_sweep_shows_the_paper_column(tmp_path):
    """CIFAR-10 / ResNet-19, Baseline and TKS, two seeds, one epoch of 20 fake images, against Table 4."""
    write_cifar(tmp_path / "datasets" / "cifar10", per_batch=4)
    only = ["--only", "cifar10_resnet19_ce-s[01]", "--only", "cifar10_resnet19_tks-s[01]"]
    args = [str(STUDIES / "table4.yaml"), "--data-root", str(tmp_path / "datasets"), "--out", str(tmp_path / "out")]
    result = tks_sweep(*args, *only, *MINIATURE, "--parallel", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    top1: dict[str, list[float]] = {"ce": [], "tks": []}
    for folder in sorted((tmp_path / "out").glob("cifar10_resnet19_*")):
        metrics = json.loads((folder / "metrics.json").read_text())
        top1[folder.name.split("_")[2].split("-")[0]].append(100 * metrics["top1"])
    assert [len(v) for v in top1.values()] == [2, 2]
    paper = result.stdout[result.stdout.index("Against the paper:") :]
    for method, label, published_top1 in (("ce", "Baseline", 95.76), ("tks", "TKS", 96.35)):
        values = top1[method]
        diff = f"{statistics.mean(values) - published_top1:+.2f} ± {statistics.stdev(values):.2f}"
        row = re.search(rf"^\| [^|]*\| [^|]*\| [^|]*\| {label} \|.*$", paper, re.MULTILINE).group(0)
        assert f"| {published_top1:.2f} | {diff} |" in row, row
        assert row.endswith(f"| 2 | cifar10_resnet19_{method} |")


def test_a_list_of_bases_is_every_base_times_every_grid_cell(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("loss: {name: ce}\n")
    b.write_text("loss: {name: tks}\nrun: {name: bee}\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": ["a.yaml", "b.yaml"], "out_dir": "o", "grid": {"run.seed": [0, 1]}}))
    loaded = load_sweep(sweep)
    assert [(r.name, r.config.loss.name, r.config.run.seed) for r in loaded.runs] == [
        ("digits-seed=0", "ce", 0),  # no name template: each base's run.name (the default) and the grid's labels
        ("digits-seed=1", "ce", 1),
        ("bee-seed=0", "tks", 0),
        ("bee-seed=1", "tks", 1),
    ]
    assert loaded.base_name == "2 config files"
    assert [r.changes for r in loaded.runs[2:]] == [(), (("run.seed", 1),)]  # measured against each run's own base
    sweep.write_text(yaml.safe_dump({"base": ["a.yaml", "b.yaml"], "out_dir": "o", "name": "{recipe}-x"}))
    assert [r.name for r in load_sweep(sweep).runs] == ["a-x", "b-x"]


@pytest.mark.parametrize(
    ("base", "message"),
    [
        (["a.yaml", "a.yaml"], "base names a config file twice"),
        (["a.yaml", 3], r"base as a list must name config files \(relative to the sweep file\), got \['a.yaml', 3\]"),
        ([], r"base as a list must name config files"),
        (["a.yaml", "missing.yaml"], "base missing.yaml: "),
    ],
)
def test_a_wrong_list_of_bases_is_one_line(tmp_path, base, message):
    (tmp_path / "a.yaml").write_text("loss: {name: ce}\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": base, "out_dir": "o"}))
    with pytest.raises(SweepError, match=f"^{re.escape(str(sweep))}: {message}"):
        load_sweep(sweep)
