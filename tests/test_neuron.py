import importlib.util
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from concurrency import run_at_once
from lif_oracle import oracle_backward, oracle_forward

from tks.snn import LIF, ATan, choose_backend, lif_reference, make_neuron, make_surrogate
from tks.snn.backends import cpu_kernel
from tks.snn.backends.cpu_kernel import load_lif_kernel

PQ2 = make_surrogate("piecewise_quadratic", 2.0)
HAS_SPIKINGJELLY = importlib.util.find_spec("spikingjelly") is not None
needs_spikingjelly = pytest.mark.skipif(not HAS_SPIKINGJELLY, reason="SpikingJelly is not installed (the extra)")


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
    engines = ["tks", "autograd"] + (["spikingjelly"] if HAS_SPIKINGJELLY else [])
    for neuron in (LIF(detach_reset=detach_reset, engine=engine) for engine in engines):
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
    # the kernels' order of operations is the step function's when the reset is detached (tests/lif_oracle.py)
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0 if detach_reset else 1e-12)


@needs_spikingjelly
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("surrogate", ["piecewise_quadratic", "atan"])
def test_engines_agree_float32(seed, detach_reset, surrogate):
    torch.manual_seed(seed)
    x = torch.randn(8, 16, 6, 5, 5)
    w = torch.randn_like(x)
    out = {}
    for engine in ("tks", "spikingjelly", "autograd"):
        xx = x.clone().requires_grad_()
        s = make_neuron(engine, surrogate=surrogate, detach_reset=detach_reset)()(xx)
        (s * w).sum().backward()
        out[engine] = (s, xx.grad)
    assert out["tks"][0].mean() > 0.05  # the test exercises real spikes and resets
    # same operations in the same order: bit-identical gradients with the official detached reset
    tolerance = 0.0 if detach_reset else 1e-6
    for engine in ("spikingjelly", "autograd"):
        assert torch.equal(out["tks"][0], out[engine][0])
        torch.testing.assert_close(out["tks"][1], out[engine][1], rtol=0, atol=tolerance)


