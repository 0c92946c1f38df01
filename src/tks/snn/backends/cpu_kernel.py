"""Backend ``cpu_kernel``: the fused LIF in C (``lif_cpu.c``), compiled once with the system C compiler, via ctypes.

The shared library is built on first use into ``<cache>/kernels/`` (``$TKS_CACHE`` or ``~/.cache/tks``) and written
atomically; later processes only load it. Its name holds the machine architecture and a hash of the source, the
flags, the compiler command and the compiler's own version line, so a cache folder shared between machines (a home
directory on a cluster) or kept across a compiler upgrade never hands a process a library built for something else.
Processes that need it at once (``torchrun`` ranks, parallel tests) compile it once: one holds a lock while the
others wait. Without a working C compiler ``load_lif_kernel`` warns once (``TKSWarning``, one line on the command
line) and returns None, and the neuron runs the ``autograd`` backend, which computes the same thing more slowly.

``lif_forward`` and ``lif_backward`` have the signatures of their Triton twins in ``triton_lif.py``; the custom
operators of ``fused.py`` call whichever matches the tensors' device.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import sysconfig
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from tks.errors import TKSWarning
from tks.locks import build_lock, partial_path, remove_dead_partials

SOURCE = Path(__file__).with_name("lif_cpu.c")
# -ffp-contract=off: no fused multiply-adds, so the kernel rounds exactly as separate PyTorch ops do. No -march:
# the library runs on every CPU of its architecture.
FLAGS = ["-O3", "-shared", "-fPIC", "-ffp-contract=off", "-std=c99"]
SUFFIXES = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}
DTYPES = tuple(SUFFIXES)
"""The dtypes the kernel computes in (bfloat16: float32 arithmetic, stored rounded to nearest even)."""
SURROGATES = ("piecewise_quadratic", "atan")
"""The surrogate formulas of ``lif_cpu.c``, by their code there (the position in this tuple)."""


def cache_root() -> Path:
    """Folder for files tks builds once and reuses: ``$TKS_CACHE``, else ``~/.cache/tks``."""
    return Path(os.environ.get("TKS_CACHE") or Path.home() / ".cache" / "tks")


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def _compiler_version(compiler: list[str]) -> str:
    """The first line of ``CC --version`` (e.g. ``gcc (Debian 12.2.0-14) 12.2.0``), or "" when it does not run."""
    try:
        result = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (result.stdout.strip().splitlines() or [""])[0]


def cache_key(compiler: list[str], compiler_version: str, machine: str) -> str:
    """The file name stem of the library built by ``compiler`` on a ``machine`` (``platform.machine()``) CPU.

    Everything that changes the binary is in it: the source, the flags, the compiler command and version, and the
    architecture (which is also written out, so that a shared cache folder says which file is whose).
    """
    identity = [SOURCE.read_bytes(), " ".join(compiler + FLAGS).encode(), compiler_version.encode(), machine.encode()]
    digest = hashlib.sha256(b"\0".join(identity)).hexdigest()[:16]
    return f"lif_cpu-{machine or 'unknown'}-{digest}"


def _build(target: Path, compiler: list[str], openmp: bool) -> None:
    with build_lock(target, None):  # silent: a compile takes seconds
        if target.exists():  # compiled by another process while this one waited
            return
        remove_dead_partials(target)
        tmp = partial_path(target)
        try:
            flags = FLAGS + (["-fopenmp"] if openmp else [])
            subprocess.run([*compiler, *flags, str(SOURCE), "-o", str(tmp), "-lm"], check=True, capture_output=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def _bind(library: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    for suffix in SUFFIXES.values():
        forward = getattr(library, f"lif_forward_{suffix}")
        forward.argtypes = [p, p, p, i64, i64, f64, f64, i32]
        forward.restype = None
        backward = getattr(library, f"lif_backward_{suffix}")
        backward.argtypes = [p, p, p, i64, i64, f64, f64, f64, i32, i32, i32]
        backward.restype = None
    return library


def _one_line(exc: BaseException) -> str:
    """What went wrong, on one line: the compiler's first error line, else the exception."""
    stderr = getattr(exc, "stderr", b"") or b""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    if isinstance(exc, subprocess.CalledProcessError):
        what = f"{shlex.join(exc.cmd[:1])} exited with status {exc.returncode}"
    else:
        what = " ".join(str(exc).split())
    detail = (errors or lines or [""])[0]
    return f"{what}: {detail}"[:300] if detail else what[:300]


