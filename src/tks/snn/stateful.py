"""Neurons of other frameworks keep state between calls: tks resets it before every batch.

SpikingJelly's neurons (``MemoryModule``) keep their membrane on the module until ``reset()``; snnTorch's neurons
made with ``init_hidden=True`` keep theirs until ``reset_mem()``. tks's own LIF keeps nothing. A model built by tks
(``tks.build.build_model``) that holds such modules gets ``reset_before_each_call``: a forward pre-hook that resets
them all, so that every training and evaluation batch starts from rest, as a stateless network would. A module of
your own that keeps state gets the same by defining ``reset_state()``. State that nothing resets would make the
second batch's backward pass fail inside PyTorch; the training loop reports it as ``StatefulModelError`` instead.

``Stepwise`` runs a network written one time step at a time (snnTorch's usual style) over ``[T, B, ...]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tks.errors import TKSError

RESET_METHOD = "reset_state"
"""The method a module of your own defines to have tks reset its state before every batch."""


class StatefulModelError(TKSError):
    """A model that carries autograd state from one batch into the next, which tks does not know how to reset."""


def reset_function(module: nn.Module) -> Callable[[], object] | None:
    """How to bring ``module`` back to rest, or None when it keeps no state tks knows of.

    In this order: its own ``reset_state()``; a SpikingJelly module's ``reset()``; an snnTorch neuron's
    ``reset_mem()`` when it keeps its state (``init_hidden=True``).
    """
    own = getattr(module, RESET_METHOD, None)
    if callable(own):
        return own
    package = type(module).__module__.partition(".")[0]
    if package == "spikingjelly" and callable(getattr(module, "reset", None)):
        return module.reset
    if package == "snntorch" and getattr(module, "init_hidden", False) and callable(getattr(module, "reset_mem", None)):
        return module.reset_mem
    return None


def stateful_modules(model: nn.Module) -> list[Callable[[], object]]:
    """The reset functions of every module of ``model`` that keeps state.

    The SpikingJelly node inside a tks ``LIF`` of engine ``spikingjelly`` is left out: that LIF resets it itself.
    """
    from tks.snn.neuron import LIF

    own = tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, LIF))
    return [
        reset
        for name, module in model.named_modules()
        if not (own and name.startswith(own)) and (reset := reset_function(module)) is not None
    ]


def reset_states(model: nn.Module) -> int:
    """Reset every stateful module of ``model``; returns how many there were."""
    resets = stateful_modules(model)
    for reset in resets:
        reset()
    return len(resets)


def reset_before_each_call(model: nn.Module) -> nn.Module:
    """Make every call of ``model`` start from rest (a forward pre-hook), if it holds stateful modules.

    Returns:
        ``model`` itself.
    """
    resets = stateful_modules(model)
    if resets:

        def reset(module: nn.Module, args: tuple[object, ...]) -> None:
            for function in resets:
                function()

        model.register_forward_pre_hook(reset)
    return model


def is_stale_graph_error(exc: BaseException) -> bool:
    """Whether ``exc`` is PyTorch's error for a backward pass through a graph an earlier batch freed."""
    return isinstance(exc, RuntimeError) and "backward through the graph a second time" in str(exc)


def stateful_model_error() -> StatefulModelError:
    """The one line for state that survives from one batch into the next."""
    return StatefulModelError(
        "the model keeps state from one batch into the next that tks cannot reset (PyTorch: trying to backward "
        f"through the graph a second time): give the module that holds it a {RESET_METHOD}() method (tks calls it "
        "before every batch), or build it from tks, SpikingJelly or snnTorch neurons (docs/own-data.md)"
    )


class Stepwise(nn.Module):
    """A network written for one time step, run over all T: ``[T, B, ...]`` in, ``[T, B, K]`` out.

    The state of its neurons is reset before the first step. A step that returns a tuple (snnTorch's neuron with
    ``output=True`` returns ``(spikes, membrane)``) contributes its ``output`` element: 0, the spikes, by default;
    1 takes the membrane potential as the step's logits. With ``flatten``, each step's input ``[B, C, H, W]`` is
    flattened to ``[B, C*H*W]`` first, so the network needs no ``Flatten`` of its own (snnTorch's NIR exporter
    takes none).

    Args:
        net: the single-step network, ``[B, ...]`` to ``[B, K]`` (or a tuple).
        output: which element of a tuple output is the step's logits.
        flatten: flatten each step's input to ``[B, features]``.
    """

    def __init__(self, net: nn.Module, output: int = 0, flatten: bool = False) -> None:
        super().__init__()
        self.net = net
        self.output = output
        self.flatten = flatten

    def forward(self, x_seq: Tensor) -> Tensor:
        """Logits ``[T, B, K]`` of input ``[T, B, ...]``, one call of the network per step."""
        reset_states(self.net)
        steps = []
        for x in x_seq:
            out = self.net(x.flatten(1) if self.flatten else x)
            steps.append(out[self.output] if isinstance(out, tuple) else out)
        return torch.stack(steps)
