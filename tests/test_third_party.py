"""Models built from SpikingJelly and snnTorch neurons train, evaluate and export through the tks commands.

Their neurons keep state between calls; tks resets it before every batch (tks.snn.stateful). SpikingJelly is in the
dev extra, snnTorch in the interop extra; each test skips, saying so, without its package.
"""

import json

import nir
import pytest
import torch
from torch import nn

from tks.cli import main
from tks.config import LossConfig, OptimConfig
from tks.data import DATASETS
from tks.engine import Training, train_one_epoch
from tks.losses import LOSSES, Criterion
from tks.models import MODELS, register_model
from tks.snn import LIF, StatefulModelError, Stepwise, make_neuron, reset_before_each_call, reset_states
from tks.snn.stateful import stateful_modules

QUICK = ["--set", "optim.epochs=2", "--set", "optim.warmup_epochs=0", "--set", "run.progress=false"]


@pytest.fixture
def registries(monkeypatch):
    for registry in (MODELS, DATASETS, LOSSES):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))


def sj_cnn(num_classes: int, in_channels: int) -> nn.Module:
    """A multi-step SpikingJelly CNN (no BatchNorm: SpikingJelly's NIR exporter does not take it)."""
    from spikingjelly.activation_based import layer, neuron

    return nn.Sequential(
        layer.Conv2d(in_channels, 8, 3, padding=1, step_mode="m"),
        neuron.LIFNode(tau=2.0, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(8 * 64, num_classes, step_mode="m"),
    )


def snntorch_mlp(num_classes: int, in_channels: int) -> nn.Module:
    """An snnTorch MLP written for one step, run over T by Stepwise, as snnTorch's NIR exporter takes it."""
    import snntorch as snn

    neuron = snn.Leaky(beta=torch.full((32,), 0.5), threshold=torch.ones(32), reset_mechanism="zero", init_hidden=True)
    return Stepwise(nn.Sequential(nn.Linear(in_channels * 64, 32), neuron, nn.Linear(32, num_classes)), flatten=True)


def snntorch_scalar(num_classes: int, in_channels: int) -> nn.Module:
    """The same with snnTorch's default neuron (scalar beta, reset by subtraction) and an output neuron."""
    import snntorch as snn

    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * 64, 32),
        snn.Leaky(beta=0.5, init_hidden=True),
        nn.Linear(32, num_classes),
        snn.Leaky(beta=0.5, init_hidden=True, output=True),
    )
    return Stepwise(net, output=1)  # the output neuron's membrane are the logits


def trained(factory, tmp_path, monkeypatch, accuracy: float):
    """Register ``factory`` under its name, train it on digits with ``tks train`` and evaluate it; its run folder."""
    register_model(factory.__name__, inputs="1x8x8")(factory)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--set", f"model.name={factory.__name__}", *QUICK]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["top1"] > accuracy  # digits: chance is 0.1
    assert main(["eval", str(run / "checkpoint.pt"), "--steps", "1", "4"]) == 0
    return run


def test_a_spikingjelly_model_trains_evaluates_and_exports(registries, tmp_path, monkeypatch, capsys):
    pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed (the spikingjelly extra)")
    run = trained(sj_cnn, tmp_path, monkeypatch, accuracy=0.5)
    assert main(["export", str(run / "checkpoint.pt")]) == 0
    graph = nir.read(str(run / "model.nir"))
    assert graph.metadata["source"] == "spikingjelly" and graph.metadata["model"] == "sj_cnn"
    assert any(isinstance(node, nir.LIF) for node in graph.nodes.values())
    assert list(graph.metadata["input_shape"]) == [1, 8, 8] and int(graph.metadata["num_steps"]) == 4


