"""tks.export part by part: each layer's NIR node against the layer it comes from, worked out by hand or run by torch.

tests/test_export.py exports whole registered models; these tests take one layer, one helper or one command path at
a time on tiny inputs, so that each runs in milliseconds (they are what mutation testing of export.py runs:
tools/mutants.py). Where a node's meaning matters, the graph is run with ``run_nir`` against the torch module, and
``run_nir``'s own steps are checked against hand-worked numbers and torch's functions.
"""

import math
import warnings
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from torch import nn

from tks.checkpoint import CheckpointRecord, save_checkpoint
from tks.config import Config, ConfigError, DataConfig, ModelConfig, to_dict
from tks.data import DATASETS, DatasetInfo, register_dataset
from tks.data import test_normalization as normalization_of
from tks.data.loading import data_options
from tks.errors import TKSWarning
from tks.export import (
    DEFAULT_DT,
    SNNTORCH_NEEDS,
    ExportError,
    _bn_affine,
    _Builder,
    _conv,
    _conv_bn_pair,
    _convert,
    _flatten,
    _foreign_nir,
    _pool_geometry,
    _shape_after,
    _snntorch_nir,
    _step,
    _topological_order,
    _unwrap,
    _write_atomically,
    check_finite_parameters,
    export_checkpoint,
    input_metadata,
    model_framework,
    run_nir,
    to_nir,
)
from tks.extras import MissingExtraError
from tks.models import MODELS, register_model
from tks.models.blocks import SpikingClassifier, conv_norm
from tks.models.resnet19 import BasicBlock
from tks.models.sew_resnet import SEWBasicBlock, SEWBottleneck
from tks.snn import LIF, PerStep, Stepwise, make_neuron
from tks.snn.layers import TEBN, make_norm
from tks.version import __version__

# The first LIF built imports torch._dynamo (about 2 s: tks.snn.backends.mark_checks_constant). Building one when
# this module is imported lets mutmut's fork server, which imports the test modules once, pay that once rather than
# in every mutant's process.
LIF()


def with_statistics(bn: nn.BatchNorm2d, seed: int = 0) -> nn.BatchNorm2d:
    """Give a BatchNorm random running statistics and affine parameters, as after training.

    Args:
        bn: the layer, changed in place.
        seed: seed of the random values.

    Returns:
        The layer, in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    channels = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=generator))
        bn.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
        bn.weight.copy_(torch.randn(channels, generator=generator))
        bn.bias.copy_(torch.randn(channels, generator=generator))
    return bn.eval()


def statistics_everywhere(model: nn.Module) -> nn.Module:
    """Every BatchNorm of ``model`` with statistics of its own (``with_statistics``); the model in eval mode."""
    for seed, bn in enumerate(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        with_statistics(bn, seed)
    return model.eval()


def runs_like_the_model(model: nn.Module, shape: tuple[int, ...], steps: int = 3, **options) -> nir.NIRGraph:
    """Export ``model`` and check that ``run_nir`` on the graph gives the model's output at every step.

    Args:
        model: a model in eval mode.
        shape: one sample's input at one step.
        steps: T of the test input.
        **options: ``to_nir``'s keyword arguments.

    Returns:
        The graph.
    """
    torch.manual_seed(1)
    graph = to_nir(model, shape, **options)
    x = torch.rand(steps, 2, *shape) * 2
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(run_nir(graph, x), expected, rtol=1e-5, atol=1e-5)
    return graph


def kinds(graph: nir.NIRGraph) -> dict[str, str]:
    """Each node's key and type name."""
    return {key: type(node).__name__ for key, node in graph.nodes.items()}


def lif_node(size: int = 2) -> nir.LIF:
    """A NIR LIF of ``size`` neurons (tau 2e-4, r 1, no leak, threshold 0.5, reset to 0)."""
    n = np.ones(size, dtype=np.float32)
    return nir.LIF(tau=n * 2e-4, r=n, v_leak=n * 0, v_threshold=n * 0.5, v_reset=n * 0)


def affine(weight, bias=None) -> nir.Affine:
    """A NIR Affine node of ``weight`` (rows: outputs) and ``bias`` (default zeros)."""
    weight = np.asarray(weight, dtype=np.float32)
    bias = np.zeros(weight.shape[0], np.float32) if bias is None else np.asarray(bias, dtype=np.float32)
    return nir.Affine(weight=weight, bias=bias)


def message(excinfo: pytest.ExceptionInfo) -> str:
    """The text of a caught exception."""
    return str(excinfo.value)


# ----------------------------------------------------------------------------------------------------------------
# _Builder: node keys, edges, and the factor a sum pooling leaves to the next weight layer


def test_builder_keys_replace_dots_and_never_overwrite_a_node():
    b = _Builder(1e-4)
    nodes = [nir.Scale(np.ones(2, np.float32)) for _ in range(5)]
    assert b.add("a.b", nodes[0], []) == ["a_b"]
    assert b.add("a.b", nodes[1], ["a_b"]) == ["a_b_"]
    assert b.add("a_b", nodes[2], ["a_b_"]) == ["a_b__"]
    assert b.add("", nodes[3], ["a_b", "a_b__"]) == ["node"]
    assert b.add("", nodes[4], []) == ["node_"]
    assert list(b.nodes) == ["a_b", "a_b_", "a_b__", "node", "node_"]
    assert all(b.nodes[key] is node for key, node in zip(b.nodes, nodes, strict=True))
    assert b.edges == [("a_b", "a_b_"), ("a_b_", "a_b__"), ("a_b", "node"), ("a_b__", "node")]
    assert b.scaled == {}


def test_a_weight_layer_takes_the_factor_of_the_sum_pooling_before_it():
    b = _Builder(1e-4)
    b.scaled["pool"] = (0.25, "features.3")
    conv = nir.Conv2d((4, 4), np.full((2, 1, 1, 1), 2.0, np.float32), 1, 0, 1, 1, np.ones(2, np.float32))
    b.add("conv", conv, ["pool"])
    assert conv.weight.dtype == np.float32 and conv.weight.tolist() == [[[[0.5]]], [[[0.5]]]]
    assert conv.bias.tolist() == [1.0, 1.0]  # W (s x) + b: the bias keeps its value
    head = affine([[4.0, -8.0]], [3.0])
    b.add("head", head, ["pool"])
    assert head.weight.dtype == np.float32 and head.weight.tolist() == [[1.0, -2.0]] and head.bias.tolist() == [3.0]
    assert set(b.scaled) == {"pool"}  # a weight layer's output lacks no factor


def test_flatten_and_sum_pooling_pass_the_factor_on():
    b = _Builder(1e-4)
    b.scaled["pool"] = (0.25, "p")
    flat = nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=-3, end_dim=-1)
    assert b.add("flat", flat, ["pool"]) == ["flat"]
    pool = nir.SumPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0]))
    b.add("again", pool, ["flat"])
    assert b.scaled == {"pool": (0.25, "p"), "flat": (0.25, "p"), "again": (0.25, "p")}


