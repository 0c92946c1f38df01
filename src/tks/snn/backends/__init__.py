"""The LIF neuron's backends, and the one rule that picks one for every forward call.

Every backend computes the equations of ``tks.snn.lif``:

* ``cpu_kernel``: a C kernel, one pass over memory each way (``cpu_kernel.py``, ``lif_cpu.c``), behind the custom
  operators ``tks::lif_forward`` / ``tks::lif_backward`` (``fused.py``), each one node under ``torch.compile``.
* ``triton``: Triton kernels, one launch each way (``triton_lif.py``), behind the same operators.
* ``autograd``: ``tks.snn.lif.lif_reference``, the loop over the step function, under plain autograd; slower and
  heavier in memory, but it runs anywhere, takes any surrogate, and ``torch.compile`` can fuse it into its neighbours.
* ``spikingjelly``: SpikingJelly 2.x ``LIFNode``, an optional dependency (``spikingjelly.py``).

The rule, ``choose_backend(device, dtype, engine, surrogate)``, in this order:

1. engine ``spikingjelly``: ``spikingjelly``.
2. engine ``autograd``, or a surrogate whose class names no kernel formula (``Surrogate.kernel`` is None, as for
   one you write yourself): ``autograd``.
3. engine ``tks`` (the default), when the environment does not set ``TKS_LIF_KERNEL=0``:
   CPU tensors of float32, float64 or bfloat16, when the C kernel builds: ``cpu_kernel``;
   CUDA tensors of float32, bfloat16 or float16, when triton imports: ``triton``.
4. anything else (other devices or dtypes, no C compiler, no triton, ``TKS_LIF_KERNEL=0``): ``autograd``.

``describe_backends`` prints what the rule gives on this machine (``tks models --verbose``). The fused backends and
autograd agree bit for bit in float32 and float64 with the reset detached (the official setting); bfloat16 and
float16 round differently (see each kernel's documentation).
"""

from __future__ import annotations

import os
from functools import cache
from importlib import metadata
from typing import Literal, get_args

import torch

from tks.snn.backends import cpu_kernel, fused, spikingjelly
from tks.snn.surrogate import Surrogate

Engine = Literal["tks", "autograd", "spikingjelly"]
"""What a user chooses: ``tks`` (the fused kernels where they apply), ``autograd`` or ``spikingjelly``."""
ENGINES: tuple[str, ...] = get_args(Engine)

Backend = Literal["cpu_kernel", "triton", "autograd", "spikingjelly"]
"""What runs a forward call; ``choose_backend`` decides."""
BACKENDS: tuple[str, ...] = get_args(Backend)


def _kernels_enabled() -> bool:
    return os.environ.get("TKS_LIF_KERNEL", "1") != "0"


def _cpu_kernel_computes(dtype: torch.dtype) -> bool:
    return dtype in cpu_kernel.DTYPES and _kernels_enabled() and cpu_kernel.load_lif_kernel() is not None


def _triton_computes(dtype: torch.dtype) -> bool:
    if not _kernels_enabled():
        return False
    kernels = fused.triton_kernels()
    return kernels is not None and dtype in kernels.DTYPES


@cache
def mark_checks_constant() -> None:
    """Tell ``torch.compile`` to take the availability checks' results as constants of the graph.

    The checks build or import something once per process, which dynamo cannot trace (it would break the graph
    there). Marking imports ``torch._dynamo``, which costs as much again as ``import torch``; so it happens when
    the first neuron is built (``LIF.__init__``), not when tks is imported. A training step imports it anyway.
    """
    for check in (_kernels_enabled, _cpu_kernel_computes, _triton_computes):
        torch.compiler.assume_constant_result(check)  # marks the function itself; choose_backend calls it by name


def choose_backend(device: torch.device, dtype: torch.dtype, engine: str, surrogate: Surrogate) -> Backend:
    """The backend that runs a forward call of the LIF: the rule of the module docstring, in one place.

    Args:
        device: the input's device.
        dtype: the input's dtype.
        engine: the neuron's engine, one of ``ENGINES``.
        surrogate: the neuron's surrogate; only whether its class names a kernel formula matters.

    Returns:
        One of ``BACKENDS``.
    """
    if engine == "spikingjelly":
        return "spikingjelly"
    if engine == "autograd" or getattr(surrogate, "kernel", None) is None:
        return "autograd"
    if device.type == "cpu" and _cpu_kernel_computes(dtype):
        return "cpu_kernel"
    if device.type == "cuda" and _triton_computes(dtype):
        return "triton"
    return "autograd"


_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DEVICES = {"cpu": "cpu", "cuda": "cuda", "other": "meta"}  # "other": any device without a kernel (mps, xpu, ...)


def describe_backends(engine: str = "tks", surrogate: Surrogate | None = None) -> str:
    """What ``choose_backend`` picks on this machine for each device and dtype, and why, as a few lines of text.

    Builds the C kernel and imports triton if no call did yet (so a failed build warns here).

    Args:
        engine: the neuron's engine.
        surrogate: the neuron's surrogate (default: the official piecewise-quadratic one).
    """
    from tks.snn.surrogate import PiecewiseQuadratic

    surrogate = surrogate if surrogate is not None else PiecewiseQuadratic()
    lines = [f"neuron backends for engine {engine!r}, surrogate {surrogate.name!r} (tks.snn.backends.choose_backend):"]
    lines.append(f"  {'device':<8}" + "".join(f"{name:<14}" for name in _DTYPES).rstrip())
    for label, device in _DEVICES.items():
        picks = [choose_backend(torch.device(device), dtype, engine, surrogate) for dtype in _DTYPES.values()]
        lines.append(f"  {label:<8}" + "".join(f"{pick:<14}" for pick in picks).rstrip())
    lines.append("  engine 'autograd' or a surrogate of your own: autograd; engine 'spikingjelly': spikingjelly")
    enabled = _kernels_enabled()
    if not enabled:
        lines.append("  cpu_kernel, triton: off (TKS_LIF_KERNEL=0)")
    else:
        library = cpu_kernel.load_lif_kernel()
        threads = torch.get_num_threads()
        built = f"built, {library._name}; {threads} threads" if library is not None else "not built (see the warning)"
        lines.append(f"  cpu_kernel: {built}")
        kernels = fused.triton_kernels()
        lines.append(f"  triton: {'triton ' + metadata.version('triton') if kernels is not None else 'no triton'}")
    sj = spikingjelly.version()
    lines.append(f"  spikingjelly: {'SpikingJelly ' + sj if sj else 'not installed'}")
    return "\n".join(lines)


__all__ = ["BACKENDS", "ENGINES", "Backend", "Engine", "choose_backend", "describe_backends", "mark_checks_constant"]
