"""Spiking building blocks: surrogate gradients, the LIF neuron and its backends, time-folding layers.

| module | its one job |
|---|---|
| ``surrogate`` | surrogate gradients of the spike function, and ``spike`` |
| ``lif`` | the LIF dynamics, stated once: ``lif_step`` and its loop ``lif_reference``; the parameters' range check |
| ``neuron`` | the ``LIF`` module and ``make_neuron``, the factory models take |
| ``backends`` | the rule that picks a backend per call, and the backends: C and Triton kernels, SpikingJelly |
| ``layers`` | stateless layers over ``[T, B, ...]``: ``PerStep``, ``TimeInvariant``, normalisations |
"""

from tks.snn.backends import ENGINES, choose_backend, describe_backends
from tks.snn.layers import PerStep, TimeInvariant
from tks.snn.lif import NeuronError, lif_reference, lif_step
from tks.snn.neuron import LIF, NeuronFactory, make_neuron
from tks.snn.stateful import RESET_METHOD, StatefulModelError, Stepwise, reset_before_each_call, reset_states
from tks.snn.surrogate import ATan, PiecewiseQuadratic, Surrogate, SurrogateError, make_surrogate, spike

__all__ = [
    "ENGINES",
    "LIF",
    "RESET_METHOD",
    "StatefulModelError",
    "Stepwise",
    "ATan",
    "NeuronError",
    "NeuronFactory",
    "PerStep",
    "PiecewiseQuadratic",
    "Surrogate",
    "SurrogateError",
    "TimeInvariant",
    "choose_backend",
    "describe_backends",
    "lif_reference",
    "lif_step",
    "make_neuron",
    "make_surrogate",
    "reset_before_each_call",
    "reset_states",
    "spike",
]