def test_tensors_that_lack_the_same_factor_add_up_into_one_weight_layer():
    b = _Builder(1e-4)
    b.scaled.update(a=(0.25, "p"), b=(0.25, "p"))
    head = affine([[4.0]])
    b.add("head", head, ["a", "b"])
    assert head.weight.tolist() == [[1.0]]  # (s x + s y) W = s (x + y) W: scaled once


def test_a_layer_that_cannot_take_the_factor_is_an_error():
    b = _Builder(1e-4)
    b.scaled["pool"] = (0.25, "features.3")
    with pytest.raises(ExportError) as caught:
        b.add("features.4", lif_node(), ["pool"])
    assert message(caught) == (
        "layer 'features.4' (LIF) follows sum pooling 'features.3', which needs a convolution or linear layer "
        "after it to take its 1/k^2; export with pooling 'avg'"
    )


@pytest.mark.parametrize("other", [None, (1 / 9, "q")])
def test_adding_tensors_that_lack_different_factors_is_an_error(other):
    b = _Builder(1e-4)
    b.add("x", nir.Input(input_type={"input": np.array([1])}), [])
    b.scaled["pool"] = (0.25, "p")
    if other is not None:
        b.scaled["x"] = other
    with pytest.raises(ExportError) as caught:
        b.add("block.sn2", affine([[1.0]]), ["pool", "x"])
    pools = ["p"] if other is None else ["p", "q"]  # either of two poolings may be named
    assert message(caught) in [
        f"layer 'block.sn2' adds the output of sum pooling {pool!r} to another tensor, so the pooling's 1/k^2 cannot "
        "go into one weight layer; export with pooling 'avg'"
        for pool in pools
    ]


# ----------------------------------------------------------------------------------------------------------------
# to_nir and _convert, layer by layer


def test_to_nir_gives_input_output_and_metadata_and_leaves_the_model_as_it_was():
    bn = nn.BatchNorm2d(2)
    model = nn.Sequential(PerStep(nn.Conv2d(1, 2, 3, padding=1)), PerStep(bn), LIF())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with_statistics(bn).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    graph = to_nir(model, [1, 5, 5], dt=1e-3, pooling="avg")
    assert model.training and bn.training  # the export works on a copy in eval mode
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and before.keys() == state.keys()
    assert graph.metadata == {"dt": 1e-3, "pooling": "avg", "source": "tks"}
    assert list(graph.nodes) == ["input", "0", "2", "output"]
    assert graph.nodes["input"].input_type["input"].tolist() == [1, 5, 5]
    assert list(graph.nodes["input"].input_type) == ["input"]
    assert list(graph.nodes["output"].output_type) == ["output"]
    assert graph.nodes["output"].output_type["output"].tolist() == [2, 5, 5]
    assert graph.edges == [("input", "0"), ("0", "2"), ("2", "output")]
    graph.check_types()
    assert to_nir(model, (1, 5, 5)).metadata == {"dt": DEFAULT_DT, "pooling": "sum", "source": "tks"}
    runs_like_the_model(model.eval(), (1, 5, 5))  # the eval statistics, folded into the convolution


def test_an_unknown_pooling_is_an_error():
    with pytest.raises(ExportError) as caught:
        to_nir(nn.Sequential(), (1, 2, 2), pooling="max")
    assert message(caught) == "pooling must be one of avg, sum, got 'max'"


def test_lif_node_is_tks_update_as_nir_equations():
    model = nn.Sequential(nn.Linear(3, 4), LIF(tau=3.0, v_threshold=0.75))
    graph = to_nir(model, (3,), dt=1e-3)
    lif = graph.nodes["1"]
    expected = {"tau": 3e-3, "r": 1.0, "v_leak": 0.0, "v_threshold": 0.75, "v_reset": 0.0}
    for key, value in expected.items():
        array = getattr(lif, key)
        assert array.dtype == np.float32 and array.shape == (4,), key
        np.testing.assert_array_equal(array, np.full(4, value, np.float32), err_msg=key)
    assert graph.nodes["output"].output_type["output"].tolist() == [4]
    conv = to_nir(nn.Sequential(PerStep(nn.Conv2d(1, 2, 1)), LIF()), (1, 3, 3)).nodes["1"]
    assert conv.tau.shape == (2, 3, 3) and float(conv.tau.max()) == float(conv.tau.min()) == np.float32(2e-4)


def test_linear_with_and_without_bias():
    with_bias = nn.Linear(3, 2)
    graph = to_nir(nn.Sequential(with_bias), (3,))
    head = graph.nodes["0"]
    assert torch.equal(torch.as_tensor(head.weight), with_bias.weight.detach())
    assert torch.equal(torch.as_tensor(head.bias), with_bias.bias.detach())
    assert graph.nodes["output"].output_type["output"].tolist() == [2]
    without = nn.Linear(3, 2, bias=False)
    head = to_nir(without, (3,)).nodes["node"]
    assert head.bias.dtype == np.float32 and head.bias.tolist() == [0.0, 0.0]
    runs_like_the_model(nn.Sequential(nn.Linear(3, 5, bias=False), LIF(), nn.Linear(5, 2)), (3,))


def test_convolution_keeps_its_geometry():
    conv = nn.Conv2d(4, 6, 3, stride=(2, 1), padding=2, dilation=2)
    graph = runs_like_the_model(nn.Sequential(PerStep(conv)), (4, 9, 9))
    node = graph.nodes["0"]
    assert tuple(node.stride) == (2, 1) and tuple(node.padding) == (2, 2) and tuple(node.dilation) == (2, 2)
    assert node.groups == 1 and tuple(node.input_shape) == (9, 9)
    assert torch.equal(torch.as_tensor(node.weight), conv.weight.detach())
    assert torch.equal(torch.as_tensor(node.bias), conv.bias.detach())
    assert graph.nodes["output"].output_type["output"].tolist() == [6, 5, 9]
    graph.check_types()


def test_a_grouped_convolution_keeps_its_groups():
    # NIR's type inference reads the input channels off the weight, so a graph cannot hold a grouped convolution;
    # the node itself is still right (run_nir's step computes it)
    grouped = nn.Conv2d(4, 6, 3, groups=2)
    b = _Builder(1e-4)
    keys, shape = _conv(grouped, None, "g", ["input"], (4, 5, 5), b)
    assert keys == ["g"] and shape == (6, 3, 3) and b.edges == [("input", "g")]
    node = b.nodes["g"]
    assert node.groups == 2 and tuple(node.input_shape) == (5, 5)
    x = torch.rand(2, 4, 5, 5)
    torch.testing.assert_close(_step(node, x, "g", {}, 1e-4), grouped(x).detach())


def test_a_convolution_without_bias_gets_a_zero_bias():
    conv = nn.Conv2d(1, 3, 1, bias=False)
    node = to_nir(conv, (1, 2, 2)).nodes["node"]
    assert torch.equal(torch.as_tensor(node.bias), torch.zeros(3))


