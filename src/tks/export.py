"""Export a trained network to NIR (the Neuromorphic Intermediate Representation) and run NIR graphs back.

``to_nir(model, input_shape)`` turns the network into a ``nir.NIRGraph`` that neuromorphic toolchains read
(``docs/nir.md`` has the full mapping and which importers were checked):

* every shape in the graph is one sample at one step, with no batch or time dimension, as NIR's own type
  inference has it; ``Flatten`` counts its dimensions from the end (``start_dim=-3`` for ``[C, H, W]``), which
  means the same thing whether or not an importer puts a batch dimension in front;
* BatchNorm (eval statistics) is folded into the convolution before it; a BatchNorm on its own (ResNet-19's first
  shortcut) becomes a diagonal 1x1 convolution;
* average pooling is a ``SumPool2d`` whose 1/k^2 is folded into the weights of the convolution or linear layer
  after it (read by snnTorch's and Norse's importers alike; Norse's reads no ``AvgPool2d``), or with
  ``pooling="avg"`` an ``AvgPool2d``;
* the LIF maps to NIR's ``LIF`` (tau dv/dt = v_leak - v + r I, fire above v_threshold, reset to v_reset) with
  tau = tks's tau x dt, r = 1, v_leak = 0, v_reset = 0, so its Euler step of length dt is exactly tks's update;
* the classifier stays a plain ``Affine`` node: its output at each step is that step's logits;
* a residual addition is two edges into one node (NIR sums the inputs of a node).

What NIR cannot express raises ``ExportError`` naming the layer: SEW blocks (their integer ADD and the AND/IAND
gates are not spikes), TEBN's per-step scale, max pooling. ``run_nir`` simulates a graph step by step with these
semantics, so an export can be checked against the model it came from.
"""

from __future__ import annotations

import copy
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tks.errors import TKSError, TKSWarning, short_message
from tks.extras import require
from tks.models.blocks import SpikingClassifier
from tks.models.resnet19 import BasicBlock
from tks.models.sew_resnet import SEWBasicBlock, SEWBottleneck
from tks.paths import atomic_file, check_writable_file
from tks.snn import LIF, PerStep, Stepwise, reset_states
from tks.snn.layers import TEBN

if TYPE_CHECKING:
    from tks.config import Config
    from tks.data import DatasetInfo

nir = require("nir", "NIR export")

DEFAULT_DT = 1e-4
"""Time step of the exported graph in seconds (SpikingJelly's NIR exporter uses the same, and snnTorch's importer
assumes it)."""

Pooling = Literal["avg", "sum"]
POOLINGS: tuple[Pooling, ...] = ("avg", "sum")


class ExportError(TKSError):
    """A layer that NIR cannot represent."""


@dataclass
class _Builder:
    """Collects nodes and edges while walking the network, tracking the shape of the current tensor.

    ``scaled`` maps the key of a node whose output still lacks a factor (a sum pooling's 1/k^2, or a flatten of
    one) to that factor and the pooling layer it comes from; the next weight layer takes it into its weights.
    """

    dt: float
    pooling: Pooling = "sum"
    nodes: dict[str, nir.NIRNode] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    scaled: dict[str, tuple[float, str]] = field(default_factory=dict)

    def add(self, name: str, node: nir.NIRNode, sources: list[str]) -> list[str]:
        key = name.replace(".", "_") or "node"
        while key in self.nodes:
            key += "_"
        self._take_scale(name, key, node, sources)
        self.nodes[key] = node
        self.edges += [(source, key) for source in sources]
        return [key]

    def _take_scale(self, name: str, key: str, node: nir.NIRNode, sources: list[str]) -> None:
        factors = {self.scaled.get(source) for source in sources}
        if factors <= {None}:  # no source, or none that lacks a factor
            return
        if len(factors) > 1:  # a sum of tensors that lack different factors (or none): no one weight takes them
            (_, pool), *_ = factors - {None}
            raise ExportError(
                f"layer {name!r} adds the output of sum pooling {pool!r} to another tensor, so the pooling's "
                "1/k^2 cannot go into one weight layer; export with pooling 'avg'"
            )
        ((scale, pool),) = factors
        if isinstance(node, nir.Conv2d | nir.Affine):  # a linear map: W (s x) = (s W) x, the bias stays
            node.weight = (node.weight * scale).astype(np.float32)
        elif isinstance(node, nir.Flatten | nir.SumPool2d):  # linear too, and no weights: pass the factor on
            self.scaled[key] = (scale, pool)
        else:
            raise ExportError(
                f"layer {name!r} ({type(node).__name__}) follows sum pooling {pool!r}, which needs a convolution "
                "or linear layer after it to take its 1/k^2; export with pooling 'avg'"
            )


