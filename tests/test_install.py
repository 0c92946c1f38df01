"""Installing tks beside a user's torch: light imports, one line per missing extra, one version, a working wheel.

docs/install.md states what these check: the core imports nothing optional, the CLI's help never imports torch,
every feature of an extra names the extra when it is missing, and the built wheel installs into a fresh
environment that already holds a torch without touching it (slow test).
"""

import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
import yaml
from data_files import write_fashion_mnist
from packaging.requirements import Requirement
from packaging.version import Version

import tks
from tks.cli import main
from tks.extras import DISTRIBUTION, EXTRAS, PACKAGES, MissingExtraError, require

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OPTIONAL = set(EXTRAS) | {"h5py", "triton", "torch._dynamo"}
"""What no core import may load: every optional package, triton (only CUDA runs need it) and dynamo (2.6 s)."""


def loaded_after(*codes: str) -> list[set[str]]:
    """Top-level packages (and torch._dynamo) in ``sys.modules`` after each piece of code, run one after the other
    in one fresh interpreter."""
    report = "import json, sys\nprint(json.dumps(sorted(sys.modules)))"
    probe = "\n".join(f"{code}\n{report}" for code in codes)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    modules = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("[")]
    return [{m.split(".")[0] for m in names} | ({"torch._dynamo"} & set(names)) for names in modules]


def test_import_tks_loads_not_even_torch():
    (loaded,) = loaded_after("import tks; tks.__version__; tks.SUBMODULES")
    assert not {"torch", "numpy", "yaml"} & loaded


def test_import_tks_losses_loads_torch_and_nothing_optional():
    (loaded,) = loaded_after("from tks.losses import TKSLoss")
    assert "torch" in loaded and not OPTIONAL & loaded


@pytest.mark.slow
def test_the_core_modules_load_nothing_optional():
    core = "tks.metrics tks.snn tks.models tks.data tks.build tks.engine tks.experiment tks.evaluation tks.inference"
    imports = f"import {', '.join(core.split())}, tks.compare, tks.sweep, tks.checkpoint, tks.config"
    imported, built = loaded_after(imports, "from tks.snn import LIF; LIF()")
    assert not OPTIONAL & imported
    assert not (OPTIONAL - {"torch._dynamo", "triton"}) & built  # a neuron imports dynamo (and it triton), not before


def test_every_help_answers_without_importing_torch():
    code = (
        "from tks.cli import VERBS, main\n"
        "for argv in [['--help'], *[[verb, '--help'] for verb in VERBS]]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, argv\n"
    )
    (loaded,) = loaded_after(code)
    assert not {"torch", "numpy"} & loaded


def test_every_submodule_is_an_attribute_and_every_public_name_resolves():
    modules = {m.name for m in pkgutil.iter_modules(tks.__path__)} - {"cli", "__main__"}
    assert set(tks.SUBMODULES) == modules  # a new module is documented here, or it is the CLI's
    for name in tks.SUBMODULES:
        assert getattr(tks, name) is importlib.import_module(f"tks.{name}")
    assert tks.TKSLoss is tks.losses.TKSLoss and tks.create_model is tks.models.create_model
    assert set(tks.__all__) <= set(dir(tks)) and all(getattr(tks, name) is not None for name in tks.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tks.nothing  # noqa: B018


def test_one_version_in_one_place():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tks.version.__version__"}
    assert PYPROJECT["project"]["name"] == DISTRIBUTION and metadata.version(DISTRIBUTION) == tks.__version__


def test_torch_is_a_range_and_the_core_is_light():
    core = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    assert sorted(r.name for r in core) == ["PyYAML", "numpy", "torch", "tqdm"]
    (torch_requirement,) = [r for r in core if r.name == "torch"]
    assert str(torch_requirement.specifier) == "<3,>=2.4"  # the floor .ci/run tests, no pin below the next major


def test_ci_tests_the_declared_floor():
    floor = re.search(r'"torch==([\d.]+)"', (ROOT / "noxfile.py").read_text()).group(1)
    (torch_requirement,) = [r for r in map(Requirement, PYPROJECT["project"]["dependencies"]) if r.name == "torch"]
    lowest = min(Version(s.version) for s in torch_requirement.specifier if s.operator == ">=")
    assert Version(floor) in torch_requirement.specifier and Version(floor).release[:2] == lowest.release[:2]


def requirements_of(extra: str) -> set[str]:
    """The packages an extra brings, through the extras it names of tks-snn itself."""
    names = set()
    for line in PYPROJECT["project"]["optional-dependencies"][extra]:
        requirement = Requirement(line)
        if requirement.name == DISTRIBUTION:
            names |= set().union(*(requirements_of(e) for e in requirement.extras))
        else:
            names.add(requirement.name)
    return names


def test_every_optional_module_names_an_extra_that_brings_it():
    extras = PYPROJECT["project"]["optional-dependencies"]
    for module, extra in EXTRAS.items():
        assert extra in extras
        if module != "PIL":  # Pillow comes with torchvision
            assert PACKAGES.get(module, module) in requirements_of(extra), (module, extra)
    assert {"torchvision", "tonic", "matplotlib", "nir", "ray", "submitit"} <= requirements_of("all")
    assert "spikingjelly" not in requirements_of("all")  # it asks for torch>=2.6 itself
    assert set(EXTRAS.values()) <= requirements_of("dev") | set(extras) and requirements_of("all") <= (
        requirements_of("dev")
    )


# ------------------------------------------------------------------------------------------------- missing extras


def failing_import(monkeypatch, package: str, error: Exception) -> None:
    """Importing ``package`` raises ``error`` in this test, as it does where the package is installed but broken."""

    class Failing:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == package:
                raise error

    for name in [n for n in sys.modules if n.split(".")[0] == package]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [Failing(), *sys.meta_path])