@pytest.mark.parametrize("layout", ["conv_norm", "one PerStep", "bare"])
def test_batchnorm_after_a_convolution_is_folded_into_it(layout):
    conv, bn = nn.Conv2d(2, 3, 3, padding=1, bias=layout == "bare"), with_statistics(nn.BatchNorm2d(3))
    if layout == "conv_norm":
        block = conv_norm(2, 3, make_norm("bn"))
        block[0][0], block[1][0] = conv, bn
    elif layout == "one PerStep":
        block = PerStep(conv, bn)
    else:
        block = nn.Sequential(conv, bn)
    model = nn.Sequential(block, LIF(), PerStep(nn.Conv2d(3, 2, 1))).eval()
    if layout == "bare":  # a bare Conv2d takes [N, C, H, W]: run one step as a batch
        model = nn.Sequential(nn.Sequential(conv, bn), nn.Conv2d(3, 2, 1)).eval()
        graph = to_nir(model, (2, 4, 4))
        assert list(kinds(graph).values()) == ["Input", "Conv2d", "Conv2d", "Output"]
        x = torch.rand(1, 3, 2, 4, 4)
        with torch.no_grad():
            torch.testing.assert_close(run_nir(graph, x)[0], model(x[0]), rtol=1e-5, atol=1e-5)
        return
    graph = runs_like_the_model(model, (2, 4, 4))
    assert list(kinds(graph).values()) == ["Input", "Conv2d", "LIF", "Conv2d", "Output"]
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    first = [node for node in graph.nodes.values() if isinstance(node, nir.Conv2d)][0]
    torch.testing.assert_close(torch.as_tensor(first.weight), conv.weight.detach() * scale.view(-1, 1, 1, 1))


def test_a_convolution_last_or_before_another_layer_is_not_folded():
    first, last = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1)
    model = nn.Sequential(PerStep(first), LIF(), PerStep(last))
    graph = runs_like_the_model(model, (1, 3, 3))
    assert kinds(graph) == {"input": "Input", "0": "Conv2d", "1": "LIF", "2": "Conv2d", "output": "Output"}
    assert torch.equal(torch.as_tensor(graph.nodes["2"].weight), last.weight.detach())


def test_a_batchnorm_on_its_own_is_a_diagonal_one_by_one_convolution():
    bn = with_statistics(nn.BatchNorm2d(3))
    graph = runs_like_the_model(nn.Sequential(PerStep(bn)), (3, 2, 2))
    node = graph.nodes["0_0"]
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(torch.as_tensor(node.weight), torch.diag(scale).view(3, 3, 1, 1))
    torch.testing.assert_close(torch.as_tensor(node.bias), bn.bias.detach() - bn.running_mean * scale)
    assert tuple(node.stride) == (1, 1) and tuple(node.padding) == (0, 0) and tuple(node.dilation) == (1, 1)
    assert node.groups == 1 and tuple(node.input_shape) == (2, 2)
    assert graph.nodes["output"].output_type["output"].tolist() == [3, 2, 2]
    graph.check_types()
    b = _Builder(1e-4)  # the node as _convert makes it, before NIRGraph's type inference fills in what it lacks
    assert _convert(bn, "bn", ["input"], (3, 2, 2), b) == (["bn"], (3, 2, 2))
    assert tuple(b.nodes["bn"].input_shape) == (2, 2) and b.nodes["bn"].output_type["output"].tolist() == [3, 2, 2]


def test_bn_affine_by_hand():
    bn = nn.BatchNorm2d(2, eps=0.5)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([3.0, -1.0]))
        bn.bias.copy_(torch.tensor([1.0, 2.0]))
        bn.running_mean.copy_(torch.tensor([2.0, -4.0]))
        bn.running_var.copy_(torch.tensor([3.5, 0.5]))
    scale, shift = _bn_affine(bn)
    # scale = w / sqrt(var + eps) = (3 / 2, -1 / 1); shift = b - mean * scale = (1 - 3, 2 - 4)
    assert scale.tolist() == [1.5, -1.0] and shift.tolist() == [-2.0, -2.0]
    assert not scale.requires_grad and not shift.requires_grad


def test_unwrap_and_the_conv_bn_pair():
    conv, bn = nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)
    assert _unwrap(PerStep(conv)) is conv and _unwrap(conv) is conv and _unwrap(None) is None
    two = PerStep(conv, bn)
    assert _unwrap(two) is two
    assert _conv_bn_pair(PerStep(conv), PerStep(bn)) == (conv, bn)
    assert _conv_bn_pair(conv, bn) == (conv, bn)
    assert _conv_bn_pair(conv, LIF()) == (conv, None) and _conv_bn_pair(conv, None) == (conv, None)
    assert _conv_bn_pair(bn, conv) == (None, None) and _conv_bn_pair(two, None) == (None, None)


def test_shape_after_a_layer():
    assert _shape_after(nn.Conv2d(2, 5, 3, stride=2), (2, 9, 7)) == (5, 4, 3)
    assert _shape_after(nn.Flatten(), (2, 3, 4)) == (24,)


# pooling


def test_pool_geometry():
    assert _pool_geometry(nn.AvgPool2d(3), (1, 9, 9), "p") == (3, 3, 0)
    assert _pool_geometry(nn.AvgPool2d(3, stride=2, padding=1), (1, 9, 9), "p") == (3, 2, 1)
    assert _pool_geometry(nn.AvgPool2d((3, 3), (2, 2), (1, 1)), (1, 9, 9), "p") == (3, 2, 1)
    assert _pool_geometry(nn.AvgPool2d(2, padding=0, count_include_pad=False), (1, 4, 4), "p") == (2, 2, 0)
    assert _pool_geometry(nn.AvgPool2d(3, stride=2, ceil_mode=True), (1, 9, 7), "p") == (3, 2, 0)  # no partial
    assert _pool_geometry(nn.AdaptiveAvgPool2d(2), (1, 6, 6), "p") == (3, 3, 0)
    assert _pool_geometry(nn.AdaptiveAvgPool2d((3, 3)), (1, 6, 6), "p") == (2, 2, 0)
    assert _pool_geometry(nn.AdaptiveAvgPool2d((None, 2)), (1, 2, 2), "p") == (1, 1, 0)


@pytest.mark.parametrize(("kernel", "stride", "padding", "size"), [(3, 2, 0, 9), (2, 3, 0, 8), (3, 3, 1, 7)])
def test_ceil_mode_where_it_adds_no_window(kernel, stride, padding, size):
    # the windows fit exactly: (size + 2 padding - kernel) is a multiple of the stride, so ceil_mode changes nothing
    pool = nn.AvgPool2d(kernel, stride=stride, padding=padding, ceil_mode=True)
    assert _pool_geometry(pool, (1, size, size), "p") == (kernel, stride, padding)
    runs_like_the_model(nn.Sequential(PerStep(pool)), (1, size, size), pooling="avg")


