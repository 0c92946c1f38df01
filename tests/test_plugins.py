"""Plugins: a user's code loaded by name or path, recorded by the run, loaded again by the commands that read it."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tks.cli import main
from tks.data import DATASETS
from tks.losses import LOSSES
from tks.models import MODELS
from tks.plugins import PluginError, load_plugin

PLUGIN = Path(__file__).with_name("downstream") / "my_snn.py"
QUICK = ["--set", "optim.epochs=2", "--set", "optim.warmup_epochs=0", "--set", "run.progress=false"]
MINE = ["--set", "model.name=my_mlp", "--set", "data.name=my-stripes", "--set", "data.batch_size=16"]


@pytest.fixture
def isolated(monkeypatch):
    """Registries, loaded plugins and sys.path restored after the test."""
    from tks import plugins

    for registry in (MODELS, DATASETS, LOSSES):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_plugin_that_fails_or_is_missing_is_one_line(isolated, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "broken.py", "raise RuntimeError('no GPU driver')\n")
    assert main(["models", "--plugin", "broken.py"]) == 2
    assert capsys.readouterr().err == ("tks: error: plugin 'broken.py' failed to load: RuntimeError: no GPU driver\n")
    assert main(["models", "--plugin", "nowhere.py"]) == 2
    assert "plugin 'nowhere.py': no such file or package folder" in capsys.readouterr().err
    assert main(["models", "--plugin", "no_such_module"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "tks: error: plugin 'no_such_module': no module of that name is installed, on PYTHONPATH or in this folder\n"
    )


def test_a_plugin_cannot_take_a_builtin_name(isolated, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "clash.py",
        """
        import tks
        tks.register_model("resnet19")(lambda num_classes: None)
    """,
    )
    assert main(["models", "--plugin", "clash.py"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("tks: error: plugin 'clash.py': model 'resnet19' is already registered by ")
        and err.count("\n") == 1
    )


def test_a_module_in_the_working_folder_is_found_and_recorded_by_path(isolated, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(PLUGIN, tmp_path / "my_snn.py")
    plugin = load_plugin("my_snn")
    assert plugin.spec == str(tmp_path / "my_snn.py") and plugin.module == "my_snn" and plugin.file == "my_snn.py"
    assert "my_mlp" in MODELS and "my-stripes" in DATASETS and "my_scaled_ce" in LOSSES
    assert load_plugin(str(tmp_path / "my_snn.py")) is plugin  # the same plugin, loaded once
    with pytest.raises(PluginError, match="a folder without __init__.py"):
        load_plugin(str(tmp_path) + "/")


@pytest.mark.slow
def test_a_package_offers_plugins_through_its_entry_points(tmp_path):
    site = tmp_path / "site"
    (site / "offered").mkdir(parents=True)
    (site / "offered" / "__init__.py").write_text(PLUGIN.read_text())
    info = site / "offered-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: offered\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[tks.plugins]\nmine = offered\n")
    code = "from tks.cli import main; main(['models', '--in-channels', '1'])"
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "my_mlp" in out and "A two-layer spiking MLP." in out


def test_resume_takes_no_plugin_flag(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--plugin", "x.py"]) == 2
    assert "drop CONFIG, --set, --plugin" in capsys.readouterr().err


def tks(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tks", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_downstream_project_trains_evaluates_exports_sweeps_and_compares(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PLUGIN, project / "my_snn.py")
    trained = tks(
        "train",
        "--plugin",
        "my_snn.py",
        *MINE,
        *QUICK,
        "--set",
        "loss.name=my_scaled_ce",
        "--set",
        "loss.options.scale=0.5",
        "--set",
        "model.options.hidden=16",
        cwd=project,
    )
    assert trained.returncode == 0, trained.stderr
    (run,) = (project / "runs").iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["run"]["plugins"] == [str(project / "my_snn.py")] and config["model"]["options"] == {"hidden": 16}
    (session,) = json.loads((run / "provenance.json").read_text())["sessions"]
    assert session["plugins"][0]["module"] == "my_snn" and len(session["plugins"][0]["sha256"]) == 64
    assert json.loads((run / "metrics.json").read_text())["top1"] > 0.6  # chance: 1/3

    elsewhere = tmp_path / "elsewhere"  # eval and export find the plugin by the run's record, from any folder
    elsewhere.mkdir()
    evaluated = tks("eval", str(run / "checkpoint.pt"), "--steps", "1", "4", cwd=elsewhere)
    assert evaluated.returncode == 0 and evaluated.stderr == "", evaluated.stderr
    exported = tks("export", str(run / "checkpoint.pt"), cwd=elsewhere)
    assert exported.returncode == 0 and (run / "model.nir").is_file(), exported.stderr

    with open(project / "my_snn.py", "a") as f:
        f.write("# edited after training\n")
    warned = tks("eval", str(run / "checkpoint.pt"), cwd=elsewhere)
    assert warned.returncode == 0 and "has changed since this run was trained" in warned.stderr

    sweep = {
        "base": {
            "model": {"name": "my_mlp"},
            "data": {"name": "my-stripes", "batch_size": 16},
            "optim": {"epochs": 2, "warmup_epochs": 0},
            "run": {"progress": False},
        },
        "out_dir": "sweep",
        "name": "mine-s{run.seed}",
        "grid": {"run.seed": [0, 1]},
        "eval": [{"args": "--steps 1 2"}],
    }
    (project / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    swept = tks("sweep", "sweep.yaml", "--plugin", "my_snn.py", "--parallel", "2", cwd=project)
    assert swept.returncode == 0, swept.stdout + swept.stderr
    compared = tks("compare", str(project / "sweep"), cwd=elsewhere)  # reads run files: needs no plugin
    assert compared.returncode == 0 and "my_scaled_ce" not in compared.stdout and "seeds" in compared.stdout
    reported = tks("report", str(project / "sweep"), "--out", str(elsewhere / "report.html"), cwd=elsewhere)
    assert reported.returncode == 0 and (elsewhere / "report.html").stat().st_size > 0, reported.stderr

    (project / "my_snn.py").rename(project / "moved.py")
    missing = tks("eval", str(run / "checkpoint.pt"), cwd=elsewhere)
    assert missing.returncode == 2 and missing.stderr.strip().endswith(
        f"no such file or package folder ({project / 'my_snn.py'})"
    )


OWN_LOOP = """
import torch
from my_snn import my_mlp, my_stripes
from tks import TKSLoss, make_neuron
from torch.utils.data import DataLoader

torch.manual_seed(0)
model = my_mlp(num_classes=3, in_channels=1, neuron=make_neuron())
loss_fn = TKSLoss(temperature=3.0, alpha=0.5)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
loader = DataLoader(my_stripes("train", None), batch_size=32, shuffle=True)
epochs = 3
for epoch in range(epochs):
    for images, labels in loader:
        logits = model(images.unsqueeze(0).expand(4, *images.shape))  # [T, B, ...] -> [T, B, K]
        loss = loss_fn(logits, labels, epoch=epoch, epochs=epochs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
images, labels = my_stripes("test", None).tensors
accuracy = (model(images.unsqueeze(0).expand(4, *images.shape)).mean(0).argmax(1) == labels).float().mean()
print(float(accuracy))
"""


@pytest.mark.slow
def test_the_plugins_model_trains_in_a_hand_written_loop(tmp_path):
    shutil.copy(PLUGIN, tmp_path / "my_snn.py")
    done = subprocess.run([sys.executable, "-c", OWN_LOOP], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert float(done.stdout) > 0.6
