"""Backend ``spikingjelly``: SpikingJelly 2.x ``LIFNode`` in multi-step mode, made stateless (engine ``spikingjelly``).

SpikingJelly keeps the membrane on the module between calls; ``lif_spikingjelly`` resets it before and after every
forward so that users never call ``reset_net``. ``decay_input=True`` and ``v_reset=0`` give the equations of
``tks.snn.lif``. SpikingJelly fires at ``>=`` where the official code fires at ``>``; the two differ only on inputs
exactly at threshold.

SpikingJelly is an optional dependency (the ``spikingjelly`` extra), imported only when a neuron of this engine is
built.
"""

from __future__ import annotations

from importlib import metadata

from torch import Tensor, nn

from tks.extras import require
from tks.snn.lif import NeuronError
from tks.snn.surrogate import Surrogate

SURROGATES = {"piecewise_quadratic": "PiecewiseQuadratic", "atan": "ATan"}
"""Our kernel formulas (``Surrogate.kernel``) and the SpikingJelly surrogate classes with the same derivative."""

FEATURE = "neuron engine 'spikingjelly'"


def version() -> str | None:
    """The installed SpikingJelly's version, or None when it is not installed."""
    try:
        return metadata.version("spikingjelly")
    except metadata.PackageNotFoundError:
        return None


def build_node(tau: float, v_threshold: float, surrogate: Surrogate, detach_reset: bool) -> nn.Module:
    """A SpikingJelly ``LIFNode`` computing the LIF of ``tks.snn.lif`` with these settings.

    Raises:
        NeuronError: when SpikingJelly has no surrogate with ``surrogate``'s derivative.
        MissingExtraError: when SpikingJelly is not installed.
    """
    kernel = getattr(surrogate, "kernel", None)
    if kernel not in SURROGATES:
        raise NeuronError(
            f"neuron engine 'spikingjelly' has no surrogate {surrogate.name!r} (it has {', '.join(SURROGATES)}); "
            "use engine 'tks' or 'autograd' for a surrogate of your own"
        )
    # Imported here: the other engines never pay for importing SpikingJelly, nor need it installed.
    sj_neuron = require("spikingjelly.activation_based.neuron", FEATURE)
    sj_surrogate = require("spikingjelly.activation_based.surrogate", FEATURE)
    return sj_neuron.LIFNode(
        tau=float(tau),
        decay_input=True,
        v_threshold=v_threshold,
        v_reset=0.0,
        surrogate_function=getattr(sj_surrogate, SURROGATES[kernel])(alpha=surrogate.alpha),
        detach_reset=detach_reset,
        step_mode="m",
    )


def lif_spikingjelly(node: nn.Module, x_seq: Tensor) -> Tensor:
    """Spikes ``[T, B, ...]`` for input currents ``[T, B, ...]`` from a node of ``build_node``, from V_0 = 0."""
    node.reset()
    out = node(x_seq)
    node.reset()  # drop the last membrane so it holds no graph between calls
    return out
