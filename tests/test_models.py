import math
from functools import partial

import pytest
import torch
import torchvision

from tks.errors import OptionError, StepsError, UnknownNameError
from tks.models import count_parameters, create_model, list_models
from tks.models.sew_resnet import SEWBasicBlock, SEWBottleneck, connect_function
from tks.preflight import activation_bytes
from tks.snn import make_neuron
from tks.snn.layers import make_norm

# (in_channels, input size) small enough for a CPU test, large enough for every pooling stage
SIZES = {
    "spiking_cnn": (1, 8),
    "spiking_lenet": (1, 28),
    "spiking_convnet": (1, 28),
    "spiking_convnet_wide": (1, 28),
    "vgg_snn": (2, 16),
    "vgg_snn_small": (2, 16),
    "resnet19": (3, 8),
    "resnet19_tet": (3, 8),
    "sew_resnet19": (3, 8),
    "sew_resnet18": (3, 32),
    "sew_resnet34": (3, 32),
    "sew_resnet50": (3, 32),
}
# parameter counts of the reference networks (docs/reference.md §2.6), K=10
REFERENCE_PARAMS = {"vgg_snn": 9.27e6, "resnet19": 12.70e6, "sew_resnet19": 12.63e6}


def build(name, seed=0, engine="tks", num_classes=7, **options):
    torch.manual_seed(seed)
    in_channels, _ = SIZES[name]
    return create_model(name, num_classes=num_classes, in_channels=in_channels, neuron=make_neuron(engine), **options)


def inputs(name, steps, batch=2):
    in_channels, size = SIZES[name]
    return torch.rand(steps, batch, in_channels, size, size) * 4  # strong enough input to make every layer spike