def test_require_names_the_extra_of_a_missing_or_broken_package(without, monkeypatch):
    without("tonic")
    with pytest.raises(MissingExtraError) as caught:
        require("tonic.io", "event data")
    assert str(caught.value) == "event data: tonic is not installed (pip install 'tks-snn[events]')"
    without("sklearn")
    with pytest.raises(MissingExtraError, match=r"^t-SNE: scikit-learn is not installed \(pip install 'tks-snn\[plots"):
        require("sklearn.manifold", "t-SNE")

    # torchvision built for another torch
    failing_import(monkeypatch, "torchvision", RuntimeError("operator torchvision::nms does not exist"))
    with pytest.raises(MissingExtraError) as caught:
        require("torchvision.transforms", "image datasets")
    assert str(caught.value) == (
        "image datasets: torchvision is installed but fails to import (RuntimeError: operator torchvision::nms "
        "does not exist); install a build that matches this environment, e.g. this torch (pip install "
        "'tks-snn[vision]')"
    )


def test_a_missing_dependency_of_an_extra_package_is_named(monkeypatch):
    # tonic installed, one of its own dependencies not
    failing_import(monkeypatch, "tonic", ModuleNotFoundError("No module named 'librosa'", name="librosa"))
    with pytest.raises(MissingExtraError) as caught:
        require("tonic", "event data")
    assert str(caught.value) == (
        "event data: tonic fails to import (No module named 'librosa'; pip install 'tks-snn[events]')"
    )


def sweep_file(folder: Path) -> str:
    sweep = {"base": {"optim": {"epochs": 1}}, "out_dir": "out", "name": "x-{run.seed}", "grid": {"run.seed": [0]}}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return str(folder / "sweep.yaml")