def to_nir(
    model: nn.Module, input_shape: tuple[int, ...], *, dt: float = DEFAULT_DT, pooling: Pooling = "sum"
) -> nir.NIRGraph:
    """The network as a NIR graph (see the module docstring for the mapping).

    Args:
        model: a registered tks model (``features`` and ``classifier``) or any stack of the layers it uses.
        input_shape: one sample's input at one step, e.g. ``(2, 48, 48)``.
        dt: the graph's time step in seconds; LIF time constants are tau x dt.
        pooling: average pooling as ``SumPool2d`` with its 1/k^2 folded into the next weight layer (``"sum"``:
            snnTorch and Norse read it) or as NIR's ``AvgPool2d`` (``"avg"``: snnTorch reads it, Norse does not).

    Raises:
        ExportError: for a layer NIR cannot express, naming it, or a sum pooling no weight layer follows.
    """
    if pooling not in POOLINGS:
        raise ExportError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    model = copy.deepcopy(model).eval().cpu()
    builder = _Builder(dt, pooling)
    sources = builder.add("input", nir.Input(input_type={"input": np.array(input_shape)}), [])
    sources, shape = _convert(model, "", sources, tuple(input_shape), builder)
    builder.add("output", nir.Output(output_type={"output": np.array(shape)}), sources)
    metadata = {"dt": dt, "pooling": pooling, "source": "tks"}
    return nir.NIRGraph(nodes=builder.nodes, edges=builder.edges, metadata=metadata)


def _convert(
    module: nn.Module, name: str, sources: list[str], shape: tuple[int, ...], b: _Builder
) -> tuple[list[str], tuple[int, ...]]:
    if isinstance(module, SEWBasicBlock | SEWBottleneck):
        raise ExportError(
            f"layer {name!r} is a SEW block: its connect function joins spike trains into integer "
            "sums or logic gates, which NIR cannot express"
        )
    if isinstance(module, TEBN):
        raise ExportError(f"layer {name!r} is TEBN: its learned per-step scale has no NIR equivalent")
    if isinstance(module, BasicBlock):
        body, body_shape = _convert(nn.Sequential(module.conv1, module.sn1, module.conv2), name, sources, shape, b)
        short, _ = _convert(module.shortcut, f"{name}.shortcut", sources, shape, b)
        return _convert(module.sn2, f"{name}.sn2", body + short, body_shape, b)  # two edges in: their sum
    if isinstance(module, nn.Sequential):  # also PerStep and conv_norm
        children = list(module.named_children())
        i = 0
        while i < len(children):
            child_name, child = children[i]
            full = f"{name}.{child_name}" if name else child_name
            following = children[i + 1][1] if i + 1 < len(children) else None
            conv, bn = _conv_bn_pair(child, following)
            if conv is not None:
                sources, shape = _conv(conv, bn, full, sources, shape, b)
                i += 2 if bn is not None and _unwrap(following) is bn else 1
                continue
            sources, shape = _convert(child, full, sources, shape, b)
            i += 1
        return sources, shape
    if isinstance(module, SpikingClassifier):
        sources, shape = _convert(module.features, "features", sources, shape, b)
        return _convert(module.classifier, "classifier", sources, shape, b)
    if isinstance(module, LIF):
        n = np.ones(shape, dtype=np.float32)
        node = nir.LIF(
            tau=n * module.tau * b.dt, r=n.copy(), v_leak=n * 0.0, v_threshold=n * module.v_threshold, v_reset=n * 0.0
        )
        return b.add(name, node, sources), shape
    if isinstance(module, nn.BatchNorm2d):  # alone: a per-channel affine map
        scale, shift = _bn_affine(module)
        # A diagonal 1x1 convolution: NIR's type inference does not handle grouped (depthwise) convolutions.
        weight = torch.diag(scale).reshape(shape[0], shape[0], 1, 1).numpy()
        conv = nir.Conv2d(
            input_shape=shape[1:], weight=weight, stride=1, padding=0, dilation=1, groups=1, bias=shift.numpy()
        )
        return b.add(name, conv, sources), shape
    if isinstance(module, nn.Conv2d):
        return _conv(module, None, name, sources, shape, b)
    if isinstance(module, nn.AvgPool2d | nn.AdaptiveAvgPool2d):
        kernel, stride, padding = _pool_geometry(module, shape, name)
        if kernel == 1 and stride == 1:
            return sources, shape  # an identity (e.g. adaptive pooling to the size it already has)
        geometry = {"kernel_size": np.array([kernel] * 2), "stride": np.array([stride] * 2)}
        geometry["padding"] = np.array([padding] * 2)
        if b.pooling == "avg":
            return b.add(name, nir.AvgPool2d(**geometry), sources), _shape_after(module, shape)
        keys = b.add(name, nir.SumPool2d(**geometry), sources)
        previous, _ = b.scaled.get(keys[0], (1.0, name))
        b.scaled[keys[0]] = (previous / kernel**2, name)
        return keys, _shape_after(module, shape)
    if isinstance(module, nn.Flatten):
        return _flatten(module, name, sources, shape, b)
    if isinstance(module, nn.Linear):
        weight = module.weight.detach().numpy()
        bias = module.bias.detach().numpy() if module.bias is not None else np.zeros(weight.shape[0], np.float32)
        return b.add(name, nir.Affine(weight=weight, bias=bias), sources), (weight.shape[0],)
    if isinstance(module, nn.Identity):
        return sources, shape
    raise ExportError(f"layer {name!r} ({type(module).__name__}) has no NIR equivalent")