@pytest.mark.parametrize(
    ("pool", "shape", "expected"),
    [
        (
            nn.AvgPool2d((2, 1)),
            (1, 4, 4),
            "NIR export takes square pooling; this layer's (kernel, stride, padding) are [(2, 1), (2, 1), (0, 0)]",
        ),
        (
            nn.AvgPool2d(2, stride=(2, 1)),
            (1, 4, 4),
            "NIR export takes square pooling; this layer's (kernel, stride, padding) are [(2, 2), (2, 1), (0, 0)]",
        ),
        (
            nn.AvgPool2d(3, stride=1, padding=(1, 0)),
            (1, 4, 4),
            "NIR export takes square pooling; this layer's (kernel, stride, padding) are [(3, 3), (1, 1), (1, 0)]",
        ),
        (
            nn.AvgPool2d(3, padding=1, count_include_pad=False),
            (1, 6, 6),
            "NIR's pooling counts the zero padding; this layer leaves it out",
        ),
        (
            nn.AvgPool2d(2, divisor_override=1),
            (1, 4, 4),
            "NIR's pooling divides by the window's size; this layer divides by 1",
        ),
        (
            nn.AvgPool2d(3, stride=2, ceil_mode=True),
            (1, 9, 8),
            "ceil_mode adds a partial window at this input size; NIR has none",
        ),
        (
            nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
            (1, 8, 9),
            "ceil_mode adds a partial window at this input size; NIR has none",
        ),
        (
            nn.AdaptiveAvgPool2d(2),
            (1, 6, 4),
            "adaptive pooling of 6x4 to 2 is not a fixed average pooling; export at an input size it divides",
        ),
        (
            nn.AdaptiveAvgPool2d(4),
            (1, 6, 6),
            "adaptive pooling of 6x6 to 4 is not a fixed average pooling; export at an input size it divides",
        ),
        (
            nn.AdaptiveAvgPool2d((2, 3)),
            (1, 6, 6),
            "adaptive pooling of 6x6 to (2, 3) is not a fixed average pooling; export at an input size it divides",
        ),
        (
            nn.AdaptiveAvgPool2d((None, 3)),
            (1, 6, 6),
            "adaptive pooling of 6x6 to (None, 3) is not a fixed average pooling; export at an input size it divides",
        ),
    ],
)
def test_pooling_nir_cannot_express_is_an_error(pool, shape, expected):
    with pytest.raises(ExportError) as caught:
        _pool_geometry(pool, shape, "features.2")
    assert message(caught) == f"layer 'features.2': {expected}"
    with pytest.raises(ExportError) as caught:
        to_nir(nn.Sequential(nn.Identity(), PerStep(pool)), shape)
    assert message(caught) == f"layer '1.0': {expected}"


@pytest.mark.parametrize("pooling", ["sum", "avg"])
def test_pooling_runs_like_the_model(pooling):
    model = nn.Sequential(PerStep(nn.AvgPool2d(3, stride=2, padding=1)), PerStep(nn.Conv2d(2, 3, 2)))
    graph = runs_like_the_model(model, (2, 7, 7), pooling=pooling)
    pool = graph.nodes["0_0"]
    assert type(pool).__name__ == {"sum": "SumPool2d", "avg": "AvgPool2d"}[pooling]
    assert pool.kernel_size.tolist() == [3, 3] and pool.stride.tolist() == [2, 2] and pool.padding.tolist() == [1, 1]
    assert graph.nodes["output"].output_type["output"].tolist() == [3, 3, 3]
    factor = {"sum": 1 / 9, "avg": 1.0}[pooling]
    torch.testing.assert_close(torch.as_tensor(graph.nodes["1"].weight), model[1][0].weight.detach() * factor)
    graph.check_types()


def test_sum_poolings_in_a_row_leave_the_product_of_their_factors():
    model = nn.Sequential(PerStep(nn.AvgPool2d(2)), PerStep(nn.AvgPool2d(3)), PerStep(nn.Flatten()), nn.Linear(2, 1))
    graph = runs_like_the_model(model, (2, 6, 6))
    assert kinds(graph) == {
        "input": "Input",
        "0_0": "SumPool2d",
        "1_0": "SumPool2d",
        "2_0": "Flatten",
        "3": "Affine",
        "output": "Output",
    }
    torch.testing.assert_close(torch.as_tensor(graph.nodes["3"].weight), model[3].weight.detach() / 36)


def test_adaptive_pooling_to_the_size_it_has_is_left_out():
    model = nn.Sequential(PerStep(nn.AdaptiveAvgPool2d(3)), PerStep(nn.AvgPool2d(1, stride=1)), PerStep(nn.Flatten()))
    graph = runs_like_the_model(model, (1, 3, 3))
    assert kinds(graph) == {"input": "Input", "2_0": "Flatten", "output": "Output"}


@pytest.mark.parametrize("kernel_stride", [(1, 2), (2, 1)])
def test_a_pooling_that_moves_or_sums_is_kept(kernel_stride):
    kernel, stride = kernel_stride
    model = nn.Sequential(PerStep(nn.AvgPool2d(kernel, stride=stride)), PerStep(nn.Flatten()))
    graph = runs_like_the_model(model, (1, 4, 4), pooling="avg")
    assert kinds(graph)["0_0"] == "AvgPool2d"


def test_an_adaptive_pooling_names_its_layer_in_the_sum_error():
    model = nn.Sequential(PerStep(nn.AdaptiveAvgPool2d(2)), LIF())
    with pytest.raises(ExportError) as caught:
        to_nir(model, (1, 4, 4))
    assert message(caught).startswith("layer '1' (LIF) follows sum pooling '0.0', which needs")


# flatten


@pytest.mark.parametrize("dims", [(1, -1), (2, -1), (1, 2), (-3, -2), (2, 3), (-1, -1), (3, 3), (1, 1)])
def test_flatten_names_dimensions_from_the_end_and_gives_torch_s_shape(dims):
    start, end = dims
    b = _Builder(1e-4)
    keys, out = _flatten(nn.Flatten(start, end), "f", ["x"], (4, 3, 5), b)
    assert keys == ["f"] and b.edges == [("x", "f")]
    assert out == tuple(nn.Flatten(start, end)(torch.zeros(2, 4, 3, 5)).shape[1:])
    node = b.nodes["f"]
    assert node.input_type["input"].tolist() == [4, 3, 5] and list(node.input_type) == ["input"]
    assert node.start_dim < 0 and node.end_dim < 0
    sample = torch.zeros(4, 3, 5)
    assert sample.flatten(node.start_dim, node.end_dim).shape == out  # the same dimensions without a batch
    assert node.output_type["output"].tolist() == list(out)


def test_flattening_the_batch_is_an_error():
    with pytest.raises(ExportError) as caught:
        to_nir(nn.Sequential(nn.Identity(), nn.Flatten(0)), (2, 3))
    assert message(caught) == "layer '1' flattens the batch dimension into the features; NIR has no batch"


# blocks, classifiers, errors


def tiny_basic_block(shortcut: nn.Module) -> BasicBlock:
    """ResNet-19's basic block on 3 channels, with BatchNorm statistics of its own."""
    block = BasicBlock(3, 3, 1, shortcut, make_neuron(v_threshold=0.3), make_norm("bn"))
    return statistics_everywhere(block)