@pytest.mark.skipif(load_lif_kernel() is None, reason="no C compiler: the CPU kernel could not be built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("surrogate", ["piecewise_quadratic", "atan"])
def test_cpu_kernel_equals_the_oracle(dtype, detach_reset, surrogate):
    sur = make_surrogate(surrogate, 2.0)
    x = torch.randn(6, 3000, dtype=dtype)
    grad = torch.randn_like(x)
    spikes, h = oracle_forward(x, 2.0, 0.5)
    a = x.clone().requires_grad_()
    kernel_spikes = LIF(surrogate=sur, detach_reset=detach_reset)(a)
    kernel_spikes.backward(grad)
    assert torch.equal(kernel_spikes, spikes)
    assert torch.equal(a.grad, oracle_backward(grad, h, 2.0, 0.5, sur, detach_reset))


@pytest.mark.skipif(load_lif_kernel() is None, reason="no C compiler: the CPU kernel could not be built")
def test_cpu_kernel_bfloat16_is_close_to_float64():
    x = torch.randn(4, 5000, dtype=torch.float64)
    exact = LIF()(x)
    low = LIF()(x.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16
    assert (low.double() != exact).float().mean() < 0.01  # rounding the input to bf16 flips a few spikes


@pytest.mark.slow
def test_kernel_can_be_disabled_and_falls_back_without_a_compiler(tmp_path):
    code = (
        "import warnings, torch\n"
        "from tks.snn import LIF, choose_backend, make_surrogate\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    backend = choose_backend(torch.device('cpu'), torch.float32, 'tks', make_surrogate('atan', 2.0))\n"
        "x = torch.full((3, 2), 0.6)\n"
        "print(backend, LIF()(x).flatten().tolist(), [(m.category.__name__, str(m.message)[:47]) for m in w])\n"
    )
    disabled = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TKS_LIF_KERNEL": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert disabled.stdout.strip() == "autograd [0.0, 0.0, 0.0, 0.0, 1.0, 1.0] []"  # nothing built, no warning
    no_compiler = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "CC": "false", "TKS_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    warning = "('TKSWarning', 'could not build the fused LIF CPU kernel (false')"
    assert no_compiler.stdout.strip() == f"autograd [0.0, 0.0, 0.0, 0.0, 1.0, 1.0] [{warning}]"


# The rule of tks.snn.backends, case by case: (device, dtype, engine, surrogate) -> backend, with both kernels there.
# "own": Triangle (below), a surrogate of the user's.
RULE = [
    ("cpu", torch.float32, "tks", PQ2, "cpu_kernel"),
    ("cpu", torch.float64, "tks", PQ2, "cpu_kernel"),
    ("cpu", torch.bfloat16, "tks", PQ2, "cpu_kernel"),
    ("cpu", torch.float16, "tks", PQ2, "autograd"),  # no float16 C kernel
    ("cuda", torch.float32, "tks", PQ2, "triton"),
    ("cuda", torch.bfloat16, "tks", PQ2, "triton"),
    ("cuda", torch.float16, "tks", PQ2, "triton"),
    ("cuda", torch.float64, "tks", PQ2, "autograd"),  # no float64 Triton kernel
    ("meta", torch.float32, "tks", PQ2, "autograd"),  # other devices (meta: the preflight's shape checks)
    ("mps", torch.float32, "tks", PQ2, "autograd"),
    ("cpu", torch.float32, "autograd", PQ2, "autograd"),
    ("cuda", torch.bfloat16, "autograd", PQ2, "autograd"),
    ("cpu", torch.float32, "tks", "own", "autograd"),  # the kernels do not know its derivative
    ("cuda", torch.float32, "tks", "own", "autograd"),
    ("cpu", torch.float32, "spikingjelly", PQ2, "spikingjelly"),
    ("cuda", torch.float16, "spikingjelly", PQ2, "spikingjelly"),
]


@pytest.fixture
def both_kernels(monkeypatch):
    """The rule's view of a machine where the C kernel builds and triton imports (whatever this one has)."""
    from types import SimpleNamespace

    from tks.snn.backends import fused

    monkeypatch.delenv("TKS_LIF_KERNEL", raising=False)
    monkeypatch.setattr(cpu_kernel, "load_lif_kernel", lambda: object())
    triton = SimpleNamespace(DTYPES=(torch.float32, torch.bfloat16, torch.float16))  # triton_lif.DTYPES, checked below
    monkeypatch.setattr(fused, "triton_kernels", lambda: triton)


@pytest.mark.parametrize(("device", "dtype", "engine", "surrogate", "expected"), RULE)
def test_backend_rule_picks_the_documented_backend(both_kernels, device, dtype, engine, surrogate, expected):
    surrogate = Triangle() if surrogate == "own" else surrogate
    assert choose_backend(torch.device(device), dtype, engine, surrogate) == expected


@pytest.mark.parametrize(("device", "dtype", "engine", "surrogate", "expected"), RULE)
def test_backend_rule_without_the_kernels_falls_back_to_autograd(
    both_kernels, monkeypatch, device, dtype, engine, surrogate, expected
):
    surrogate = Triangle() if surrogate == "own" else surrogate
    fallback = "autograd" if expected in ("cpu_kernel", "triton") else expected
    monkeypatch.setenv("TKS_LIF_KERNEL", "0")
    assert choose_backend(torch.device(device), dtype, engine, surrogate) == fallback
    monkeypatch.delenv("TKS_LIF_KERNEL")
    from tks.snn.backends import fused

    monkeypatch.setattr(cpu_kernel, "load_lif_kernel", lambda: None)  # no C compiler
    monkeypatch.setattr(fused, "triton_kernels", lambda: None)  # no triton
    assert choose_backend(torch.device(device), dtype, engine, surrogate) == fallback


def test_backend_rule_on_this_machine_and_on_fake_cuda_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    has_triton = importlib.util.find_spec("triton") is not None and os.environ.get("TKS_LIF_KERNEL", "1") != "0"
    if has_triton:
        from tks.snn.backends import triton_lif

        assert set(triton_lif.DTYPES) == {torch.float32, torch.bfloat16, torch.float16}  # as the rule's table says
    assert set(cpu_kernel.DTYPES) == {torch.float32, torch.float64, torch.bfloat16}
    with FakeTensorMode():  # CUDA tensors without a GPU: the rule looks only at device and dtype
        cuda = torch.empty(4, 8, device="cuda", dtype=torch.bfloat16)
    assert choose_backend(cuda.device, cuda.dtype, "tks", PQ2) == ("triton" if has_triton else "autograd")
    cpu = torch.zeros(4, 8)
    assert choose_backend(cpu.device, cpu.dtype, "tks", PQ2) == ("cpu_kernel" if load_lif_kernel() else "autograd")


def test_models_verbose_prints_the_backend_rule(capsys):
    from tks.cli import main

    assert main(["models", "--verbose", "--in-channels", "1"]) == 0
    out = capsys.readouterr().out
    cpu_f32 = "cpu_kernel" if load_lif_kernel() is not None else "autograd"
    assert "neuron backends for engine 'tks'" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("  cpu ", "  cuda "))}
    assert rows["cpu"][0] == cpu_f32 and rows["cpu"][3] == "autograd"  # float32, float16
    assert "spiking_cnn" in out  # and the models, as without --verbose