_POOL_KEYS = ("kernel_size", "stride", "padding")


def _flatten(
    module: nn.Flatten, name: str, sources: list[str], shape: tuple[int, ...], b: _Builder
) -> tuple[list[str], tuple[int, ...]]:
    # torch counts the batch dimension, NIR's types do not: name the dimensions from the end, which both agree on
    # (and which an importer that feeds [B, ...] tensors to torch.nn.Flatten reads right as well).
    ndim = len(shape) + 1
    start, end = module.start_dim % ndim, module.end_dim % ndim
    if start == 0:
        raise ExportError(f"layer {name!r} flattens the batch dimension into the features; NIR has no batch")
    node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start - ndim, end_dim=end - ndim)
    out = (*shape[: start - 1], int(np.prod(shape[start - 1 : end])), *shape[end:])
    return b.add(name, node, sources), out


def _unwrap(module: nn.Module | None) -> nn.Module | None:
    """The single layer inside a one-layer PerStep, else the module itself."""
    if isinstance(module, PerStep) and len(module) == 1:
        return module[0]
    return module


def _conv_bn_pair(child: nn.Module, following: nn.Module | None) -> tuple[nn.Conv2d | None, nn.BatchNorm2d | None]:
    conv = _unwrap(child)
    if not isinstance(conv, nn.Conv2d):
        return None, None
    bn = _unwrap(following)
    return conv, bn if isinstance(bn, nn.BatchNorm2d) else None


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """BatchNorm in eval mode as y = scale * x + shift per channel."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean * scale


def _conv(
    conv: nn.Conv2d, bn: nn.BatchNorm2d | None, name: str, sources: list[str], shape: tuple[int, ...], b: _Builder
) -> tuple[list[str], tuple[int, ...]]:
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    if bn is not None:  # fold: bn(conv(x)) = (scale * W) x + scale * b + shift
        scale, shift = _bn_affine(bn)
        weight, bias = weight * scale.view(-1, 1, 1, 1), bias * scale + shift
    node = nir.Conv2d(
        input_shape=shape[1:],
        weight=weight.numpy(),
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias.numpy(),
    )
    return b.add(name, node, sources), _shape_after(conv, shape)


def _shape_after(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(module(torch.zeros(1, *shape)).shape[1:])


def _pair(value: int | tuple[int | None, ...]) -> tuple[int | None, ...]:
    """A pooling setting as (height, width), as torch reads an int or a tuple."""
    return (value, value) if isinstance(value, int) else tuple(value)


def _pool_geometry(module: nn.Module, shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    """The kernel, stride and padding of the square pooling that ``module`` is at input ``shape`` ([C, H, W]).

    Raises:
        ExportError: where NIR's pooling would compute something else: a window, stride or padding that is not
            square, a divisor of its own, ceil_mode's partial window, padding not counted, or an adaptive pooling
            that is no fixed pooling at this size.
    """
    if isinstance(module, nn.AvgPool2d):
        pairs = [_pair(v) for v in (module.kernel_size, module.stride or module.kernel_size, module.padding)]
        if any(height != width for height, width in pairs):
            raise ExportError(
                f"layer {name!r}: NIR export takes square pooling; this layer's (kernel, stride, padding) are {pairs}"
            )
        (kernel, _), (stride, _), (padding, _) = pairs
        if padding and not module.count_include_pad:
            raise ExportError(f"layer {name!r}: NIR's pooling counts the zero padding; this layer leaves it out")
        if module.divisor_override:
            raise ExportError(
                f"layer {name!r}: NIR's pooling divides by the window's size; this layer divides by "
                f"{module.divisor_override}"
            )
        if module.ceil_mode and any((size + 2 * padding - kernel) % stride for size in shape[1:]):
            raise ExportError(f"layer {name!r}: ceil_mode adds a partial window at this input size; NIR has none")
        return kernel, stride, padding
    size = shape[1]
    targets = {size if target is None else target for target in _pair(module.output_size)}
    if shape[1] != shape[2] or len(targets) > 1 or size % min(targets):
        raise ExportError(
            f"layer {name!r}: adaptive pooling of {shape[1]}x{shape[2]} to {module.output_size} is not a fixed "
            "average pooling; export at an input size it divides"
        )
    (target,) = targets
    return size // target, size // target, 0


def export_checkpoint(
    path: str | Path, out: str | Path | None = None, *, dt: float = DEFAULT_DT, pooling: Pooling = "sum"
) -> Path:
    """Write the model of a checkpoint as a NIR file (HDF5), by default ``model.nir`` beside the checkpoint.

    ``dt`` and ``pooling`` are those of ``to_nir``.
    """
    from tks.checkpoint_model import load_model  # the only place that rebuilds a checkpoint's model

    if not math.isfinite(dt) or dt <= 0:
        raise ExportError(f"dt must be a finite number of seconds > 0, got {dt}")
    target = Path(out) if out is not None else Path(path).with_name("model.nir")
    check_writable_file(target, "out")
    model, info, cfg, _, record = load_model(path)
    framework = model_framework(model)
    with np.errstate(over="ignore"):  # an overflowing tau x dt is refused below, in one line
        if framework == "tks":
            graph = to_nir(model, (info.in_channels, *info.input_size), dt=dt, pooling=pooling)
        else:
            graph = _foreign_nir(framework, model, (cfg.data.num_steps, 1, info.in_channels, *info.input_size), dt)
    graph.metadata.update(input_metadata(cfg, info, dt))
    if record.exit_rule is not None:  # the calibrated early exit travels with the model (tks.anytime.exit_stream)
        graph.metadata["exit_rule"] = json.dumps(dict(record.exit_rule))
    check_finite_parameters(graph, dt)
    _write_atomically(graph, target)
    return target


def check_finite_parameters(graph: nir.NIRGraph, dt: float) -> None:
    """Refuse a graph with a non-finite parameter: with finite weights, only ``dt`` can make one (tau x dt overflows).

    Raises:
        ExportError: naming the node, the parameter and ``dt``.
    """
    for name, node in graph.nodes.items():
        for key, value in vars(node).items():
            array = np.asarray(value) if isinstance(value, (np.ndarray, float)) else None
            if array is not None and array.dtype.kind == "f" and not np.isfinite(array).all():
                raise ExportError(
                    f"dt={dt} makes {key} of node {name!r} non-finite (tau x dt overflows); give a dt of seconds "
                    f"(default {DEFAULT_DT})"
                )


def model_framework(model: nn.Module) -> str:
    """``spikingjelly`` or ``snntorch`` when the model's neurons come from that framework, else ``tks``.

    The SpikingJelly node inside a tks ``LIF`` (engine ``spikingjelly``) is tks's: it exports as that LIF.
    """
    own = tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, LIF))
    for name, module in model.named_modules():
        package = type(module).__module__.partition(".")[0]
        if package in ("spikingjelly", "snntorch") and not (own and name.startswith(own)):
            return package
    return "tks"


def _foreign_nir(framework: str, model: nn.Module, example_shape: tuple[int, ...], dt: float) -> nir.NIRGraph:
    """The NIR graph of a SpikingJelly or snnTorch model, by that framework's own exporter.

    Args:
        framework: ``spikingjelly`` (a multi-step model, ``[T, B, ...]``) or ``snntorch`` (a single-step network
            inside ``tks.snn.Stepwise``).
        model: the trained model.
        example_shape: ``[T, 1, C, H, W]``, the input the exporter traces shapes with.
        dt: the time step in seconds.
    """
    feature = f"NIR export of a {'SpikingJelly' if framework == 'spikingjelly' else 'snnTorch'} model"
    try:
        # the frameworks' exporters warn about their own dependencies' deprecations: nothing the user can act on
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if framework == "spikingjelly":
                exporter = require("spikingjelly.activation_based.nir_exchange.to_nir", feature)
                graph = exporter.export_to_nir(model, torch.zeros(example_shape), dt=dt)
            else:
                graph = _snntorch_nir(model, example_shape[2:], feature)
    except TKSError:
        raise
    except Exception as exc:  # noqa: BLE001 - another framework's exporter: whatever it raises is one line
        hint = SNNTORCH_NEEDS if framework == "snntorch" else "its exporter takes no BatchNorm"
        raise ExportError(
            f"{feature}: its exporter failed ({type(exc).__name__}: {short_message(exc)}); {hint}"
        ) from None
    finally:
        reset_states(model)  # the example forward may leave state behind
    graph.metadata.update(source=framework)
    return graph


SNNTORCH_NEEDS = (
    "snnTorch's exporter needs the network inside tks.snn.Stepwise(net, flatten=True), without a Flatten of its "
    "own, and each neuron's beta and threshold as tensors of its layer's size (docs/own-data.md)"
)


def _snntorch_nir(model: nn.Module, sample_shape: tuple[int, ...], feature: str) -> nir.NIRGraph:
    """The single-step network of a ``Stepwise`` model through snnTorch's exporter (sample without a batch)."""
    if not isinstance(model, Stepwise):
        raise ExportError(f"{feature}: {SNNTORCH_NEEDS}")
    for name, module in model.net.named_modules():
        if getattr(module, "reset_mechanism", "zero") != "zero":  # NIR's LIF resets to v_reset
            warnings.warn(
                f"layer 'net.{name}' resets by {module.reset_mechanism!r}; NIR's LIF resets to zero, so an importer "
                "will not reproduce the model (reset_mechanism='zero' exports exactly)",
                TKSWarning,
                stacklevel=3,
            )
    sample = torch.zeros(math.prod(sample_shape)) if model.flatten else torch.zeros(sample_shape)
    graph = require("snntorch.export_nir", feature).export_to_nir(model.net, sample)
    graph.metadata["input_flattened"] = model.flatten
    return graph


