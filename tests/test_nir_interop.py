"""An exported NIR graph, run by other frameworks' NIR importers, gives our model's spikes and logits at every step.

The frameworks come with the ``interop`` extra (part of ``dev``); each test is skipped, saying so, where one is missing.
docs/nir.md explains the choices these tests pin: Flatten dimensions counted from the end (both importers give
NIR's batch-free ``start_dim`` to ``torch.nn.Flatten`` on batched tensors), pooling as ``SumPool2d`` with its 1/k^2
folded into the next weights (both read it; Norse reads no ``AvgPool2d``, snnTorch is also run on that), and the
default dt of 1e-4 s, which snnTorch's importer assumes and Norse's is given.
"""

import contextlib
import importlib
import io
import warnings

import nir
import pytest
import torch
from torch import nn

from tks.data import DataOptions, build_dataset, to_time_major
from tks.export import run_nir, to_nir
from tks.models import create_model
from tks.snn import LIF

BATCH = 16


def _missing(*modules):
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return module
    return None


def snntorch_runner(graph):
    """snnTorch 1.0's importer: one call per step; its neurons keep their membrane until reset."""
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # it prints every LIF's parameters when it rescales them
        net = import_from_nir(graph)

    def run(x_seq):
        snntorch.utils.reset(net)
        return torch.stack([net(x)[0] for x in x_seq])

    return net, run


def norse_runner(graph):
    """Norse's importer: one call per step with the state of the step before; it needs the graph's dt."""
    from norse.torch import from_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Norse still calls nirtorch.load
        net = from_nir(graph, dt=float(graph.metadata["dt"]))

    def run(x_seq):
        state, out = None, []
        for x in x_seq:
            y, state = net(x, state)
            out.append(y)
        return torch.stack(out)

    return net, run


FRAMEWORKS = {
    # name: (modules the importer needs, runner)
    "snntorch": (("snntorch", "nirtorch"), snntorch_runner),
    "norse": (("norse", "nirtorch"), norse_runner),
}
IMPORTS = ["snntorch-sum", "snntorch-avg", "norse-sum"]  # framework-pooling


def digits_batch():
    """spiking_cnn on the bundled digits: 16 test images at T=4 (direct encoding), and train images for BN."""
    train, _ = build_dataset("digits", "train")
    test, _ = build_dataset("digits", "test")
    model = create_model("spiking_cnn", num_classes=10, in_channels=1)
    x = to_time_major(test.tensors[0][:BATCH], "static", 4)
    return model, x, to_time_major(train.tensors[0][:256], "static", 4), (1, 8, 8)


def digits_dvs_batch(root):
    """vgg_snn_small on digits-dvs: 16 test samples spread over the classes, 10 event frames of 16x16 (T=10), and
    64 train samples for BN."""
    options = DataOptions(num_steps=10, frame_size=16, frames_cache="off")  # framed on access: few samples are read

    def spread(split, count):  # the split is ordered by class: every n-th sample reaches all of them
        data, _ = build_dataset("digits-dvs", split, str(root), options)
        frames = torch.stack([data[i][0] for i in range(0, len(data), len(data) // count)[:count]])
        return to_time_major(frames, "events", 10)

    x, fit = spread("test", BATCH), spread("train", 64)
    model = create_model("vgg_snn_small", num_classes=10, in_channels=2)
    return model, x, fit, (2, 16, 16)


def with_data_statistics(model, fit):
    """BatchNorm statistics of real inputs (as after training), so folding is exercised and every layer fires."""
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the batches below: the true statistics of these inputs
    model.train()
    with torch.no_grad():
        model(fit)
    return model.eval()


def record_lif_inputs(model):
    """Forward hooks that keep the input current ``[T, B, ...]`` of every LIF of ``model``, by NIR node key."""
    inputs = {}
    for name, module in model.named_modules():
        if isinstance(module, LIF):
            key = name.replace(".", "_")
            module.register_forward_hook(lambda m, args, out, key=key: inputs.__setitem__(key, (m, args[0], out)))
    return inputs


def membrane(lif, current):
    """The charged membrane H_t of every step, by the update of ``tks.snn.neuron.lif_step``."""
    v, out = torch.zeros_like(current[0]), []
    for x in current:
        h = v + (x - v) / lif.tau
        out.append(h)
        v = h * (h <= lif.v_threshold)
    return torch.stack(out)


def record_spikes(net, keys):
    """Forward hooks that collect, per NIR node key, the spikes an imported module gives at each step."""
    spikes = {key: [] for key in keys}
    for key, module in net.named_modules():
        if key in spikes:
            unpack = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731 (Norse: (spikes, state))
            module.register_forward_hook(lambda m, args, out, key=key, unpack=unpack: spikes[key].append(unpack(out)))
    return spikes


@pytest.mark.parametrize("importer", IMPORTS)
@pytest.mark.parametrize("case", ["spiking_cnn-digits", "vgg_snn_small-digits_dvs"])
def test_importer_runs_the_export_like_the_model(importer, case, request, tmp_path):
    framework, pooling = importer.split("-")
    modules, runner = FRAMEWORKS[framework]
    if missing := _missing(*modules):
        pytest.skip(f"{missing} is not installed (the interop extra brings the NIR importers)")
    torch.manual_seed(0)
    if case == "spiking_cnn-digits":
        model, x, fit, shape = digits_batch()
    else:
        model, x, fit, shape = digits_dvs_batch(request.getfixturevalue("digits_dvs_root"))
    with_data_statistics(model, fit)
    path = tmp_path / "model.nir"  # through the file, as a user hands it over
    nir.write(str(path), to_nir(model, shape, pooling=pooling))
    graph = nir.read(str(path))
    lif_keys = [key for key, node in graph.nodes.items() if isinstance(node, nir.LIF)]  # in network order

    ours = record_lif_inputs(model)
    with torch.no_grad():
        expected = model(x)
        reference = run_nir(graph, x)  # what the graph means, by the NIR equations
    net, run = runner(graph)
    theirs = record_spikes(net, lif_keys)
    with torch.no_grad():
        got = run(x)

    assert got.shape == expected.shape == (x.shape[0], BATCH, 10)
    assert sorted(ours) == sorted(lif_keys) and all(len(theirs[key]) == x.shape[0] for key in lif_keys)
    # 1. The importer computes the graph exactly: same Euler step, same operation order where it matters.
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-6)
    # 2. Our model: the same spikes, except where folding BatchNorm into the convolution moved a membrane across
    # the threshold by a rounding error; such a flip then reaches the layers after it.
    first_flip = None
    for key in lif_keys:
        lif, current, mine = ours[key]
        other = torch.stack(theirs[key])
        assert 0.01 < mine.mean() < 0.9, f"{key}: firing rate {mine.mean():.3f} makes a weak test"
        differ = other != mine
        if differ.any() and first_flip is None:
            first_flip = key
            margin = (membrane(lif, current)[differ] - lif.v_threshold).abs().max()
            assert margin < 1e-5, f"{key}: a spike differs {margin:.2e} away from the threshold, no rounding error"
        # one rounding flip spreads through the 3x3 convolutions after it; a wrong parameter changes whole percents
        assert differ.float().mean() < 1e-3, f"{key}: {int(differ.sum())} of {mine.numel()} spikes differ"
    if first_flip is None:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.mean(0).argmax(-1), expected.mean(0).argmax(-1))