@pytest.fixture
def fresh_kernel_load(monkeypatch, tmp_path):
    """``load_lif_kernel`` forgets the library it loaded, for a test that sets CC or TKS_CACHE; restored after."""
    monkeypatch.setenv("TKS_CACHE", str(tmp_path / "cache"))
    cpu_kernel.load_lif_kernel.cache_clear()
    yield
    monkeypatch.undo()  # the real compiler and cache first, so that the next load finds the real library again
    cpu_kernel.load_lif_kernel.cache_clear()


def test_failed_kernel_build_warns_one_line_and_falls_back_to_autograd(fresh_kernel_load, monkeypatch, capsys):
    from tks.cli import main
    from tks.errors import TKSWarning

    monkeypatch.setenv("CC", "false")  # a "compiler" that fails at once
    with pytest.warns(TKSWarning, match=r"could not build the fused LIF CPU kernel \(false exited with status 1\)"):
        assert choose_backend(torch.device("cpu"), torch.float32, "tks", PQ2) == "autograd"
    x = torch.full((6, 1), 0.6, requires_grad=True)
    assert LIF()(x).flatten().tolist() == [0, 0, 1, 0, 0, 1]  # trains on, by the autograd backend
    cpu_kernel.load_lif_kernel.cache_clear()
    assert main(["models", "--verbose"]) == 0  # the CLI shows the warning as one line
    out, err = capsys.readouterr()
    assert err.startswith("tks: warning: could not build the fused LIF CPU kernel") and err.count("\n") == 1
    assert "cpu_kernel: not built" in out


def test_kernel_cache_key_holds_the_architecture_and_the_compiler():
    key = cpu_kernel.cache_key(["cc"], "gcc (Debian 12.2.0-14) 12.2.0", "x86_64")
    assert key.startswith("lif_cpu-x86_64-")
    others = [
        cpu_kernel.cache_key(["cc"], "gcc (Debian 12.2.0-14) 12.2.0", "aarch64"),  # another machine, same cache
        cpu_kernel.cache_key(["cc"], "gcc (Debian 13.1.0-1) 13.1.0", "x86_64"),  # the compiler upgraded
        cpu_kernel.cache_key(["clang"], "gcc (Debian 12.2.0-14) 12.2.0", "x86_64"),  # another compiler command
    ]
    assert len({key, *others}) == 4
    assert key == cpu_kernel.cache_key(["cc"], "gcc (Debian 12.2.0-14) 12.2.0", "x86_64")  # and stable


