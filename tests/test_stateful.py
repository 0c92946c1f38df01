"""Resetting other frameworks' stateful neurons (tks.snn.stateful), with stand-in modules of each kind.

A stand-in's class claims the package through ``__module__``, which is all ``reset_function`` reads; the real
SpikingJelly and snnTorch neurons are exercised in test_third_party.py.
"""

import pytest
import torch
from torch import nn

from tks.snn import LIF
from tks.snn.stateful import (
    StatefulModelError,
    Stepwise,
    is_stale_graph_error,
    reset_function,
    reset_states,
    stateful_model_error,
    stateful_modules,
)


def _module_of(package: str, **attributes) -> nn.Module:
    """A module whose class lives in ``package``, with the given attributes (methods or flags)."""
    cls = type("Neuron", (nn.Module,), {"__module__": f"{package}.neurons"})
    module = cls()
    for name, value in attributes.items():
        setattr(module, name, value)
    return module


def test_reset_function_by_kind_of_module():
    own = _module_of("mypackage", reset_state=lambda: "own", reset=lambda: "reset")
    assert reset_function(own)() == "own"  # a module's own method first
    assert reset_function(_module_of("spikingjelly", reset=lambda: "sj"))() == "sj"
    assert reset_function(_module_of("spikingjelly")) is None  # no reset method
    assert reset_function(_module_of("snntorch", init_hidden=True, reset_mem=lambda: "snn"))() == "snn"


@pytest.mark.parametrize(
    ("package", "attributes"),
    [
        ("snntorch", {"init_hidden": False, "reset_mem": lambda: None}),  # keeps no state between calls
        ("snntorch", {"reset_mem": lambda: None}),  # no init_hidden at all
        ("snntorch", {"init_hidden": True}),  # nothing to call
        ("snntorch", {"init_hidden": True, "reset_mem": "not callable"}),
        ("mypackage", {"init_hidden": True, "reset_mem": lambda: None}),  # not snnTorch's
        ("mypackage", {"reset": lambda: None}),  # not SpikingJelly's
        ("mypackage", {"reset_state": "not callable"}),
    ],
)
def test_modules_without_state_tks_knows_of_get_no_reset(package, attributes):
    assert reset_function(_module_of(package, **attributes)) is None


def test_stateful_modules_leave_out_only_what_a_tks_neuron_resets_itself():
    calls = []
    model = nn.Sequential(
        _module_of("mypackage", reset_state=lambda: calls.append("own")),
        nn.Sequential(LIF(engine="autograd")),
        _module_of("spikingjelly", reset=lambda: calls.append("sj")),
    )
    model[1][0].node = _module_of("spikingjelly", reset=lambda: calls.append("inside"))  # as engine spikingjelly
    assert reset_states(model) == 2
    assert calls == ["own", "sj"]
    assert len(stateful_modules(nn.Sequential(nn.Linear(2, 2)))) == 0


def test_stale_graph_error_is_recognised_by_type_and_text():
    text = "Trying to backward through the graph a second time (or directly access saved tensors)"
    assert is_stale_graph_error(RuntimeError(text))
    assert not is_stale_graph_error(RuntimeError("CUDA out of memory"))
    assert not is_stale_graph_error(ValueError(text))


def test_stateful_model_error_says_what_to_do():
    error = stateful_model_error()
    assert isinstance(error, StatefulModelError)
    assert str(error) == (
        "the model keeps state from one batch into the next that tks cannot reset (PyTorch: trying to backward "
        "through the graph a second time): give the module that holds it a reset_state() method (tks calls it "
        "before every batch), or build it from tks, SpikingJelly or snnTorch neurons (docs/own-data.md)"
    )


class _Counter(nn.Module):
    """One step: input [B, C, H, W] kept as it is, plus the number of steps seen since the last reset."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def reset_state(self) -> None:
        self.seen = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen += 1
        return x + self.seen, x.sum(dim=tuple(range(1, x.dim()))) * 0 + self.seen


def test_stepwise_runs_each_step_from_rest_and_keeps_the_shape_by_default():
    net = _Counter()
    x = torch.zeros(3, 2, 1, 2, 2)
    out = Stepwise(net)(x)
    assert out.shape == (3, 2, 1, 2, 2)  # not flattened unless asked
    assert out[:, 0, 0, 0, 0].tolist() == [1.0, 2.0, 3.0]  # the first element of the tuple; reset first
    assert Stepwise(net)(x)[:, 0, 0, 0, 0].tolist() == [1.0, 2.0, 3.0]  # a second call starts from rest again
    membrane = Stepwise(net, output=1)(x)
    assert membrane.shape == (3, 2) and membrane[:, 0].tolist() == [1.0, 2.0, 3.0]
    flat = Stepwise(net, flatten=True)(x)
    assert flat.shape == (3, 2, 4)