@pytest.mark.parametrize("shortcut", ["bn", "identity"])
def test_a_basic_block_sums_body_and_shortcut_into_its_last_neuron(shortcut):
    short = PerStep(nn.BatchNorm2d(3)) if shortcut == "bn" else nn.Identity()
    model = nn.Sequential(tiny_basic_block(short), PerStep(nn.Conv2d(3, 2, 1))).eval()
    graph = runs_like_the_model(model, (3, 4, 4), steps=4)
    into = sorted(s for s, t in graph.edges if t == "0_sn2")
    assert into == (["0_2_0", "0_shortcut_0"] if shortcut == "bn" else ["0_2_0", "input"])
    assert kinds(graph)["0_sn2"] == "LIF" and kinds(graph)["0_1"] == "LIF"
    spikes = run_nir(graph, torch.rand(2, 2, 3, 4, 4) * 2)
    assert spikes.abs().sum() > 0


def test_a_spiking_classifier_names_features_and_classifier():
    class Tiny(SpikingClassifier):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(PerStep(nn.Conv2d(1, 2, 3)), LIF())
            self.classifier = nn.Sequential(PerStep(nn.Flatten()), nn.Linear(2, 3))  # from the features' shape

    model = Tiny().eval()
    graph = runs_like_the_model(model, (1, 3, 3))
    assert list(graph.nodes) == ["input", "features_0", "features_1", "classifier_0_0", "classifier_1", "output"]


def test_identity_passes_its_input_through():
    graph = runs_like_the_model(nn.Sequential(nn.Identity(), nn.Linear(2, 2), nn.Identity()), (2,))
    assert list(graph.nodes) == ["input", "1", "output"] and graph.edges == [("input", "1"), ("1", "output")]
    assert graph.nodes["output"].output_type["output"].tolist() == [2]


def test_nested_names_are_joined_with_dots():
    model = nn.Sequential(nn.Sequential(nn.Identity(), nn.Sequential(nn.Linear(2, 2))), nn.ReLU())
    with pytest.raises(ExportError) as caught:
        to_nir(model, (2,))
    assert message(caught) == "layer '1' (ReLU) has no NIR equivalent"
    graph = to_nir(model[0], (2,))
    assert list(graph.nodes) == ["input", "1_0", "output"]


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_a_sew_block_is_an_error_naming_it(block):
    cls = SEWBasicBlock if block == "basic" else SEWBottleneck
    model = nn.Sequential(nn.Identity(), cls(4, 4 if block == "basic" else 1, 1, "ADD", make_neuron(), make_norm("bn")))
    with pytest.raises(ExportError) as caught:
        to_nir(model, (4, 4, 4))
    assert message(caught) == (
        "layer '1' is a SEW block: its connect function joins spike trains into integer sums or logic gates, which "
        "NIR cannot express"
    )


def test_tebn_is_an_error_naming_it():
    with pytest.raises(ExportError) as caught:
        to_nir(nn.Sequential(PerStep(nn.Conv2d(1, 2, 1)), TEBN(2, 4)), (1, 2, 2))
    assert message(caught) == "layer '1' is TEBN: its learned per-step scale has no NIR equivalent"


def test_a_layer_without_nir_equivalent_is_an_error_naming_it():
    with pytest.raises(ExportError) as caught:
        to_nir(nn.Sequential(PerStep(nn.MaxPool2d(2))), (1, 4, 4))
    assert message(caught) == "layer '0.0' (MaxPool2d) has no NIR equivalent"


# ----------------------------------------------------------------------------------------------------------------
# run_nir and its steps


def lif_graph(**metadata) -> nir.NIRGraph:
    """Input [1] -> LIF (tau 2e-3 s, threshold 0.4) -> Output."""
    n = np.ones(1, np.float32)
    lif = nir.LIF(tau=n * 2e-3, r=n, v_leak=n * 0, v_threshold=n * 0.4, v_reset=n * 0)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1])}),
        "lif": lif,
        "output": nir.Output(output_type={"output": np.array([1])}),
    }
    return nir.NIRGraph(nodes=nodes, edges=[("input", "lif"), ("lif", "output")], metadata=metadata)


def test_run_nir_takes_dt_from_the_call_or_the_graph_or_the_default():
    x = torch.ones(2, 1, 1)
    # dt / tau: 0.5 charges the membrane to 0.5 > 0.4 at once; 0.05 (the default dt) to 0.05, then 0.0975
    assert run_nir(lif_graph(dt=1e-3), x).flatten().tolist() == [1.0, 1.0]
    assert run_nir(lif_graph(), x).flatten().tolist() == [0.0, 0.0]
    assert run_nir(lif_graph(dt=1e-4), x, dt=1e-3).flatten().tolist() == [1.0, 1.0]
    assert run_nir(lif_graph(dt=1e-3), x, dt=1e-4).flatten().tolist() == [0.0, 0.0]
    assert run_nir(lif_graph(dt=np.float64(1e-3)), x[:1]).dtype == torch.float32


