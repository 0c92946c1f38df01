"""The LIF neuron as a module, and ``make_neuron``, the factory every model takes.

``LIF`` maps input currents ``[T, B, ...]`` to spikes ``[T, B, ...]`` by the equations of ``tks.snn.lif``. It is
stateless: the membrane lives inside one forward call over all T steps, so there is nothing to reset between
batches and the same input always gives the same output. Each call runs the backend that
``tks.snn.backends.choose_backend`` picks for the input's device and dtype, the neuron's engine and its surrogate.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn

from tks.errors import UnknownNameError
from tks.snn import backends
from tks.snn.backends import ENGINES, fused, spikingjelly
from tks.snn.lif import check_lif_parameters, lif_reference
from tks.snn.surrogate import Surrogate, make_surrogate

NeuronFactory = Callable[[], nn.Module]
"""A zero-argument callable that builds one spiking-neuron module ``[T, B, ...] -> [T, B, ...]``."""


def check_engine(engine: str) -> None:
    """Raise ``UnknownNameError`` (one line, listing the engines) unless ``engine`` is one of ``ENGINES``."""
    if engine not in ENGINES:
        raise UnknownNameError("neuron engine", engine, list(ENGINES))


class LIF(nn.Module):
    """Multi-step LIF neuron: input currents ``[T, B, ...]`` to spikes ``[T, B, ...]`` of the same dtype.

    Stateless: the membrane starts at 0 in every call. The equations are in ``tks.snn.lif``.

    Args:
        tau: membrane time constant; the input is divided by tau (official 2.0).
        v_threshold: firing threshold (official 0.5).
        surrogate: backward shape of the spike function (official ``PiecewiseQuadratic(alpha=2)``).
        detach_reset: stop the gradient through the reset term (official True).
        engine: ``"tks"`` (the fused kernels where they apply, else autograd), ``"autograd"`` or
            ``"spikingjelly"``; ``tks.snn.backends`` has the rule.

    Raises:
        NeuronError: for tau <= 1 or v_threshold <= 0.
        MissingExtraError: for engine ``"spikingjelly"`` without SpikingJelly (the ``spikingjelly`` extra).
        UnknownNameError: for an unknown engine.
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 0.5,
        surrogate: Surrogate | None = None,
        detach_reset: bool = True,
        engine: str = "tks",
    ) -> None:
        super().__init__()
        check_engine(engine)
        check_lif_parameters(tau, v_threshold)
        backends.mark_checks_constant()
        self.tau = tau
        self.v_threshold = v_threshold
        self.surrogate = surrogate if surrogate is not None else make_surrogate("piecewise_quadratic", 2.0)
        self.detach_reset = detach_reset
        self.engine = engine
        if engine == "spikingjelly":
            self.node = spikingjelly.build_node(tau, v_threshold, self.surrogate, detach_reset)

    def forward(self, x_seq: Tensor) -> Tensor:
        """Spikes ``[T, B, ...]`` (same dtype as the input) for input currents ``[T, B, ...]``."""
        backend = backends.choose_backend(x_seq.device, x_seq.dtype, self.engine, self.surrogate)
        if backend == "spikingjelly":
            return spikingjelly.lif_spikingjelly(self.node, x_seq)
        if backend == "autograd":
            spikes, _ = lif_reference(
                x_seq,
                tau=self.tau,
                v_threshold=self.v_threshold,
                surrogate=self.surrogate,
                detach_reset=self.detach_reset,
            )
            return spikes
        # cpu_kernel or triton: the custom operators run the kernel of the input's device
        return fused.lif_fused(x_seq, self.tau, self.v_threshold, self.surrogate, self.detach_reset)

    def extra_repr(self) -> str:
        """The neuron's settings, shown by ``print(model)``."""
        return (
            f"tau={self.tau}, v_threshold={self.v_threshold}, surrogate={self.surrogate.name}"
            f"(alpha={self.surrogate.alpha}), detach_reset={self.detach_reset}, engine={self.engine}"
        )


def make_neuron(
    engine: str = "tks",
    *,
    tau: float = 2.0,
    v_threshold: float = 0.5,
    surrogate: str = "piecewise_quadratic",
    surrogate_alpha: float = 2.0,
    detach_reset: bool = True,
) -> NeuronFactory:
    """The neuron factory every model takes; the defaults are the official TKS/BrainCog neuron.

    Every setting is checked here, so a bad one fails before a model is built.

    Args:
        engine: ``"tks"`` (default), ``"autograd"`` or ``"spikingjelly"`` (see ``LIF``).
        tau: membrane time constant.
        v_threshold: firing threshold.
        surrogate: surrogate-gradient family (``"piecewise_quadratic"`` or ``"atan"``).
        surrogate_alpha: the surrogate's shape parameter.
        detach_reset: stop the gradient through the reset term.

    Returns:
        A zero-argument callable building a fresh ``LIF`` module.

    Raises:
        UnknownNameError: for an unknown engine or surrogate.
        NeuronError: for an invalid parameter, or engine ``"spikingjelly"`` without SpikingJelly.
        SurrogateError: for a non-positive ``surrogate_alpha``.
    """
    factory = partial(
        LIF,
        tau=tau,
        v_threshold=v_threshold,
        surrogate=make_surrogate(surrogate, surrogate_alpha),
        detach_reset=detach_reset,
        engine=engine,
    )
    factory()  # one neuron, built and dropped: it checks every setting (and that SpikingJelly imports) up front
    return factory
