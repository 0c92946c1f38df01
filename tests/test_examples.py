"""The SpikingJelly example: it needs only tks's loss, its neuron is tks's LIF, and it trains."""

import ast
import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tks.losses import TKSLoss
from tks.snn import LIF

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "sj_model_with_tks_loss.py"


@pytest.fixture(scope="module")
def example():
    pytest.importorskip("spikingjelly")
    spec = importlib.util.spec_from_file_location("sj_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_uses_only_the_loss_from_tks():
    tree = ast.parse(EXAMPLE.read_text())
    from_tks = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module.startswith("tks")}
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert from_tks == {"tks.losses"} and not any(name.startswith("tks") for name in imports)
    assert len(EXAMPLE.read_text().splitlines()) < 80


def test_sj_model_trains_with_the_tks_loss(tmp_path):
    pytest.importorskip("spikingjelly")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    epochs = re.findall(r"epoch (\d)  TKS weight (\S+)  last-batch loss (\S+)  test top-1 (\S+)%", result.stdout)
    assert [(e, w) for e, w, _, _ in epochs] == [("1", "0.00"), ("2", "0.35")]  # alpha 0.7 x epoch / 2 epochs
    assert all(math.isfinite(float(loss)) and float(loss) > 0 for _, _, loss, _ in epochs)
    assert float(epochs[-1][3]) > 80.0  # it learns: chance is 10%


def test_example_neuron_is_tks_lif(example):
    """The docstring's claim: the SpikingJelly neuron it builds is the official TKS neuron, i.e. tks's default LIF,
    in spikes and in surrogate gradients."""
    torch.manual_seed(0)
    x = torch.randn(8, 4, 16, dtype=torch.float64) * 0.8  # [T, B, N]: enough drive to spike and to stay silent
    upstream = torch.randn_like(x)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    spikes_ours, spikes_theirs = LIF(engine="autograd")(ours), example.lif()(theirs)
    assert 0 < spikes_ours.mean() < 1  # the comparison covers both spikes and silence
    torch.testing.assert_close(spikes_theirs, spikes_ours, rtol=0, atol=0)
    (spikes_ours * upstream).sum().backward()
    (spikes_theirs * upstream).sum().backward()
    torch.testing.assert_close(theirs.grad, ours.grad)


def test_example_network_gives_per_step_logits_the_loss_takes(example):
    torch.manual_seed(0)
    net = example.spiking_cnn()
    logits = net(torch.rand(example.T, 5, 1, 8, 8))
    assert logits.shape == (example.T, 5, 10)  # time-major in, time-major per-step logits out
    TKSLoss()(logits, torch.randint(0, 10, (5,)), weight=0.5).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
