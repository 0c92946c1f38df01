import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from concurrency import run_at_once

from tks.snn import LIF, SpikingJellyLIF, kernels, lif_reference, make_neuron, make_surrogate
from tks.snn.kernels import load_lif_kernel
from tks.snn.neuron import _lif_backward_eager, _lif_forward_eager

PQ2 = make_surrogate("piecewise_quadratic", 2.0)


def test_golden_trajectory_constant_input():
    # tau=2, V_th=0.5, I=0.6: H = 0.5 V + 0.3 -> 0.3, 0.45, 0.525 (fire, reset to 0), 0.3, 0.45, 0.525 (fire)
    x = torch.full((6, 1), 0.6, dtype=torch.float64)
    spikes, membrane = lif_reference(x, surrogate=PQ2)
    assert spikes.flatten().tolist() == [0, 0, 1, 0, 0, 1]
    torch.testing.assert_close(membrane.flatten(), torch.tensor([0.3, 0.45, 0.0, 0.3, 0.45, 0.0], dtype=torch.float64))
    assert LIF()(x).flatten().tolist() == [0, 0, 1, 0, 0, 1]


@pytest.mark.parametrize(("detach_reset", "expected"), [(True, [1.05, 0.9]), (False, [0.888, 0.9])])
def test_golden_gradient_two_steps(detach_reset, expected):
    # H1 = 0.3, H2 = 0.45; g'(H - 0.5) = 2 - 4|H - 0.5| = 1.2 and 1.8. L = S1 + S2.
    # dL/dH2 = 1.8 -> dL/dI2 = 0.9; dL/dV1 = 0.9; dV1/dH1 = 1 (detached) or 1 - H1 g'(H1) = 0.64.
    # dL/dH1 = 1.2 + 0.9 * dV1/dH1 -> dL/dI1 = 1.05 or 0.888.
    for neuron in (LIF(detach_reset=detach_reset), SpikingJellyLIF(detach_reset=detach_reset)):
        x = torch.full((2, 1), 0.6, dtype=torch.float64, requires_grad=True)
        neuron(x).sum().backward()
        torch.testing.assert_close(x.grad.flatten(), torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("surrogate", ["piecewise_quadratic", "atan"])
@pytest.mark.parametrize(("tau", "v_threshold"), [(2.0, 0.5), (1.5, 1.0), (4.0, 0.3)])
def test_fused_equals_autograd_reference(detach_reset, surrogate, tau, v_threshold):
    sur = make_surrogate(surrogate, 2.0)
    x = torch.randn(7, 3, 5, 4, dtype=torch.float64)
    w = torch.randn_like(x)
    a = x.clone().requires_grad_()
    s_ref, _ = lif_reference(a, tau=tau, v_threshold=v_threshold, surrogate=sur, detach_reset=detach_reset)
    (s_ref * w).sum().backward()
    b = x.clone().requires_grad_()
    s = LIF(tau=tau, v_threshold=v_threshold, surrogate=sur, detach_reset=detach_reset)(b)
    (s * w).sum().backward()
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("surrogate", ["piecewise_quadratic", "atan"])
def test_engines_agree_float32(seed, detach_reset, surrogate):
    torch.manual_seed(seed)
    x = torch.randn(8, 16, 6, 5, 5)
    w = torch.randn_like(x)
    out = {}
    for engine in ("tks", "spikingjelly"):
        xx = x.clone().requires_grad_()
        s = make_neuron(engine, surrogate=surrogate, detach_reset=detach_reset)()(xx)
        (s * w).sum().backward()
        out[engine] = (s, xx.grad)
    assert out["tks"][0].mean() > 0.05  # the test exercises real spikes and resets
    assert torch.equal(out["tks"][0], out["spikingjelly"][0])
    # same operations in the same order: bit-identical gradients with the official detached reset
    tolerance = 0.0 if detach_reset else 1e-6
    torch.testing.assert_close(out["tks"][1], out["spikingjelly"][1], rtol=0, atol=tolerance)


@pytest.mark.skipif(load_lif_kernel() is None, reason="no C compiler: the CPU kernel could not be built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("surrogate", ["piecewise_quadratic", "atan"])
def test_cpu_kernel_equals_eager_path(dtype, detach_reset, surrogate):
    sur = make_surrogate(surrogate, 2.0)
    x = torch.randn(6, 3000, dtype=dtype)
    grad = torch.randn_like(x)
    spikes, h = _lif_forward_eager(x, 2.0, 0.5)
    a = x.clone().requires_grad_()
    kernel_spikes = LIF(surrogate=sur, detach_reset=detach_reset)(a)
    kernel_spikes.backward(grad)
    assert torch.equal(kernel_spikes, spikes)
    assert torch.equal(a.grad, _lif_backward_eager(grad, h, 2.0, 0.5, sur, detach_reset))


@pytest.mark.skipif(load_lif_kernel() is None, reason="no C compiler: the CPU kernel could not be built")
def test_cpu_kernel_bfloat16_is_close_to_float64():
    x = torch.randn(4, 5000, dtype=torch.float64)
    exact = LIF()(x)
    low = LIF()(x.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16
    assert (low.double() != exact).float().mean() < 0.01  # rounding the input to bf16 flips a few spikes


def test_kernel_can_be_disabled_and_falls_back_without_a_compiler(tmp_path):
    code = (
        "import warnings, torch\n"
        "from tks.snn import LIF\n"
        "from tks.snn.kernels import load_lif_kernel\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    lib = load_lif_kernel()\n"
        "x = torch.full((3, 2), 0.6)\n"
        "print(lib is None, LIF()(x).flatten().tolist(), [str(m.message)[:60] for m in w])\n"
    )
    disabled = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TKS_LIF_KERNEL": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert disabled.stdout.startswith("True [0.0, 0.0, 0.0, 0.0, 1.0, 1.0] []")
    no_compiler = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "CC": "false", "TKS_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert no_compiler.stdout.startswith("True [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]")
    assert "could not build the fused LIF CPU kernel" in no_compiler.stdout


def load_fresh_kernel(cache, compiler):
    """``load_lif_kernel`` in a new cache with the given compiler command, as a process that never loaded it."""
    os.environ.update(TKS_CACHE=str(cache), CC=compiler)  # in this forked process only
    kernels.load_lif_kernel.cache_clear()
    return kernels.load_lif_kernel() is not None


@pytest.mark.skipif(load_lif_kernel() is None, reason="no C compiler: the CPU kernel could not be built")
def test_processes_loading_the_kernel_at_once_compile_it_once(tmp_path):
    compiles = tmp_path / "compiles.txt"
    compiler = tmp_path / "cc"  # the real compiler, noting each call and taking long enough for the calls to overlap
    real = " ".join(shlex.quote(part) for part in kernels._compiler())
    compiler.write_text(f'#!/bin/sh\necho $$ >> {shlex.quote(str(compiles))}\nsleep 0.5\nexec {real} "$@"\n')
    compiler.chmod(0o755)
    assert run_at_once(load_fresh_kernel, [(tmp_path / "cache", str(compiler))] * 3) == [True, True, True]
    (library,) = (tmp_path / "cache" / "kernels").iterdir()  # no temporary file, no lock file left
    alone = 1 if library.name.endswith("-omp.so") else 2  # without OpenMP one process compiles twice
    assert len(compiles.read_text().split()) == alone


@pytest.mark.parametrize("engine", ["tks", "spikingjelly"])
def test_stateless_same_input_same_output(engine):
    neuron = make_neuron(engine)()
    x = torch.randn(5, 4, 10)
    first = neuron(x)
    neuron(torch.randn(3, 2, 10) * 5)  # a different batch and T in between
    assert torch.equal(neuron(x), first)


def test_output_shape_and_dtype():
    x = torch.randn(3, 2, 4, 5, 5, dtype=torch.bfloat16)
    s = LIF()(x)
    assert s.shape == x.shape and s.dtype == torch.bfloat16
    assert set(s.unique().tolist()) <= {0.0, 1.0}


def test_make_neuron_errors():
    with pytest.raises(ValueError, match="unknown neuron engine 'cupy'"):
        make_neuron("cupy")
    with pytest.raises(ValueError, match="tau must be > 1"):
        make_neuron(tau=1.0)
    with pytest.raises(ValueError, match="v_threshold must be > 0"):
        LIF(v_threshold=0.0)


@dataclass(frozen=True)
class Triangle:
    """A user-defined surrogate: a triangle of half-width 1 and peak 1."""

    alpha: float = 1.0
    name: str = "triangle"

    def derivative(self, x):
        return (1.0 - x.abs()).clamp_min(0.0)


def test_user_defined_surrogate_matches_reference():
    x = torch.randn(5, 40, dtype=torch.float64)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    lif_reference(a, surrogate=Triangle())[0].sum().backward()
    LIF(surrogate=Triangle())(b).sum().backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-12)


def test_lif_compiles_without_graph_breaks():
    torch._dynamo.reset()
    lif = LIF()
    compiled = torch.compile(lif, fullgraph=True, backend="aot_eager")  # fullgraph: a graph break is an error
    x = torch.randn(4, 3, 8)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = compiled(a)
    out.sum().backward()
    lif(b).sum().backward()
    assert torch.equal(out, lif(x)) and torch.equal(a.grad, b.grad)


def test_channels_last_activations_keep_their_layout_and_values():
    x4 = torch.randn(3 * 2, 4, 5, 6).contiguous(memory_format=torch.channels_last)  # [T*B, C, H, W] channels-last
    x = x4.unflatten(0, (3, 2))  # what PerStep hands the neuron
    a, b = x.clone().requires_grad_(), x.contiguous().requires_grad_()
    out_a, out_b = LIF()(a), LIF()(b)
    assert out_a.stride() == x.stride()  # no conversion to contiguous
    assert torch.equal(out_a, out_b)
    grad = torch.randn_like(out_b)
    out_a.backward(grad)
    out_b.backward(grad)
    assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "batch_outermost"])
@pytest.mark.parametrize("keep_membrane", [False, True])
def test_lif_ops_fake_outputs_match_real_ones(layout, keep_membrane):
    # opcheck compares register_fake's outputs (shape, dtype, strides) with the real ones and checks the autograd
    # registration; a mismatch in strides would make compiled code downstream read the spikes in the wrong order.
    x = torch.randn(3, 2, 4, 5, 6)
    if layout == "channels_last":
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (3, 2))
    elif layout == "batch_outermost":
        x = x.transpose(0, 1).contiguous().transpose(0, 1)  # dense, but not a [T, N] block: outputs are contiguous
    args = (x.requires_grad_(keep_membrane), 2.0, 0.5, "atan", 2.0, False, keep_membrane)
    torch.library.opcheck(torch.ops.tks.lif_forward.default, args)
    _, h_seq = torch.ops.tks.lif_forward(*args)
    if keep_membrane:
        grad = torch.randn(3, 2, 4, 5, 6)  # contiguous, whatever layout the membrane has
        torch.library.opcheck(torch.ops.tks.lif_backward.default, (grad, h_seq.detach(), 2.0, 0.5, "atan", 2.0, False))