def input_metadata(cfg: Config, info: DatasetInfo, dt: float) -> dict[str, Any]:
    """What another toolchain needs to feed the exported graph the inputs the model was trained on.

    Keys: ``dt`` (seconds per step), ``num_steps`` (T), ``input_shape`` ([C, H, W] of one step), ``input_kind``
    (``static`` or ``events``), ``encoding`` (how an input becomes the T steps), ``normalization_mean`` and
    ``normalization_std`` per channel where known (else ``normalization`` is ``unknown``), ``class_names`` where
    known, and ``model``, ``dataset``, ``tks_version``. docs/nir.md shows them read back.
    """
    from tks.data import test_normalization
    from tks.data.loading import data_options
    from tks.version import __version__

    if info.kind == "static":
        encoding = (
            "direct: the image, scaled to [0, 1] and normalised as (x - mean) / std per channel, is the input of "
            "every one of the T steps"
        )
    else:
        encoding = (
            "event frames, one per step: the events of a recording counted per pixel and polarity (channel 0 OFF, "
            "1 ON) in T equal time bins of its span, (t_last - t_first) // T microseconds each, as floats, resized "
            f"to {info.input_size[0]}x{info.input_size[1]} (bilinear, align_corners)"
        )
    metadata: dict[str, Any] = {
        "dt": dt,
        "num_steps": cfg.data.num_steps,
        "input_shape": [info.in_channels, *info.input_size],
        "input_kind": info.kind,
        "encoding": encoding,
        "model": cfg.model.name,
        "dataset": cfg.data.name,
        "tks_version": __version__,
    }
    stats = test_normalization(cfg.data.name, data_options(cfg.data))
    if stats is not None:
        metadata.update(normalization_mean=list(stats[0]), normalization_std=list(stats[1]))
    else:
        metadata["normalization"] = "unknown"
    if info.classes is not None:
        metadata["class_names"] = list(info.classes)
    return metadata