@pytest.mark.skipif(load_lif_kernel() is None, reason="no C compiler: the CPU kernel could not be built")
def test_kernel_built_for_another_architecture_is_not_loaded(fresh_kernel_load, monkeypatch, tmp_path):
    import platform

    machine = platform.machine()
    assert load_lif_kernel() is not None
    (built,) = (tmp_path / "cache" / "kernels").glob("*.so")
    assert built.name.startswith(f"lif_cpu-{machine}-")
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")  # as if the cache folder were shared with one
    cpu_kernel.load_lif_kernel.cache_clear()
    assert load_lif_kernel() is not None  # not the other machine's library: built anew under its own name
    names = sorted(p.name.split("-")[1] for p in (tmp_path / "cache" / "kernels").glob("*.so"))
    assert names == sorted([machine, "riscv64"])


def load_fresh_kernel(cache, compiler):
    """``load_lif_kernel`` in a new cache with the given compiler command, as a process that never loaded it."""
    os.environ.update(TKS_CACHE=str(cache), CC=compiler)  # in this forked process only
    cpu_kernel.load_lif_kernel.cache_clear()
    return cpu_kernel.load_lif_kernel() is not None


@pytest.mark.skipif(load_lif_kernel() is None, reason="no C compiler: the CPU kernel could not be built")
def test_processes_loading_the_kernel_at_once_compile_it_once(tmp_path):
    compiles = tmp_path / "compiles.txt"
    compiler = tmp_path / "cc"  # the real compiler, noting each build and taking long enough for builds to overlap
    real = " ".join(shlex.quote(part) for part in cpu_kernel._compiler())
    compiler.write_text(
        f'#!/bin/sh\n[ "$1" = --version ] && exec {real} "$@"\n'  # the version query (cache key) is no build
        f'echo $$ >> {shlex.quote(str(compiles))}\nsleep 0.5\nexec {real} "$@"\n'
    )
    compiler.chmod(0o755)
    assert run_at_once(load_fresh_kernel, [(tmp_path / "cache", str(compiler))] * 3) == [True, True, True]
    (library,) = (tmp_path / "cache" / "kernels").iterdir()  # no temporary file, no lock file left
    alone = 1 if library.name.endswith("-omp.so") else 2  # without OpenMP one process compiles twice
    assert len(compiles.read_text().split()) == alone


@pytest.mark.parametrize("engine", ["tks", "autograd", pytest.param("spikingjelly", marks=needs_spikingjelly)])
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


@pytest.mark.parametrize("engine", ["tks", "autograd"])
@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0, 4)], ids=["no steps", "empty batch"])
def test_empty_inputs_give_empty_spikes_and_gradients(engine, shape):
    x = torch.randn(shape, requires_grad=True)
    spikes = LIF(engine=engine)(x)
    spikes.sum().backward()
    assert spikes.shape == x.grad.shape == shape


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: make_neuron("cupy"), "UnknownNameError", "unknown neuron engine 'cupy'; choose one of: tks, autograd"),
        (lambda: make_neuron(surrogate="sigmoid"), "UnknownNameError", "unknown surrogate 'sigmoid'; choose one of"),
        (lambda: make_neuron(tau=1.0), "NeuronError", "LIF tau must be > 1 (the leak is 1 - 1/tau), got 1.0"),
        (lambda: make_neuron(tau=float("nan")), "NeuronError", "LIF tau must be > 1"),
        (lambda: LIF(v_threshold=0.0), "NeuronError", "LIF v_threshold must be > 0, got 0.0"),
        (lambda: make_neuron(surrogate_alpha=0.0), "SurrogateError", "surrogate alpha must be > 0, got 0.0"),
        (
            lambda: LIF(engine="spikingjelly", surrogate=Triangle()),
            "NeuronError",
            "neuron engine 'spikingjelly' has no surrogate 'triangle'",
        ),
    ],
)
def test_make_neuron_errors_are_one_line_project_errors(build, error, message):
    from tks.errors import TKSError

    with pytest.raises(TKSError) as caught:
        build()
    assert type(caught.value).__name__ == error
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_norm_error_is_one_line_project_error():
    from tks.errors import UnknownNameError
    from tks.snn.layers import make_norm

    with pytest.raises(UnknownNameError, match="unknown normalisation 'layer'; choose one of: bn, tdbn, tebn"):
        make_norm("layer")