def test_without_the_reset_a_spikingjelly_model_fails_in_one_line():
    pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed (the spikingjelly extra)")
    model = sj_cnn(3, 1)
    batches = [(torch.rand(4, 1, 8, 8), torch.randint(0, 3, (4,))) for _ in range(2)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    encode, criterion = lambda x: x.unsqueeze(0).expand(2, *x.shape), Criterion(LossConfig(name="ce"))
    step = dict(criterion=criterion, optimizer=optimizer, schedule=OptimConfig(epochs=1), encode=encode)
    training = Training(model, **step, device=torch.device("cpu"))
    with pytest.raises(StatefulModelError, match="keeps state from one batch into the next that tks cannot reset"):
        train_one_epoch(training, batches, epoch=0)  # the second batch meets the first's graph
    training = Training(reset_before_each_call(sj_cnn(3, 1)), **step, device=torch.device("cpu"))  # what tks builds
    train_one_epoch(training, batches, epoch=0)


def test_an_snntorch_model_trains_evaluates_and_exports_exactly(registries, tmp_path, monkeypatch):
    pytest.importorskip("snntorch", reason="snnTorch is not installed (the interop extra)")
    from snntorch import utils
    from snntorch.import_nir import import_from_nir

    from tks.checkpoint_model import load_model

    run = trained(snntorch_mlp, tmp_path, monkeypatch, accuracy=0.5)
    assert main(["export", str(run / "checkpoint.pt")]) == 0
    graph = nir.read(str(run / "model.nir"))
    assert graph.metadata["source"] == "snntorch" and bool(graph.metadata["input_flattened"])
    model = load_model(run / "checkpoint.pt").model
    x_seq = torch.rand(4, 6, 1, 8, 8) * 2
    imported = import_from_nir(graph)  # snnTorch's own importer replays the export step by step
    utils.reset(imported)
    with torch.no_grad():
        torch.testing.assert_close(torch.stack([imported(x.flatten(1))[0] for x in x_seq]), model(x_seq))


def test_an_snntorch_model_its_exporter_refuses_is_one_line(registries, tmp_path, monkeypatch, capsys):
    pytest.importorskip("snntorch", reason="snnTorch is not installed (the interop extra)")
    run = trained(snntorch_scalar, tmp_path, monkeypatch, accuracy=0.4)
    capsys.readouterr()
    assert main(["export", str(run / "checkpoint.pt")]) == 2
    err = capsys.readouterr().err
    assert "layer 'net.2' resets by 'subtract'; NIR's LIF resets to zero" in err  # the warning comes first
    assert err.splitlines()[-1].startswith("tks: error: NIR export of a snnTorch model: its exporter failed (")
    assert "without a Flatten of its own, and each neuron's beta and threshold as tensors" in err


class Remembers(nn.Module):
    """A neuron of one's own that keeps its membrane between calls."""

    def __init__(self, reset: bool) -> None:
        super().__init__()
        self.v = None
        if reset:
            self.reset_state = lambda: setattr(self, "v", None)

    def forward(self, x_seq):
        out = []
        for x in x_seq:
            self.v = x if self.v is None else 0.5 * self.v + x
            out.append(self.v)
        return torch.stack(out)


@pytest.mark.parametrize("reset", [False, True])
def test_state_of_ones_own_is_reset_through_reset_state_or_named(reset, registries, tmp_path, monkeypatch, capsys):
    @register_model("remembers")
    def remembers(num_classes: int, in_channels: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(2), nn.Linear(in_channels * 64, num_classes), Remembers(reset))

    monkeypatch.chdir(tmp_path)
    status = main(["train", "--set", "model.name=remembers", *QUICK])
    err = capsys.readouterr().err
    if reset:
        assert status == 0, err
    else:
        assert status == 2 and err.startswith("tks: error: the model keeps state from one batch into the next")
        assert "reset_state()" in err and err.count("\n") == 1


def test_stepwise_runs_a_single_step_network_over_time():
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    x_seq = torch.randn(5, 4, 3)
    torch.testing.assert_close(Stepwise(net)(x_seq), torch.stack([net(x) for x in x_seq]))
    assert Stepwise(nn.Sequential())(x_seq).shape == (5, 4, 3)


def test_a_tks_lif_on_the_spikingjelly_engine_is_not_reset_twice():
    pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed (the spikingjelly extra)")
    model = nn.Sequential(nn.Linear(3, 2), make_neuron("spikingjelly")())
    assert isinstance(model[1], LIF) and stateful_modules(model) == [] and reset_states(model) == 0
    assert reset_before_each_call(model) is model and not model._forward_pre_hooks