def _write_atomically(graph: nir.NIRGraph, target: Path) -> None:
    """The graph as HDF5, whole or not at all: built in memory, then written through ``atomic_file``.

    HDF5 that fails to write a file (a full disk) prints tracebacks from its destructors and can crash the
    process; in memory it cannot fail that way, and the file write that follows is plain Python I/O.
    """
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target, ExportError) as tmp:
        tmp.write_bytes(buffer.getvalue())


def run_nir(graph: nir.NIRGraph, x_seq: Tensor, *, dt: float | None = None) -> Tensor:
    """Simulate a NIR graph of the node types ``to_nir`` writes, one time step after another.

    Args:
        graph: e.g. ``nir.read(path)``.
        x_seq: input ``[T, B, *input_shape]``.
        dt: Euler step in seconds (default: the graph's ``metadata["dt"]``).

    Returns:
        The output node's value at every step, ``[T, B, *output_shape]``.
    """
    dt = dt if dt is not None else float(graph.metadata.get("dt", DEFAULT_DT))
    order = _topological_order(graph)
    inputs: dict[str, list[str]] = {key: [] for key in graph.nodes}
    for source, target in graph.edges:
        inputs[target].append(source)
    state: dict[str, Tensor] = {}
    outputs = []
    for x in x_seq:
        values: dict[str, Tensor] = {}
        for key in order:
            node = graph.nodes[key]
            value = x if isinstance(node, nir.Input) else sum(values[s] for s in inputs[key])
            values[key] = _step(node, value, key, state, dt)
        outputs.append(values[next(k for k in order if isinstance(graph.nodes[k], nir.Output))])
    return torch.stack(outputs)