@pytest.fixture
def no_spikingjelly(without):
    without("spikingjelly")


def test_spikingjelly_engine_without_spikingjelly_is_one_line(no_spikingjelly):
    from tks.extras import MissingExtraError

    with pytest.raises(MissingExtraError) as caught:
        make_neuron("spikingjelly")
    assert str(caught.value) == (
        "neuron engine 'spikingjelly': spikingjelly is not installed (pip install 'tks-snn[spikingjelly]')"
    )
    LIF()(torch.randn(3, 2))  # the other engines do not need it


def test_tks_trains_without_importing_spikingjelly():
    code = (
        "import sys, torch, tks\n"
        "model = tks.create_model('spiking_cnn', num_classes=3, in_channels=1)\n"
        "model(torch.rand(2, 4, 1, 8, 8)).sum().backward()\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'spikingjelly'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.neuron.engine=cupy", "model.neuron.engine must be one of"),
        ("model.neuron.surrogate=sigmoid", "model.neuron.surrogate must be one of"),
        ("model.neuron.tau=1.0", "model.neuron.tau must be > 1"),
        ("model.neuron.v_threshold=0", "model.neuron.v_threshold must be > 0"),
        ("model.norm=layer", "model.norm must be one of"),
        ("model.neuron.engine=spikingjelly", "neuron engine 'spikingjelly': spikingjelly is not installed"),
    ],
)
def test_neuron_errors_from_the_command_line_are_one_line(
    override, message, no_spikingjelly, tmp_path, monkeypatch, capsys
):
    from tks.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--set", override, "--set", "optim.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tks: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # stopped before any run


@dataclass(frozen=True)
class Triangle:
    """A user-defined surrogate, duck-typed: a triangle of half-width 1 and peak 1."""

    alpha: float = 1.0
    name: str = "triangle"

    def derivative(self, x):
        return (1.0 - x.abs()).clamp_min(0.0)


@dataclass(frozen=True)
class SteepATan(ATan):
    """A Surrogate subclass of the user's: ATan's family with another derivative, which no kernel computes."""

    name: str = "steep_atan"

    def derivative(self, x):
        return 2.0 * super().derivative(x)


@dataclass(frozen=True)
class RenamedATan(ATan):
    """A subclass that says the kernels compute its derivative (ATan's, unchanged)."""

    name: str = "renamed_atan"
    kernel: ClassVar[str | None] = "atan"


@pytest.mark.parametrize("surrogate", [Triangle(), SteepATan(alpha=2.0)], ids=["duck-typed", "subclass"])
def test_user_defined_surrogate_runs_the_autograd_backend(surrogate):
    assert choose_backend(torch.device("cpu"), torch.float64, "tks", surrogate) == "autograd"
    x = torch.randn(5, 40, dtype=torch.float64)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    lif_reference(a, surrogate=surrogate)[0].sum().backward()
    LIF(surrogate=surrogate)(b).sum().backward()
    assert torch.equal(b.grad, a.grad)
    if isinstance(surrogate, SteepATan):  # its own derivative was used, not ATan's
        c = x.clone().requires_grad_()
        LIF(surrogate=ATan(alpha=2.0))(c).sum().backward()
        assert not torch.equal(b.grad, c.grad)


