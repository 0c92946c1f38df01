import pytest
import torch

from tks.errors import UnknownNameError
from tks.models import count_parameters, create_model, list_models
from tks.snn import make_neuron

SIZES = {"spiking_cnn": (1, 8)}  # (in_channels, input size) small enough for a CPU test


def build(name, seed=0, engine="tks"):
    torch.manual_seed(seed)
    in_channels, _ = SIZES[name]
    return create_model(name, num_classes=7, in_channels=in_channels, neuron=make_neuron(engine))


def test_every_model_has_test_sizes():
    assert set(list_models()) == set(SIZES)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_output_shape_and_gradients_reach_every_parameter(name, steps):
    model = build(name)
    in_channels, size = SIZES[name]
    x = torch.randn(steps, 3, in_channels, size, size)
    out = model(x)
    assert out.shape == (steps, 3, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient for {missing}"
    assert all(p.grad.abs().sum() > 0 for p in model.parameters()), "a parameter got an all-zero gradient"


@pytest.mark.parametrize("name", list_models())
def test_deterministic_and_engines_agree(name):
    in_channels, size = SIZES[name]
    x = torch.randn(3, 2, in_channels, size, size)
    a, b = build(name, seed=1), build(name, seed=1)
    sj = build(name, seed=1, engine="spikingjelly")
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    torch.testing.assert_close(a(x), sj(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_forward_features(name):
    in_channels, size = SIZES[name]
    model = build(name).eval()
    feats = model.forward_features(torch.randn(3, 5, in_channels, size, size))
    assert feats.dim() == 2 and feats.shape[0] == 5


def test_registry():
    assert count_parameters(build("spiking_cnn")) == sum(p.numel() for p in build("spiking_cnn").parameters())
    with pytest.raises(UnknownNameError, match="unknown model 'resnet'.*choose one of: spiking_cnn"):
        create_model("resnet", num_classes=10, in_channels=3)