def _step(node: nir.NIRNode, x: Tensor, key: str, state: dict[str, Tensor], dt: float) -> Tensor:
    def tensor(array: Any) -> Tensor:
        return torch.as_tensor(np.asarray(array), dtype=x.dtype)

    if isinstance(node, nir.Input | nir.Output):
        return x
    if isinstance(node, nir.Conv2d):
        return F.conv2d(
            x,
            tensor(node.weight),
            tensor(node.bias),
            tuple(np.atleast_1d(node.stride)),
            tuple(np.atleast_1d(node.padding)),
            tuple(np.atleast_1d(node.dilation)),
            node.groups,
        )
    if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
        divisor = 1 if isinstance(node, nir.SumPool2d) else None  # a sum is an average not divided
        geometry = (tuple(np.atleast_1d(getattr(node, key)).tolist()) for key in _POOL_KEYS)
        return F.avg_pool2d(x, *geometry, divisor_override=divisor)
    if isinstance(node, nir.Flatten):
        # NIR dimensions leave the batch out: a dimension counted from the front moves one up here
        start, end = (int(d) + 1 if d >= 0 else int(d) for d in (node.start_dim, node.end_dim))
        return x.flatten(start, end)
    if isinstance(node, nir.Affine):
        return F.linear(x, tensor(node.weight), tensor(node.bias))
    if isinstance(node, nir.LIF):
        v = state.get(key, torch.zeros_like(x))
        h = v + (tensor(node.r) * x - v + tensor(node.v_leak)) * (dt / tensor(node.tau))
        spikes = (h > tensor(node.v_threshold)).to(x.dtype)
        state[key] = torch.where(spikes.bool(), tensor(node.v_reset).expand_as(h), h)
        return spikes
    raise ExportError(f"run_nir does not simulate {type(node).__name__} nodes")


def _topological_order(graph: nir.NIRGraph) -> list[str]:
    remaining = {key: {s for s, t in graph.edges if t == key} for key in graph.nodes}
    order: list[str] = []
    while remaining:
        ready = sorted(key for key, deps in remaining.items() if not deps)
        if not ready:
            raise ExportError("the NIR graph has a cycle; run_nir simulates feed-forward graphs only")
        for key in ready:
            order.append(key)
            del remaining[key]
        for deps in remaining.values():
            deps.difference_update(ready)
    return order