def test_surrogate_subclass_declaring_a_kernel_keeps_it():
    assert SteepATan.kernel is None and RenamedATan.kernel == "atan"
    on_cpu = choose_backend(torch.device("cpu"), torch.float32, "tks", RenamedATan())
    assert on_cpu == ("cpu_kernel" if load_lif_kernel() is not None else "autograd")


@pytest.mark.parametrize("engine", ["tks", "autograd"])
def test_lif_compiles_without_graph_breaks(engine):
    torch._dynamo.reset()
    lif = LIF(engine=engine)
    compiled = torch.compile(lif, fullgraph=True, backend="aot_eager")  # fullgraph: a graph break is an error
    x = torch.randn(4, 3, 8)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = compiled(a)
    out.sum().backward()
    lif(b).sum().backward()
    assert torch.equal(out, lif(x)) and torch.equal(a.grad, b.grad)
    torch._dynamo.reset()


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


@pytest.mark.skipif(load_lif_kernel() is None, reason="no C compiler: the operators have no CPU kernel to run")
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


def test_the_kernel_backward_writes_no_zero_gradient_for_the_internal_membrane():
    if (
        choose_backend(torch.device("cpu"), torch.float32, "tks", make_surrogate("piecewise_quadratic", 2.0))
        != "cpu_kernel"
    ):
        pytest.skip("the C kernel did not build here")
    x = torch.randn(4, 8, 16, 6, 6, requires_grad=True)
    spikes = LIF(engine="tks")(x)
    grad = torch.ones_like(spikes)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        spikes.backward(grad)
    fills = [e.key for e in prof.key_averages() if e.key in ("aten::fill_", "aten::zero_", "aten::zeros")]
    assert fills == []  # autograd used to fill a zero tensor of x's size for the membrane output it never uses
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_make_neuron_defaults_are_the_official_neuron():
    lif = make_neuron()()
    assert (lif.tau, lif.v_threshold, lif.detach_reset, lif.engine) == (2.0, 0.5, True, "tks")
    assert lif.surrogate == make_surrogate("piecewise_quadratic", 2.0)


def test_make_neuron_passes_every_setting_to_the_neuron():
    lif = make_neuron("autograd", tau=1.7, v_threshold=0.3, surrogate="atan", surrogate_alpha=1.3, detach_reset=False)()
    assert (lif.tau, lif.v_threshold, lif.detach_reset, lif.engine) == (1.7, 0.3, False, "autograd")
    assert lif.surrogate == ATan(alpha=1.3)


def test_lif_step_detaches_the_reset_unless_told():
    from tks.snn.lif import lif_step

    def input_gradient(**detach):
        x = torch.tensor([[0.9], [0.8], [0.7]], dtype=torch.float64, requires_grad=True)
        v, total = torch.zeros(1, dtype=torch.float64), 0
        for x_t in x:  # fires at the first step, so the reset takes part in the later ones
            spikes, v = lif_step(v, x_t, tau=2.0, v_threshold=0.4, surrogate=PQ2, **detach)
            total = total + spikes.sum() + v.sum()
        total.backward()
        return x.grad

    assert torch.equal(input_gradient(), input_gradient(detach_reset=True))
    assert not torch.equal(input_gradient(), input_gradient(detach_reset=False))


def test_autograd_engine_runs_the_reference_with_the_neurons_settings(monkeypatch):
    from tks.snn.backends import fused

    monkeypatch.setattr(fused, "lif_fused", lambda *args: pytest.fail("engine 'autograd' ran the fused kernels"))
    x = torch.rand(6, 3, 50, dtype=torch.float64)
    atan = ATan(alpha=1.3)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    spikes = LIF(tau=1.7, v_threshold=0.3, surrogate=atan, detach_reset=False, engine="autograd")(a)
    expected, _ = lif_reference(b, tau=1.7, v_threshold=0.3, surrogate=atan, detach_reset=False)
    assert torch.equal(spikes, expected)
    spikes.sum().backward()
    expected.sum().backward()
    assert torch.equal(a.grad, b.grad)
    assert not torch.equal(expected, lif_reference(x, surrogate=atan)[0])  # the settings matter for this input


