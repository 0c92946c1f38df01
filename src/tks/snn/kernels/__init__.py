"""The CPU kernel of the fused LIF: C source compiled once with the system C compiler and loaded with ctypes.

The shared library is built on first use into ``<cache>/kernels/`` (``$TKS_CACHE`` or ``~/.cache/tks``), named by
a hash of the source, the compiler and the flags, and written atomically; later processes only load it. Processes
that need it at once (``torchrun`` ranks, parallel tests) compile it once: one holds a lock while the others wait.
Without a working C compiler (or with ``TKS_LIF_KERNEL=0``) ``load_lif_kernel`` returns None and the neuron falls
back to its eager PyTorch implementation, which computes the same thing more slowly. ``TKS_LIF_KERNEL=0`` also
turns off the Triton kernels used for CUDA tensors (``tks.snn.neuron.lif_backend`` is the rule).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import subprocess
import sysconfig
import warnings
from functools import cache
from pathlib import Path

import torch

from tks.locks import build_lock, partial_path, remove_dead_partials

SOURCE = Path(__file__).with_name("lif_cpu.c")
# -ffp-contract=off: no fused multiply-adds, so the kernel rounds exactly as the eager PyTorch ops do.
FLAGS = ["-O3", "-shared", "-fPIC", "-ffp-contract=off", "-std=c99"]
SUFFIXES = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}


def cache_root() -> Path:
    """Folder for files tks builds once and reuses: ``$TKS_CACHE``, else ``~/.cache/tks``."""
    return Path(os.environ.get("TKS_CACHE") or Path.home() / ".cache" / "tks")


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def _build(target: Path, openmp: bool) -> None:
    with build_lock(target, None):  # silent: a compile takes seconds
        if target.exists():  # compiled by another process while this one waited
            return
        remove_dead_partials(target)
        tmp = partial_path(target)
        try:
            flags = FLAGS + (["-fopenmp"] if openmp else [])
            subprocess.run([*_compiler(), *flags, str(SOURCE), "-o", str(tmp), "-lm"], check=True, capture_output=True)
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


@cache
def load_lif_kernel() -> ctypes.CDLL | None:
    """The compiled kernel library, or None where it cannot be built (the caller then uses eager PyTorch)."""
    if os.environ.get("TKS_LIF_KERNEL", "1") == "0":
        return None
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(_compiler() + FLAGS).encode()).hexdigest()[:16]
    errors = []
    for openmp in (True, False):  # e.g. Apple clang has no OpenMP: build single-threaded instead
        target = cache_root() / "kernels" / f"lif_cpu-{key}{'-omp' if openmp else ''}.so"
        try:
            if not target.exists():
                _build(target, openmp)
            return _bind(ctypes.CDLL(str(target)))
        except (OSError, subprocess.CalledProcessError, AttributeError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            errors.append(f"{exc} {stderr.decode(errors='replace')[:200]}".strip())
    warnings.warn(
        "tks: could not build the fused LIF CPU kernel, using the slower PyTorch implementation "
        f"(set CC to a C compiler to fix): {errors[-1]}",
        RuntimeWarning,
        stacklevel=2,
    )
    return None