def test_run_nir_sums_the_inputs_of_a_node_and_returns_the_output_at_every_step():
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2])}),
        "a": affine([[1.0, 2.0]], [0.5]),
        "b": affine([[-1.0, 4.0]]),
        "output": nir.Output(output_type={"output": np.array([1])}),
    }
    edges = [("input", "a"), ("input", "b"), ("a", "output"), ("b", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={})
    x = torch.tensor([[[1.0, 1.0]], [[2.0, -1.0]], [[0.0, 0.5]]])
    # (x0 + 2 x1 + 0.5) + (-x0 + 4 x1) = 6 x1 + 0.5
    assert run_nir(graph, x).tolist() == [[[6.5]], [[-5.5]], [[3.5]]]


def test_lif_step_by_hand():
    tensor = lambda *v: np.array(v, np.float32)  # noqa: E731
    # dt / tau = 0.25, r = 2, v_leak = 0.5, threshold 1, reset to -0.5
    lif = nir.LIF(
        tau=tensor(4e-3, 4e-3),
        r=tensor(2, 2),
        v_leak=tensor(0.5, 0.5),
        v_threshold=tensor(1, 1),
        v_reset=tensor(-0.5, -0.5),
    )
    state, x = {}, torch.tensor([[1.0, 1.75]])
    spikes, membranes = [], []
    for _ in range(3):
        spikes.append(_step(lif, x, "n", state, 1e-3).tolist())
        membranes.append(state["n"].tolist())
    # h = v + (r x - v + v_leak) dt / tau; a spike where h > 1 (not at 1) resets to -0.5
    # neuron 0: 0.625; 0.625 + 1.875 / 4 = 1.09375 -> spike; -0.5 + 3 / 4 = 0.25
    # neuron 1: (3.5 + 0.5) / 4 = 1.0 exactly -> no spike; 1 + 3 / 4 = 1.75 -> spike; -0.5 + 4.5 / 4 = 0.625
    assert spikes == [[[0.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]]
    assert membranes == [[[0.625, 1.0]], [[-0.5, -0.5]], [[0.25, 0.625]]]
    assert set(state) == {"n"}


def test_steps_of_the_other_nodes_against_torch():
    torch.manual_seed(0)
    x = torch.rand(2, 4, 6, 6, dtype=torch.float64)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2).double()
    node = nir.Conv2d((6, 6), conv.weight.detach().numpy(), 2, 1, 2, 2, conv.bias.detach().numpy())
    torch.testing.assert_close(_step(node, x, "c", {}, 1e-4), conv(x).detach())
    ones = torch.ones(4, 1, 3, 3, dtype=torch.float64)
    summed = torch.nn.functional.conv2d(x, ones, stride=2, padding=1, groups=4)  # sums of 3x3 windows
    geometry = np.array([3, 3]), np.array([2, 2]), np.array([1, 1])
    torch.testing.assert_close(_step(nir.SumPool2d(*geometry), x, "s", {}, 1e-4), summed)
    torch.testing.assert_close(_step(nir.AvgPool2d(*geometry), x, "a", {}, 1e-4), summed / 9)
    weight, bias = np.random.default_rng(0).normal(size=(3, 6)), np.arange(3.0)
    y = torch.rand(5, 6, dtype=torch.float64)
    torch.testing.assert_close(
        _step(affine(weight, bias), y, "f", {}, 1e-4), y @ torch.tensor(weight).T.float().double() + torch.tensor(bias)
    )
    for node in (nir.Input(input_type={"input": np.array([6])}), nir.Output(output_type={"output": np.array([6])})):
        assert _step(node, y, "io", {}, 1e-4) is y


@pytest.mark.parametrize(
    ("dims", "shape"), [((0, -1), (2, 60)), ((1, 2), (2, 4, 15)), ((-2, -1), (2, 4, 15)), ((0, 1), (2, 12, 5))]
)
def test_flatten_step_reads_dimensions_counted_from_either_end(dims, shape):
    node = nir.Flatten(input_type={"input": np.array([4, 3, 5])}, start_dim=dims[0], end_dim=dims[1])
    assert tuple(_step(node, torch.zeros(2, 4, 3, 5), "f", {}, 1e-4).shape) == shape


def test_run_nir_refuses_a_node_it_does_not_simulate():
    with pytest.raises(ExportError) as caught:
        _step(nir.Threshold(np.ones(2)), torch.zeros(1, 2), "t", {}, 1e-4)
    assert message(caught) == "run_nir does not simulate Threshold nodes"


def test_topological_order_and_cycles():
    edges = [("in", "b"), ("in", "a"), ("a", "c"), ("b", "c"), ("c", "out"), ("a", "out")]
    graph = nir.NIRGraph(
        nodes={k: nir.Scale(np.ones(1)) for k in ["out", "c", "b", "a", "in"]},
        edges=edges,
        type_check=False,
    )
    assert _topological_order(graph) == ["in", "a", "b", "c", "out"]
    graph.edges.append(("c", "b"))
    with pytest.raises(ExportError) as caught:
        _topological_order(graph)
    assert message(caught) == "the NIR graph has a cycle; run_nir simulates feed-forward graphs only"


# ----------------------------------------------------------------------------------------------------------------
# models of other frameworks


def sj_cnn(num_classes: int, in_channels: int) -> nn.Module:
    """A multi-step SpikingJelly CNN for 8x8 inputs (no BatchNorm: SpikingJelly's NIR exporter takes none)."""
    from spikingjelly.activation_based import layer, neuron

    return nn.Sequential(
        layer.Conv2d(in_channels, 2, 3, padding=1, step_mode="m"),
        neuron.LIFNode(tau=2.0, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(2 * 64, num_classes, step_mode="m"),
    )


def snntorch_mlp(num_classes: int, in_channels: int) -> nn.Module:
    """An snnTorch MLP for 8x8 inputs as snnTorch's NIR exporter takes it (tensor beta and threshold, zero reset)."""
    import snntorch as snn

    neuron = snn.Leaky(beta=torch.full((4,), 0.5), threshold=torch.ones(4), reset_mechanism="zero", init_hidden=True)
    return Stepwise(nn.Sequential(nn.Linear(in_channels * 64, 4), neuron, nn.Linear(4, num_classes)), flatten=True)


def snntorch_scalar() -> Stepwise:
    """snnTorch's default neurons (scalar beta, reset by subtraction), which its exporter refuses."""
    import snntorch as snn

    net = nn.Sequential(nn.Linear(64, 4), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(4, 3))
    return Stepwise(net, flatten=True)


def test_model_framework_by_the_package_of_its_neurons():
    sj = pytest.importorskip("spikingjelly.activation_based.neuron", reason="SpikingJelly is not installed")
    snn = pytest.importorskip("snntorch", reason="snnTorch is not installed")
    assert model_framework(nn.Sequential(nn.Linear(2, 2), LIF())) == "tks"
    assert model_framework(nn.Sequential(nn.Linear(2, 2), sj.LIFNode())) == "spikingjelly"
    assert model_framework(nn.Sequential(nn.Linear(2, 2), snn.Leaky(beta=0.5))) == "snntorch"
    own = make_neuron("spikingjelly")()  # a tks LIF that runs SpikingJelly's node: tks's
    assert model_framework(nn.Sequential(nn.Linear(2, 2), own)) == "tks"
    layers = [nn.Identity() for _ in range(11)]
    layers[1], layers[10] = make_neuron("spikingjelly")(), sj.LIFNode()  # '10.' is not inside '1.'
    assert model_framework(nn.Sequential(*layers)) == "spikingjelly"


def test_a_spikingjelly_model_goes_through_its_own_exporter():
    pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed (the spikingjelly extra)")
    model = sj_cnn(3, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = _foreign_nir("spikingjelly", model, (2, 1, 1, 8, 8), 1e-3)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert graph.metadata == {"source": "spikingjelly"}
    (lif,) = [node for node in graph.nodes.values() if isinstance(node, nir.LIF)]
    np.testing.assert_allclose(lif.tau, 2.0 * 1e-3)  # SpikingJelly's tau (steps) times dt
    (start,) = [node for node in graph.nodes.values() if isinstance(node, nir.Input)]
    assert start.input_type["input"].tolist() == [1, 8, 8]


def test_a_spikingjelly_exporter_failure_is_one_line_with_a_hint():
    pytest.importorskip("spikingjelly", reason="SpikingJelly is not installed (the spikingjelly extra)")
    from spikingjelly.activation_based import layer
    from spikingjelly.activation_based.nir_exchange.to_nir import export_to_nir

    model = sj_cnn(3, 1)
    model.insert(1, layer.BatchNorm2d(2, step_mode="m"))
    with pytest.raises(Exception) as direct:  # what the exporter itself raises
        export_to_nir(model, torch.zeros(2, 1, 1, 8, 8), dt=1e-3)
    gist = " ".join([line.strip() for line in str(direct.value).splitlines() if line.strip()][:2])[:300]
    with pytest.raises(ExportError) as caught:
        _foreign_nir("spikingjelly", model, (2, 1, 1, 8, 8), 1e-3)
    assert message(caught) == (
        f"NIR export of a SpikingJelly model: its exporter failed ({type(direct.value).__name__}: {gist}); "
        "its exporter takes no BatchNorm"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_an_snntorch_model_goes_through_its_own_exporter_and_is_reset_after():
    pytest.importorskip("snntorch", reason="snnTorch is not installed (the interop extra)")
    model = snntorch_mlp(3, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = _foreign_nir("snntorch", model, (5, 1, 2, 8, 8), 1e-3)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning | TKSWarning)]
    assert graph.metadata == {"input_flattened": True, "source": "snntorch"}
    assert graph.nodes["input"].input_type["input"].tolist() == [128]
    neuron = model.net[1]
    assert neuron.mem.shape == (4,) and not neuron.mem.any()  # the exporter's example step left no state


def test_snntorch_is_given_one_sample_flattened_or_not(monkeypatch):
    export_nir = pytest.importorskip("snntorch.export_nir", reason="snnTorch is not installed (the interop extra)")
    given = []

    def exporter(net, sample):
        given.append(sample)
        return lif_graph()

    monkeypatch.setattr(export_nir, "export_to_nir", exporter)
    model = snntorch_mlp(3, 2)
    assert _snntorch_nir(model, (2, 3, 5), "f").metadata["input_flattened"] is True
    model.flatten = False
    assert _snntorch_nir(model, (2, 3, 5), "f").metadata["input_flattened"] is False
    assert [tuple(sample.shape) for sample in given] == [(30,), (2, 3, 5)]
    assert not any(sample.any() for sample in given)


def test_a_missing_framework_names_the_export_that_needs_it(without):
    model = Stepwise(nn.Sequential(nn.Linear(2, 2)))
    without("spikingjelly", "snntorch")
    for framework, name in (("spikingjelly", "SpikingJelly"), ("snntorch", "snnTorch")):
        with pytest.raises(MissingExtraError) as caught:
            _foreign_nir(framework, model, (2, 1, 2), 1e-4)
        assert message(caught).startswith(f"NIR export of a {name} model: {framework}")


def test_snntorch_needs_a_stepwise_model():
    pytest.importorskip("snntorch", reason="snnTorch is not installed (the interop extra)")
    with pytest.raises(ExportError) as caught:
        _foreign_nir("snntorch", snntorch_mlp(3, 1).net, (2, 1, 1, 8, 8), 1e-4)
    assert message(caught) == f"NIR export of a snnTorch model: {SNNTORCH_NEEDS}"
    assert SNNTORCH_NEEDS == (
        "snnTorch's exporter needs the network inside tks.snn.Stepwise(net, flatten=True), without a Flatten of its "
        "own, and each neuron's beta and threshold as tensors of its layer's size (docs/own-data.md)"
    )


def test_an_snntorch_reset_nir_has_not_is_a_warning_and_a_failure_a_line():
    pytest.importorskip("snntorch", reason="snnTorch is not installed (the interop extra)")
    from snntorch.export_nir import export_to_nir

    model = snntorch_scalar()
    with pytest.raises(Exception) as direct, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # nirtorch's, about its own API
        export_to_nir(model.net, torch.zeros(64))
    gist = " ".join([line.strip() for line in str(direct.value).splitlines() if line.strip()][:2])[:300]
    with pytest.warns(TKSWarning) as warned, pytest.raises(ExportError) as caught:
        _foreign_nir("snntorch", snntorch_scalar(), (2, 1, 1, 8, 8), 1e-4)
    assert [str(w.message) for w in warned] == [
        "layer 'net.1' resets by 'subtract'; NIR's LIF resets to zero, so an importer will not reproduce the model "
        "(reset_mechanism='zero' exports exactly)"
    ]
    assert message(caught) == (
        f"NIR export of a snnTorch model: its exporter failed ({type(direct.value).__name__}: {gist}); {SNNTORCH_NEEDS}"
    )


# ----------------------------------------------------------------------------------------------------------------
# input_metadata, _write_atomically, export_checkpoint


@pytest.fixture
def registries(monkeypatch):
    """Models and datasets registered in a test are forgotten after it."""
    for registry in (MODELS, DATASETS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))


def test_metadata_of_a_static_dataset():
    cfg = Config(data=DataConfig(name="digits", num_steps=3), model=ModelConfig(name="spiking_cnn"))
    info = DATASETS["digits"].info
    mean, std = normalization_of("digits", data_options(cfg.data))
    assert input_metadata(cfg, info, 1e-3) == {
        "dt": 1e-3,
        "num_steps": 3,
        "input_shape": [1, 8, 8],
        "input_kind": "static",
        "encoding": "direct: the image, scaled to [0, 1] and normalised as (x - mean) / std per channel, is the "
        "input of every one of the T steps",
        "model": "spiking_cnn",
        "dataset": "digits",
        "tks_version": __version__,
        "normalization_mean": list(mean),
        "normalization_std": list(std),
        "class_names": [str(d) for d in range(10)],
    }
    assert mean != std


def test_metadata_follows_the_normalization_setting():
    data = DataConfig(name="cifar10", num_steps=2, normalization="imagenet")
    metadata = input_metadata(Config(data=data, model=ModelConfig(name="m")), DATASETS["cifar10"].info, 1e-4)
    assert metadata["normalization_mean"] == [0.485, 0.456, 0.406]  # ImageNet's, not CIFAR-10's own
    assert metadata["normalization_std"] == [0.229, 0.224, 0.225]


def test_metadata_of_an_event_dataset_and_of_one_without_normalization_or_classes(registries):
    cfg = Config(data=DataConfig(name="digits-dvs", num_steps=5, frame_size=16), model=ModelConfig(name="m"))
    info = DatasetInfo("digits-dvs", 10, 2, (16, 12), "events", False)
    metadata = input_metadata(cfg, info, 1e-4)
    assert metadata["encoding"] == (
        "event frames, one per step: the events of a recording counted per pixel and polarity (channel 0 OFF, 1 ON) "
        "in T equal time bins of its span, (t_last - t_first) // T microseconds each, as floats, resized to 16x12 "
        "(bilinear, align_corners)"
    )
    assert metadata["input_shape"] == [2, 16, 12] and metadata["input_kind"] == "events"
    assert metadata["normalization_mean"] == [0.0, 0.0] and metadata["normalization_std"] == [1.0, 1.0]
    assert "class_names" not in metadata and "normalization" not in metadata  # info gave no classes
    register_dataset("plain", num_classes=2, in_channels=1, input_size=(4, 4))(lambda *args, **kwargs: None)
    cfg = Config(data=DataConfig(name="plain", num_steps=2), model=ModelConfig(name="m"))
    metadata = input_metadata(cfg, DATASETS["plain"].info, 1e-4)
    assert metadata["normalization"] == "unknown" and "normalization_mean" not in metadata
    assert "class_names" not in metadata and metadata["dataset"] == "plain"


def test_write_atomically_makes_the_folder_and_leaves_only_the_file(tmp_path):
    graph = lif_graph(dt=1e-3)
    target = tmp_path / "a" / "b" / "model.nir"
    _write_atomically(graph, target)
    _write_atomically(graph, target)  # again, into the folder that now exists, over the file
    assert list(tmp_path.rglob("*")) == [tmp_path / "a", tmp_path / "a" / "b", target]
    assert float(nir.read(str(target)).metadata["dt"]) == 1e-3


@pytest.mark.parametrize(
    ("error", "reason"),
    [(OSError(28, "No space left on device"), "No space left on device"), (OSError("gone"), "gone")],
)
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path, monkeypatch, error, reason):
    target = tmp_path / "model.nir"
    target.write_bytes(b"old")

    real_write_bytes = Path.write_bytes

    def write_bytes(self, data):  # the file write after the graph was built in memory: half of it, then the error
        real_write_bytes(self, data[: len(data) // 2])
        raise error

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(ExportError) as caught:
        _write_atomically(lif_graph(), target)
    assert message(caught) == f"cannot write {target}: {reason}"
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"old"


def test_a_target_that_cannot_be_replaced_is_an_error(tmp_path):
    target = tmp_path / "model.nir"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(ExportError) as caught:
        _write_atomically(lif_graph(), target)
    assert message(caught) == f"cannot write {target}: Is a directory"
    assert [p.name for p in tmp_path.iterdir()] == ["model.nir"]


def tiny_tks(num_classes: int, in_channels: int, neuron, norm) -> nn.Module:
    """A small tks network for 8x8 inputs: conv-BN-LIF, 2x2 average pooling, a linear head."""
    return nn.Sequential(
        conv_norm(in_channels, 2, norm),
        neuron(),
        PerStep(nn.AvgPool2d(2), nn.Flatten()),
        nn.Linear(32, num_classes),
    )


def checkpoint(tmp_path, factory):
    """Register ``factory`` and save a checkpoint of its model for digits (T=2) with random BN statistics.

    Args:
        tmp_path: the test's folder; the checkpoint goes to ``run/checkpoint.pt`` in it.
        factory: a model factory; its name is the registered model's.

    Returns:
        The checkpoint's path and the model saved in it.
    """
    register_model(factory.__name__)(factory)
    cfg = Config(data=DataConfig(name="digits", num_steps=2), model=ModelConfig(name=factory.__name__))
    torch.manual_seed(0)
    model = factory(10, 1, make_neuron(), make_norm("bn")) if factory is tiny_tks else factory(10, 1)
    statistics_everywhere(model)
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    save_checkpoint(path, CheckpointRecord(model.state_dict(), to_dict(cfg)))
    return path, model


def test_export_checkpoint_writes_the_model_beside_it_with_its_input(tmp_path, registries):
    path, model = checkpoint(tmp_path, tiny_tks)
    written = export_checkpoint(path)
    assert written == path.with_name("model.nir")
    graph = nir.read(str(written))
    assert set(kinds(graph).values()) == {"Input", "Conv2d", "LIF", "SumPool2d", "Flatten", "Affine", "Output"}
    assert graph.metadata["source"] == "tks" and graph.metadata["pooling"] == "sum"
    assert float(graph.metadata["dt"]) == DEFAULT_DT and int(graph.metadata["num_steps"]) == 2
    assert list(graph.metadata["input_shape"]) == [1, 8, 8] and graph.metadata["model"] == "tiny_tks"
    lif = next(node for node in graph.nodes.values() if isinstance(node, nir.LIF))
    np.testing.assert_allclose(lif.tau, 2.0 * DEFAULT_DT)
    x = torch.rand(2, 3, 1, 8, 8) * 2
    with torch.no_grad():
        torch.testing.assert_close(run_nir(graph, x), model.eval()(x), rtol=1e-5, atol=1e-5)


def test_export_checkpoint_takes_dt_pooling_and_out(tmp_path, registries):
    path, _ = checkpoint(tmp_path, tiny_tks)
    out = tmp_path / "elsewhere" / "exported.nir"
    assert export_checkpoint(path, str(out), dt=1e-3, pooling="avg") == out
    graph = nir.read(str(out))
    assert "AvgPool2d" in kinds(graph).values() and graph.metadata["pooling"] == "avg"
    assert float(graph.metadata["dt"]) == 1e-3
    lif = next(node for node in graph.nodes.values() if isinstance(node, nir.LIF))
    np.testing.assert_allclose(lif.tau, 2.0 * 1e-3)
    with pytest.raises(ConfigError) as caught:
        export_checkpoint(path, tmp_path)
    assert message(caught) == f"out {tmp_path} is a folder; give a file name"


@pytest.mark.parametrize("dt", [math.nan, math.inf, -math.inf, 0.0, -1e-4])
def test_export_checkpoint_needs_a_finite_positive_dt_before_reading_anything(tmp_path, dt):
    with pytest.raises(ExportError) as caught:
        export_checkpoint(tmp_path / "missing.pt", dt=dt)
    assert message(caught) == f"dt must be a finite number of seconds > 0, got {dt}"


@pytest.mark.parametrize("framework", ["spikingjelly", "snntorch"])
def test_export_checkpoint_of_another_framework_s_model(framework, tmp_path, registries):
    pytest.importorskip(framework, reason=f"{framework} is not installed")
    path, model = checkpoint(tmp_path, sj_cnn if framework == "spikingjelly" else snntorch_mlp)
    graph = nir.read(str(export_checkpoint(path, dt=1e-3)))
    assert graph.metadata["source"] == framework and int(graph.metadata["num_steps"]) == 2
    assert float(graph.metadata["dt"]) == 1e-3 and list(graph.metadata["input_shape"]) == [1, 8, 8]
    (start,) = [node for node in graph.nodes.values() if isinstance(node, nir.Input)]
    assert start.input_type["input"].tolist() == ([1, 8, 8] if framework == "spikingjelly" else [64])
    (lif,) = [node for node in graph.nodes.values() if isinstance(node, nir.LIF)]
    if framework == "spikingjelly":
        np.testing.assert_allclose(lif.tau, 2.0 * 1e-3)


def test_a_graph_with_a_non_finite_parameter_is_refused_naming_it():
    graph = nir.NIRGraph.from_list(nir.Affine(np.ones((2, 3), dtype=np.float32), np.zeros(2, dtype=np.float32)))
    check_finite_parameters(graph, 1e-4)  # finite: nothing to say
    for bad in (np.inf, -np.inf, np.nan):
        node = nir.LIF(
            tau=np.array([1.0, bad], dtype=np.float32), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2)
        )
        graph = nir.NIRGraph.from_list(node)
        name = next(n for n, v in graph.nodes.items() if isinstance(v, nir.LIF))
        with pytest.raises(ExportError) as caught:
            check_finite_parameters(graph, 1e300)
        assert str(caught.value) == (
            f"dt=1e+300 makes tau of node {name!r} non-finite (tau x dt overflows); give a dt of seconds "
            f"(default {DEFAULT_DT})"
        )
    scalar = nir.NIRGraph.from_list(nir.Threshold(np.array([1.0])))
    scalar.nodes[next(iter(scalar.nodes))].threshold = float("nan")  # a plain float parameter is checked too
    with pytest.raises(ExportError, match="makes threshold of node"):
        check_finite_parameters(scalar, 1.0)