@needs_spikingjelly
def test_spikingjelly_engine_runs_spikingjellys_node_which_fires_at_threshold():
    x = torch.full((2, 1, 3), 1.0)  # H_1 = 1.0 / tau = 0.5: exactly at the threshold
    assert LIF(engine="spikingjelly")(x)[0].tolist() == [[1.0, 1.0, 1.0]]  # SpikingJelly fires at >=
    assert LIF(engine="tks")(x)[0].tolist() == [[0.0, 0.0, 0.0]]  # the official neuron at >


@needs_spikingjelly
def test_spikingjelly_node_has_the_neurons_settings():
    from importlib import metadata

    from tks.snn.backends import spikingjelly

    node = spikingjelly.build_node(1.7, 0.3, ATan(alpha=1.3), False)
    assert (node.tau, node.v_threshold, node.v_reset, node.decay_input) == (1.7, 0.3, 0.0, True)
    assert (node.detach_reset, node.step_mode) == (False, "m")
    assert type(node.surrogate_function).__name__ == "ATan" and node.surrogate_function.alpha == 1.3
    assert spikingjelly.version() == metadata.version("spikingjelly")


def test_spikingjelly_engine_refuses_a_surrogate_it_lacks():
    from tks.snn.backends import spikingjelly
    from tks.snn.lif import NeuronError

    with pytest.raises(NeuronError) as caught:
        spikingjelly.build_node(2.0, 0.5, Triangle(), True)
    assert str(caught.value) == (
        "neuron engine 'spikingjelly' has no surrogate 'triangle' (it has piecewise_quadratic, atan); "
        "use engine 'tks' or 'autograd' for a surrogate of your own"
    )


@needs_spikingjelly
def test_spikingjelly_without_its_surrogates_names_the_engine(monkeypatch):
    import sys

    from tks.extras import MissingExtraError
    from tks.snn.backends import spikingjelly

    monkeypatch.setitem(sys.modules, "spikingjelly.activation_based.surrogate", None)
    with pytest.raises(MissingExtraError, match="^neuron engine 'spikingjelly': "):
        spikingjelly.build_node(2.0, 0.5, PQ2, True)


def test_surrogate_subclasses_run_in_the_kernels_only_when_they_say_so():
    # Defined here, not at import: the check runs when a class is made (Surrogate.__init_subclass__).
    @dataclass(frozen=True)
    class Steeper(ATan):
        name: str = "steeper"

        def derivative(self, x):
            return 3.0 * super().derivative(x)

    @dataclass(frozen=True)
    class Declared(ATan):
        name: str = "declared"
        kernel: ClassVar[str | None] = "atan"

    assert Steeper.kernel is None and Declared.kernel == "atan" and ATan.kernel == "atan"
    cpu = torch.device("cpu")
    assert choose_backend(cpu, torch.float32, "tks", Steeper()) == "autograd"
    assert choose_backend(cpu, torch.float32, "tks", Declared()) == choose_backend(cpu, torch.float32, "tks", ATan())


def test_a_surrogate_without_alpha_is_allowed_and_alpha_is_checked():
    from tks.snn.surrogate import Surrogate, SurrogateError

    @dataclass(frozen=True)
    class Box(Surrogate):
        name: str = "box"

        def derivative(self, x):
            return (x.abs() < 0.5).to(x.dtype)

    assert Box().kernel is None
    with pytest.raises(SurrogateError, match="surrogate alpha must be > 0, got 0.0"):
        ATan(alpha=0.0)
