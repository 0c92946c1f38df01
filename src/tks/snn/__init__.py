"""Spiking building blocks: surrogate gradients, the LIF neuron and time-folding layers."""

from tks.snn.layers import PerStep, TimeInvariant
from tks.snn.neuron import LIF, NeuronFactory, SpikingJellyLIF, lif_reference, lif_step, make_neuron
from tks.snn.surrogate import ATan, PiecewiseQuadratic, Surrogate, make_surrogate, spike

__all__ = [
    "ATan",
    "LIF",
    "NeuronFactory",
    "PerStep",
    "PiecewiseQuadratic",
    "SpikingJellyLIF",
    "Surrogate",
    "TimeInvariant",
    "lif_reference",
    "lif_step",
    "make_neuron",
    "make_surrogate",
    "spike",
]