@cache
def load_lif_kernel() -> ctypes.CDLL | None:
    """The compiled kernel library, or None where it cannot be built (the neuron then runs the autograd backend).

    Warns (``TKSWarning``) when the build fails. ``TKS_LIF_KERNEL=0`` returns None without trying.
    """
    if os.environ.get("TKS_LIF_KERNEL", "1") == "0":
        return None
    compiler = _compiler()
    stem = cache_key(compiler, _compiler_version(compiler), platform.machine())
    problems = []
    for openmp in (True, False):  # e.g. Apple clang has no OpenMP: build single-threaded instead
        target = cache_root() / "kernels" / f"{stem}{'-omp' if openmp else ''}.so"
        try:
            if not target.exists():
                _build(target, compiler, openmp)
            return _bind(ctypes.CDLL(str(target)))
        except (OSError, subprocess.CalledProcessError, AttributeError) as exc:
            problems.append(_one_line(exc))
    warnings.warn(
        f"could not build the fused LIF CPU kernel ({problems[-1]}); the neuron runs its slower autograd backend "
        "on the CPU (set CC to a working C compiler, or TKS_LIF_KERNEL=0 to skip the build)",
        TKSWarning,
        stacklevel=2,
    )
    return None


def _functions(dtype: torch.dtype) -> tuple[Callable[..., None], Callable[..., None]]:
    library = load_lif_kernel()
    if library is None or dtype not in SUFFIXES:
        # Only reached by calling the operator directly: tks.snn.backends.choose_backend never picks it then.
        raise RuntimeError(f"the fused LIF CPU kernel is not available for {dtype} here")
    suffix = SUFFIXES[dtype]
    return getattr(library, f"lif_forward_{suffix}"), getattr(library, f"lif_backward_{suffix}")


def lif_forward(x_seq: Tensor, tau: float, v_threshold: float, keep_membrane: bool) -> tuple[Tensor, Tensor]:
    """Spikes and the pre-spike membrane H of the multi-step LIF, in one pass.

    Args:
        x_seq: input currents ``[T, ...]`` on the CPU, a dense ``[T, N]`` block (``layout.time_major_layout``).
        tau: membrane time constant.
        v_threshold: firing threshold; a step fires when H_t > v_threshold.
        keep_membrane: also return H (needed for the backward pass); otherwise an empty tensor is returned.

    Returns:
        ``(spikes, h_seq)`` with the dtype and strides of ``x_seq``; ``h_seq`` is empty unless ``keep_membrane``.
    """
    forward, _ = _functions(x_seq.dtype)
    spikes = torch.empty_like(x_seq)  # same layout as x (dense tensors keep their strides)
    # Inference needs no membrane record: skip writing it (a third of the kernel's memory traffic).
    h_seq = torch.empty_like(x_seq) if keep_membrane else x_seq.new_empty(0)
    if x_seq.numel() == 0:
        return spikes, h_seq
    steps = x_seq.shape[0]
    forward(
        x_seq.data_ptr(),
        spikes.data_ptr(),
        h_seq.data_ptr() if keep_membrane else None,
        steps,
        x_seq.numel() // steps,
        tau,
        v_threshold,
        torch.get_num_threads(),
    )
    return spikes, h_seq


def lif_backward(
    grad_spikes: Tensor,
    h_seq: Tensor,
    tau: float,
    v_threshold: float,
    surrogate: str,
    alpha: float,
    detach_reset: bool,
) -> Tensor:
    """Gradient of the inputs by backpropagation through time, in one pass backwards.

    Args:
        grad_spikes: gradient of the spikes, same dtype and strides as ``h_seq``.
        h_seq: the pre-spike membrane H saved by ``lif_forward``, ``[T, ...]``.
        tau: membrane time constant.
        v_threshold: firing threshold.
        surrogate: one of ``SURROGATES``.
        alpha: the surrogate's shape parameter.
        detach_reset: no gradient through the reset term.

    Returns:
        The gradient of the input currents, ``[T, ...]`` with the dtype and strides of ``h_seq``.
    """
    if surrogate not in SURROGATES:
        raise ValueError(f"CPU LIF kernel: unknown surrogate {surrogate!r}; it has {SURROGATES}")
    _, backward = _functions(h_seq.dtype)
    grad_x = torch.empty_like(h_seq)
    if h_seq.numel() == 0:
        return grad_x
    steps = h_seq.shape[0]
    backward(
        grad_spikes.data_ptr(),
        h_seq.data_ptr(),
        grad_x.data_ptr(),
        steps,
        h_seq.numel() // steps,
        tau,
        v_threshold,
        alpha,
        SURROGATES.index(surrogate),
        int(detach_reset),
        torch.get_num_threads(),
    )
    return grad_x