def test_every_model_has_test_sizes():
    assert set(list_models()) == set(SIZES)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_output_shape_and_gradients_reach_every_parameter(name, steps):
    model = build(name)
    out = model(inputs(name, steps))
    assert out.shape == (steps, 2, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"


@pytest.mark.parametrize("name", list_models())
def test_same_seed_same_output(name):
    x = inputs(name, 2)
    torch.testing.assert_close(build(name, seed=1)(x), build(name, seed=1)(x), rtol=0, atol=0)
    assert not torch.equal(build(name, seed=1).classifier[0].weight, build(name, seed=2).classifier[0].weight)


@pytest.mark.parametrize("name", ["spiking_cnn", "vgg_snn"])
def test_engines_agree_on_a_whole_network(name):
    pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed (the extra)")
    x = inputs(name, 3)
    torch.testing.assert_close(build(name, seed=1)(x), build(name, seed=1, engine="spikingjelly")(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_forward_features_is_the_classifier_input(name):
    model = build(name).eval()
    x = inputs(name, 3, batch=5)
    feats = model.forward_features(x)
    assert feats.dim() == 2 and feats.shape[0] == 5
    # the classifier is linear and per step, so applied to the time-mean features it gives the time-mean logits
    torch.testing.assert_close(model.classifier(feats.unsqueeze(0))[0], model(x).mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "reference"), sorted(REFERENCE_PARAMS.items()))
def test_parameter_counts_match_the_papers_networks(name, reference):
    in_channels = 2 if name == "vgg_snn" else 3
    count = count_parameters(create_model(name, num_classes=10, in_channels=in_channels))
    assert abs(count - reference) / reference < 0.005, count


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_sew_resnets_have_torchvisions_parameter_count(depth):
    ours = count_parameters(create_model(f"sew_resnet{depth}", num_classes=1000, in_channels=3))
    theirs = sum(p.numel() for p in getattr(torchvision.models, f"resnet{depth}")(weights=None).parameters())
    assert ours == theirs


def test_tebn_model_runs_at_fewer_steps_and_refuses_more():
    model = create_model("vgg_snn", num_classes=10, in_channels=2, norm="tebn", max_steps=4)
    for steps in (1, 2, 4):
        assert model(inputs("vgg_snn", steps)).shape == (steps, 2, 10)
    with pytest.raises(StepsError, match="built for at most 4 time steps.*cannot run at T=5"):
        model(inputs("vgg_snn", 5))


def test_tdbn_initialisation_is_alpha_times_threshold():
    model = create_model("resnet19", num_classes=10, in_channels=3)  # official norm: tdBN, V_th = 0.5
    block = model.features[2]
    assert torch.allclose(block.conv1[1][0].weight, torch.tensor(0.5))
    assert torch.allclose(block.conv2[1][0].weight, torch.tensor(0.5 * math.sqrt(0.5)))
    assert isinstance(block.shortcut[0], torch.nn.BatchNorm2d)  # the BN-only shortcut of the first block
    plain = create_model("resnet19", num_classes=10, in_channels=3, norm="bn")
    assert torch.allclose(plain.features[2].conv2[1][0].weight, torch.tensor(1.0))
    tet = create_model("resnet19_tet", num_classes=10, in_channels=3)
    assert tet.features[0][0][0].out_channels == 64
    assert tet.features[2].shortcut[0][0].kernel_size == (1, 1)  # 64 -> 128: a conv shortcut, as TET


def test_sew_connect_functions():
    a, s = torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert connect_function("ADD")(a, s).tolist() == [0, 1, 1, 2]
    assert connect_function("AND")(a, s).tolist() == [0, 0, 0, 1]
    assert connect_function("IAND")(a, s).tolist() == [0, 0, 1, 0]  # a * (1 - s)
    with pytest.raises(UnknownNameError, match="unknown SEW connect function .OR.; choose one of: ADD, AND, IAND"):
        connect_function("OR")
    norm = make_norm("bn")
    x = (torch.rand(2, 1, 8, 4, 4) > 0.5).float()
    basic = SEWBasicBlock(8, 8, 1, "IAND", make_neuron(), norm)
    bottleneck = SEWBottleneck(8, 2, 1, "IAND", make_neuron(), norm)
    # basic: shortcut * (1 - body); bottleneck: body * (1 - shortcut)
    torch.testing.assert_close(basic(x), x * (1 - basic.body(x)))
    torch.testing.assert_close(bottleneck(x), bottleneck.body(x) * (1 - x))


def test_sew_options_and_stems():
    cifar = create_model("sew_resnet18", num_classes=10, in_channels=3, stem="cifar", connect="AND")
    assert cifar(torch.rand(1, 2, 3, 32, 32)).shape == (1, 2, 10)
    assert cifar.features[0][0][0].kernel_size == (3, 3)
    with pytest.raises(OptionError, match="model 'vgg_snn' has no option connect"):
        create_model("vgg_snn", num_classes=10, in_channels=2, connect="ADD")
    with pytest.raises(OptionError, match="has no option stem"):
        create_model("sew_resnet19", num_classes=10, in_channels=3, stem="cifar")


def test_registry():
    with pytest.raises(UnknownNameError, match="unknown model 'resnet'.*choose one of: resnet19"):
        create_model("resnet", num_classes=10, in_channels=3)


@pytest.mark.parametrize("norm", ["bn", "tdbn", "tebn"])
def test_static_input_runs_the_first_block_once_with_the_same_result(norm):
    """TimeInvariant: an image broadcast over T gives the outputs and gradients of T materialised copies."""
    image = torch.rand(3, 1, 28, 28) * 3
    results, rows = [], []
    for x in (image.unsqueeze(0).expand(4, 3, 1, 28, 28), image.unsqueeze(0).repeat(4, 1, 1, 1, 1)):
        torch.manual_seed(0)  # the same weights for both inputs
        model = create_model("spiking_convnet", num_classes=10, in_channels=1, norm=norm)
        first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(lambda m, i, o: rows.append(o.shape[0]))
        out = model(x)
        out.square().mean().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (out_once, grads_once), (out_full, grads_full) = results
    assert rows == [3, 4 * 3]  # the first conv ran on one step of the broadcast input, on all four of the copy
    assert out_once.abs().sum() > 0
    torch.testing.assert_close(out_once, out_full, rtol=0, atol=1e-6)
    assert all(grad.abs().sum() > 0 for grad in grads_full.values())  # every layer takes part
    for name, grad in grads_once.items():  # the same sums, added in another order
        scale = grads_full[name].abs().max().item()
        torch.testing.assert_close(grad, grads_full[name], rtol=0, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("name", list_models())
def test_the_memory_preflight_estimates_every_model_in_training_mode(name):
    # The estimate runs the model on the meta device; spiking_convnet's BatchNorm1d refused its one-sample probe
    in_channels, size = SIZES[name]
    build_one = partial(build, name)
    train = activation_bytes(build_one, in_channels, (size, size), steps=4, batch=8, training=True)
    evaluate = activation_bytes(build_one, in_channels, (size, size), steps=4, batch=8, training=False)
    assert train > evaluate > 0
    assert activation_bytes(build_one, in_channels, (size, size), steps=8, batch=8, training=True) == 2 * train