CASES = {  # package blocked, command, the feature the line names, the extra
    "vision": (
        "torchvision",
        ["train", "--set", "data.name=fashion-mnist", "--set", "data.root=fmnist"],
        "image datasets",
    ),
    "events": ("tonic", ["train", "configs/digits_dvs.yaml", "--set", "data.root=DVS"], "event data"),
    "plot": ("matplotlib", ["plot", "RUNS"], "figures (tks plot, tks report)"),
    "report": ("matplotlib", ["report", "RUNS"], "figures (tks plot, tks report)"),
    "nir": ("nir", ["export", "CHECKPOINT"], "NIR export"),
    "tensorboard": ("tensorboard", ["train", "--set", "run.tensorboard=true"], "run.tensorboard"),
    "ray": ("ray", ["sweep", "SWEEP", "--executor", "ray"], "--executor ray"),
    "slurm": ("submitit", ["sweep", "SWEEP", "--executor", "slurm"], "--executor slurm"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_feature_without_its_extra_is_one_line(
    case, without, digits_dvs_root, digits_runs, tmp_path, monkeypatch, capsys
):
    package, argv, feature = CASES[case]
    write_fashion_mnist(tmp_path / "fmnist")
    runs_root, runs = digits_runs
    replace = {
        "RUNS": str(runs_root),
        "CHECKPOINT": str(runs[1] / "checkpoint.pt"),
        "data.root=DVS": f"data.root={digits_dvs_root}",
        "data.root=IDX": f"data.root={tmp_path / 'fmnist'}",
        "SWEEP": sweep_file(tmp_path),
    }
    argv = [replace.get(a, a).replace("configs/", f"{ROOT}/configs/") for a in argv]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TKS_CACHE", str(tmp_path / "cache"))
    without(package)
    assert main([*argv, *(["--set", "optim.epochs=1"] if argv[0] == "train" else [])]) == 2
    err = capsys.readouterr().err
    extra = EXTRAS[package]
    name = PACKAGES.get(package, package)
    assert err == f"tks: error: {feature}: {name} is not installed (pip install '{DISTRIBUTION}[{extra}]')\n"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()  # no run folder was made


def test_digits_trains_without_any_extra(without, tmp_path, monkeypatch, capsys):
    without(*EXTRAS)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--set", "optim.epochs=1", "--set", "run.progress=false"]) == 0
    assert "trained in" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------- the wheel


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=True, **kwargs)


OWN_LOOP = """
import torch
from torch import nn
from tks import TKSLoss, TKSOptions

class Model(nn.Module):  # a user's model: input [T, B, D] -> logits [T, B, K]
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(x)

torch.manual_seed(0)
model, criterion = Model(), TKSLoss(TKSOptions(temperature=3.0))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(4, 16, 8), torch.randint(0, 3, (16,))
losses = []
for step in range(20):
    loss = criterion(model(x), y, weight=0.5)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(losses[0] > losses[-1])
"""


@pytest.mark.slow
def test_the_wheel_installs_beside_a_users_torch_and_trains(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    run(sys.executable, "-m", "check_wheel_contents", wheel)
    names = zipfile.ZipFile(wheel).namelist()
    assert {"tks/snn/backends/lif_cpu.c", "tks/data/digits.npz", "tks/paper/published.csv"} <= set(names)
    assert not any(n.startswith(("tests/", "results/", "docs/")) for n in names)

    venv.create(tmp_path / "env", with_pip=True)
    python, pip = tmp_path / "env" / "bin" / "python", [tmp_path / "env" / "bin" / "python", "-m", "pip"]
    run(*pip, "install", "-q", "torch==2.13.0")  # the user's torch (a CPU build lies on this machine's disk)
    torch_before = run(python, "-c", "import torch; print(torch.__version__)").stdout
    run(*pip, "install", "-q", wheel)
    assert run(python, "-c", "import torch; print(torch.__version__)").stdout == torch_before  # kept as it was
    installed = run(*pip, "list", "--format=json").stdout
    assert not {p["name"].lower() for p in json.loads(installed)} & {"torchvision", "tonic", "matplotlib", "nir"}
    # An extra with torchvision, torch named as docs/install.md says: pip picks the torchvision of this torch.
    version = torch_before.strip().split("+")[0]
    report = tmp_path / "report.json"
    vision = f"tks-snn[vision] @ {wheel.as_uri()}"
    run(*pip, "install", "--dry-run", "-q", "--report", report, vision, f"torch=={version}")
    would_install = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "torchvision" in would_install and "torch" not in would_install, would_install

    assert run(python, "-c", OWN_LOOP, cwd=tmp_path).stdout.strip() == "True"
    tks_command = tmp_path / "env" / "bin" / "tks"
    env = dict(os.environ, TKS_CACHE=str(tmp_path / "cache"))
    # Two epochs: a 1-epoch run warns (rightly) that its linear TKS ramp weighs 0 throughout.
    train = [tks_command, "train", "--set", "optim.epochs=2", "--set", "run.progress=false"]
    trained = run(*train, cwd=tmp_path, env=env)
    assert "trained in" in trained.stdout and "warning" not in trained.stderr
    assert list((tmp_path / "cache" / "kernels").glob("lif_cpu-*.so"))  # the C kernel compiled on first use
    env.update(CC="/nonexistent/cc", TKS_CACHE=str(tmp_path / "cache-without-cc"))
    fallback = run(*train, cwd=tmp_path, env=env)
    assert "trained in" in fallback.stdout
    warnings = [line for line in fallback.stderr.splitlines() if line.startswith("tks: warning:")]
    assert len(warnings) == 1 and "C compiler" in warnings[0] and len(fallback.stderr.splitlines()) == 1, (
        fallback.stderr
    )
    assert "Temporal Knowledge Sharing" in run(tks_command, "--help").stdout
