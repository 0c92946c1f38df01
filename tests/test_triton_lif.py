"""The Triton LIF kernels (tks.snn.backends.triton_lif), run on CPU tensors in Triton's interpreter.

Triton decides at ``@triton.jit`` time whether a kernel is compiled or interpreted (``TRITON_INTERPRET=1``), so the
fixture below loads a private copy of the module with the variable set; the ``triton_lif`` that the neuron
imports is left alone, and bare ``pytest`` behaves the same whether or not the variable is set. (This works because
the kernels call only Triton builtins; see the module's docstring.)

Tolerances: float32 must equal the oracle of tests/lif_oracle.py bit for bit (same operations in the same order)
and the autograd reference to 1e-6 absolute. bfloat16 and float16 must equal bit for bit what their stated semantics
give (float32 arithmetic and state, outputs rounded to nearest even). Against float64 on the same rounded inputs, at
most 2% of spikes may flip (float16: 0.5%); where a neuron's whole spike train agrees, H must agree within the
dtype's unit roundoff (2^-8 bfloat16, 2^-11 float16, relative and absolute) and the input gradient within 0.05
(float16: 0.01) absolute.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lif_oracle import oracle_backward, oracle_forward

from tks.snn import LIF, backends, choose_backend, lif_reference, make_surrogate
from tks.snn.backends import fused

SOURCE = Path(backends.__file__).with_name("triton_lif.py")
SURROGATES = ["piecewise_quadratic", "atan"]
# (tau, v_threshold, alpha): the official neuron, and values that are not powers of two, so that rounding matters
SETTINGS = [(2.0, 0.5, 2.0), (1.7, 0.3, 1.3)]
LOW_PRECISION = [torch.bfloat16, torch.float16]


def _load_triton_lif(interpret: bool, source: Path = SOURCE):
    """A fresh copy of tks/snn/backends/triton_lif.py (or ``source``), kernels interpreted (or compiled) whatever
    the environment."""
    pytest.importorskip("triton", reason="triton is not installed")
    # Triton's own library is decorated when triton.language is first imported, and it must stay in the process's
    # mode (Triton checks that later): import it before the variable changes, so that only this copy is affected.
    pytest.importorskip("triton.language")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1" if interpret else "0")
        # The module's own name (the copy is not put in sys.modules): mutation testing (tools/mutants.py) finds which
        # tests run a function by its module's name.
        name = "tks.snn.backends.triton_lif" if source == SOURCE else f"_{source.stem}"
        spec = importlib.util.spec_from_file_location(name, source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kernels():
    triton = pytest.importorskip("triton", reason="triton is not installed")
    pytest.importorskip("triton.runtime.interpreter", reason="Triton's interpreter cannot be imported")
    # The tool first: where this Triton's interpreter cannot run a plain kernel of the same shape, skip and say so.
    probe = _load_triton_lif(interpret=True, source=Path(__file__).with_name("triton_probe.py"))
    x = torch.randint(-9, 10, (3, 37)).float()  # small integers: every order of summation is exact
    try:
        works = torch.equal(probe.running_sum(x), x.cumsum(0))
    except Exception as exc:  # noqa: BLE001 - whatever the interpreter raises
        works, why = False, f"{type(exc).__name__}: {str(exc)[:120]}"
    else:
        why = "a wrong running sum"
    if not works:
        pytest.skip(f"Triton {triton.__version__}'s interpreter fails a plain kernel (numpy {np.__version__}): {why}")
    return _load_triton_lif(interpret=True)


def _inputs(steps: int, layout: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Input currents [T, 2, 3, 4, 5], scaled so that neurons fire and reset within a few steps."""
    x = torch.randn(steps, 2, 3, 4, 5) * 0.8 + 0.4
    if layout == "channels_last":  # as PerStep hands it over: [T*B, C, H, W] channels-last, unflattened
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (steps, 2))
        assert not x.is_contiguous()
    return x.to(dtype)


def _fp32_state_forward(x: torch.Tensor, tau: float, v_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' low-precision semantics, step by step: float32 membrane, H rounded to x's dtype, fire on it."""
    v = torch.zeros_like(x[0], dtype=torch.float32)
    spikes, membrane = [], []
    for x_t in x:
        h = v + (x_t.float() - v) / tau
        h_stored = h.to(x.dtype)
        fired = h_stored.float() > v_threshold
        spikes.append(fired.to(x.dtype))
        membrane.append(h_stored)
        v = h.masked_fill(fired, 0.0)
    return torch.stack(spikes), torch.stack(membrane)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("steps", [1, 2, 4, 7])
def test_float32_equals_the_oracle_and_autograd_reference(kernels, steps, layout):
    x = _inputs(steps, layout)
    grad = torch.randn_like(x)
    for tau, v_threshold, alpha in SETTINGS:
        spikes, h_seq = kernels.lif_forward(x, tau, v_threshold, True)
        oracle_spikes, oracle_h = oracle_forward(x, tau, v_threshold)
        assert spikes.stride() == h_seq.stride() == x.stride()  # written in the input's layout, no copy
        assert torch.equal(spikes, oracle_spikes) and torch.equal(h_seq, oracle_h)
        if steps > 1:
            assert 0.05 < spikes.mean() < 0.5  # real spikes and resets, not a silent or saturated layer
        no_membrane_spikes, empty = kernels.lif_forward(x, tau, v_threshold, False)
        assert torch.equal(no_membrane_spikes, spikes) and empty.numel() == 0
        for surrogate in SURROGATES:
            sur = make_surrogate(surrogate, alpha)
            for detach_reset in (True, False):
                grad_x = kernels.lif_backward(grad, h_seq, tau, v_threshold, surrogate, alpha, detach_reset)
                assert grad_x.stride() == x.stride()
                oracle = oracle_backward(grad, h_seq, tau, v_threshold, sur, detach_reset)
                assert torch.equal(grad_x, oracle), (surrogate, detach_reset, tau)
                a = x.clone().requires_grad_()
                ref_spikes, _ = lif_reference(
                    a, tau=tau, v_threshold=v_threshold, surrogate=sur, detach_reset=detach_reset
                )
                ref_spikes.backward(grad)
                assert torch.equal(spikes, ref_spikes)
                torch.testing.assert_close(grad_x, a.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("steps", [1, 2, 4, 7])
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_keeps_float32_state(kernels, dtype, steps, layout):
    x = _inputs(steps, layout, dtype)
    grad = torch.randn_like(x)
    for tau, v_threshold, alpha in SETTINGS:
        spikes, h_seq = kernels.lif_forward(x, tau, v_threshold, True)
        assert spikes.dtype == h_seq.dtype == dtype and spikes.stride() == x.stride()
        expected_spikes, expected_h = _fp32_state_forward(x, tau, v_threshold)
        assert torch.equal(spikes, expected_spikes) and torch.equal(h_seq, expected_h)
        # Against float64 on the same (rounded) inputs: few flips; elsewhere within rounding.
        exact_spikes, _ = oracle_forward(x.double(), tau, v_threshold)
        flips = (spikes.double() != exact_spikes).double().mean()
        assert flips <= (0.02 if dtype == torch.bfloat16 else 0.005)
        agree = (spikes.double() == exact_spikes).flatten(1).all(0)  # neurons whose whole spike train agrees
        assert agree.double().mean() > 0.9
        exact_h = oracle_forward(x.double(), tau, v_threshold)[1].flatten(1)[:, agree]
        ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11  # relative spacing of the dtype just below 1
        torch.testing.assert_close(h_seq.double().flatten(1)[:, agree], exact_h, rtol=ulp, atol=ulp)
        for surrogate in SURROGATES:
            sur = make_surrogate(surrogate, alpha)
            for detach_reset in (True, False):
                grad_x = kernels.lif_backward(grad, h_seq, tau, v_threshold, surrogate, alpha, detach_reset)
                assert grad_x.dtype == dtype
                # float32 arithmetic on the stored values, then one rounding: the oracle in float32 exactly
                expected = oracle_backward(grad.float(), h_seq.float(), tau, v_threshold, sur, detach_reset)
                assert torch.equal(grad_x, expected.to(dtype)), (surrogate, detach_reset, tau)
                a = x.double().requires_grad_()
                lif_reference(a, tau=tau, v_threshold=v_threshold, surrogate=sur, detach_reset=detach_reset)[
                    0
                ].backward(grad.double())
                tolerance = 0.05 if dtype == torch.bfloat16 else 0.01
                torch.testing.assert_close(
                    grad_x.double().flatten(1)[:, agree], a.grad.flatten(1)[:, agree], rtol=0, atol=tolerance
                )


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
def test_exactly_at_threshold_does_not_fire(kernels, dtype):
    # tau = 2, V_th = 0.5; every input and H below is exact in all three dtypes, except where said.
    # neuron 0: H = 0.5                                  -> no spike (strict >)
    # neuron 1: H = 0.5 + 2^-8, the next bfloat16 above  -> spike
    # neuron 2: H = 0.25, 0.5, 0.5, 1.0                  -> silent at threshold twice, then fires
    # neuron 3: H = 2^-9, 0.5 + 2^-10                    -> in bfloat16 the stored H rounds to 0.5, so no spike
    #                                                       (backward sees only the stored H); the others fire
    x = torch.tensor(
        [[1.0, 1.0 + 2.0**-7, 0.5, 2.0**-8], [0.0, 0.0, 0.75, 1.0], [0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 1.5, 0.0]],
        dtype=dtype,
    )
    spikes, h_seq = kernels.lif_forward(x, 2.0, 0.5, True)
    fires_above_half = 0 if dtype == torch.bfloat16 else 1
    assert spikes.tolist() == [[0, 1, 0, 0], [0, 0, 0, fires_above_half], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert h_seq[:, 2].tolist() == [0.25, 0.5, 0.5, 1.0] and h_seq[0, :2].tolist() == [0.5, 0.5 + 2.0**-8]
    assert h_seq[1, 3].item() == (0.5 if dtype == torch.bfloat16 else 0.5 + 2.0**-10)
    grad = torch.ones_like(x)
    for surrogate in SURROGATES:
        for detach_reset in (True, False):
            grad_x = kernels.lif_backward(grad, h_seq, 2.0, 0.5, surrogate, 2.0, detach_reset)
            sur = make_surrogate(surrogate, 2.0)
            expected = oracle_backward(grad.float(), h_seq.float(), 2.0, 0.5, sur, detach_reset).to(dtype)
            assert torch.equal(grad_x, expected)


def test_several_programs_and_a_partial_block(kernels):
    x = torch.randn(3, 2 * kernels.BLOCK + 37)  # three programs, the last one mostly masked
    spikes, h_seq = kernels.lif_forward(x, 2.0, 0.5, True)
    oracle_spikes, oracle_h = oracle_forward(x, 2.0, 0.5)
    assert torch.equal(spikes, oracle_spikes) and torch.equal(h_seq, oracle_h)
    grad = torch.randn_like(x)
    grad_x = kernels.lif_backward(grad, h_seq, 2.0, 0.5, "atan", 2.0, False)
    assert torch.equal(grad_x, oracle_backward(grad, h_seq, 2.0, 0.5, make_surrogate("atan", 2.0), False))


@pytest.mark.parametrize("shape", [(5,), (1,), (1, 1)])
def test_the_smallest_inputs(kernels, shape):
    """One neuron over time ([T], T=1, one element), against the oracle."""
    x = torch.rand(shape) * 1.6
    spikes, h_seq = kernels.lif_forward(x, 2.0, 0.5, True)
    oracle_spikes, oracle_h = oracle_forward(x, 2.0, 0.5)
    assert spikes.shape == x.shape and torch.equal(spikes, oracle_spikes) and torch.equal(h_seq, oracle_h)
    grad = torch.randn_like(x)
    grad_x = kernels.lif_backward(grad, h_seq, 2.0, 0.5, "atan", 2.0, True)
    assert torch.equal(grad_x, oracle_backward(grad, h_seq, 2.0, 0.5, make_surrogate("atan", 2.0), True))


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 0, 4)])
def test_empty_inputs_give_empty_outputs(kernels, shape):
    x = torch.zeros(shape)  # an empty batch: PyTorch gives such tensors degenerate strides
    spikes, h_seq = kernels.lif_forward(x, 2.0, 0.5, True)
    assert spikes.shape == h_seq.shape == x.shape
    assert kernels.lif_backward(torch.zeros(shape), h_seq, 2.0, 0.5, "atan", 2.0, True).shape == x.shape


def test_launch_functions_refuse_what_the_kernels_cannot_read(kernels):
    with pytest.raises(TypeError, match=r"^triton LIF: x_seq must be one of \(torch.float32, .*got torch.float64$"):
        kernels.lif_forward(torch.zeros(2, 3, dtype=torch.float64), 2.0, 0.5, True)
    with pytest.raises(ValueError, match="^triton LIF: x_seq must be a dense"):  # batch outermost: steps mixed up
        kernels.lif_forward(torch.zeros(3, 2, 4).transpose(0, 1), 2.0, 0.5, True)
    with pytest.raises(ValueError, match=r"^triton LIF: x_seq must be a dense \[T, N\] block .* got shape \(\)"):
        kernels.lif_forward(torch.tensor(1.0), 2.0, 0.5, True)  # no time axis
    with pytest.raises(ValueError, match="^triton LIF: grad_spikes must be a dense"):  # as .sum().backward() gives
        kernels.lif_backward(torch.ones(3).expand(2, 3), torch.zeros(2, 3), 2.0, 0.5, "atan", 2.0, True)
    with pytest.raises(TypeError, match="^triton LIF: h_seq must be one of"):
        kernels.lif_backward(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64), 2.0, 0.5, "atan", 2.0, True)
    with pytest.raises(TypeError, match="^triton LIF: grad_spikes must be one of"):
        kernels.lif_backward(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3), 2.0, 0.5, "atan", 2.0, True)
    h_seq = _inputs(2, "channels_last")
    message = "^triton LIF: grad_spikes must have the shape and strides of h_seq, got "
    with pytest.raises(ValueError, match=message):  # both dense, but elements in different orders
        kernels.lif_backward(h_seq.contiguous(), h_seq, 2.0, 0.5, "atan", 2.0, True)
    with pytest.raises(ValueError, match="unknown surrogate"):
        kernels.lif_backward(h_seq, h_seq, 2.0, 0.5, "sigmoid", 2.0, True)


def test_lif_module_through_the_triton_path(kernels, monkeypatch):
    # The custom operators' glue (layout, gradient copy, autograd, torch.compile) with the Triton kernels swapped in
    # for the CPU kernel: the interpreter runs them on CPU tensors, so the rule is forced for this test.
    x = torch.randn(4, 2, 3, 5, 5)
    layouts = {
        "contiguous": x,
        "channels_last": x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2)),
        "batch_outermost": x.transpose(0, 1).contiguous().transpose(0, 1),
    }
    atan = make_surrogate("atan", 2.0)
    lif = LIF(surrogate=atan, detach_reset=False)
    expected = {}
    for name, xx in layouts.items():
        spikes, h_seq = oracle_forward(xx, 2.0, 0.5)
        expected[name] = (spikes, oracle_backward(torch.ones_like(h_seq), h_seq, 2.0, 0.5, atan, False))
    monkeypatch.setattr(backends, "choose_backend", lambda device, dtype, engine, surrogate: "triton")
    monkeypatch.setattr(fused, "kernels_for", lambda x: kernels)
    for name, xx in layouts.items():
        a = xx.clone().requires_grad_()
        out = lif(a)
        out.sum().backward()  # an expanded gradient, which the kernels read only after a copy
        assert out.stride() == fused.time_major_layout(xx).stride(), name  # the input's, unless it had to be copied
        assert torch.equal(out, expected[name][0]) and torch.equal(a.grad, expected[name][1]), name
    torch._dynamo.reset()
    compiled = torch.compile(lif, fullgraph=True, backend="aot_eager")  # one node per op, no graph break
    a = layouts["channels_last"].clone().requires_grad_()
    out = compiled(a)
    out.sum().backward()
    assert torch.equal(out, expected["channels_last"][0]) and torch.equal(a.grad, expected["channels_last"][1])
    torch._dynamo.reset()


def test_dispatch_rule_picks_triton_only_for_cuda_tensors(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tks.snn.backends.cpu_kernel import load_lif_kernel

    pq = make_surrogate("piecewise_quadratic", 2.0)
    has_triton = importlib.util.find_spec("triton") is not None and os.environ.get("TKS_LIF_KERNEL", "1") != "0"
    with FakeTensorMode():  # CUDA tensors without a GPU: the rule looks only at device and dtype
        cuda = [torch.empty(4, 8, device="cuda", dtype=dtype) for dtype in (*LOW_PRECISION, torch.float32)]
        cuda_double = torch.empty(4, 8, device="cuda", dtype=torch.float64)
    for tensor in cuda:
        assert choose_backend(tensor.device, tensor.dtype, "tks", pq) == ("triton" if has_triton else "autograd")
    assert choose_backend(cuda_double.device, cuda_double.dtype, "tks", pq) == "autograd"
    cpu_kernel = "cpu_kernel" if load_lif_kernel() is not None else "autograd"
    for dtype in (torch.float32, torch.float64, torch.bfloat16):  # the CPU path is unchanged by triton being there
        assert choose_backend(torch.device("cpu"), dtype, "tks", pq) == cpu_kernel
    monkeypatch.setattr(fused, "triton_kernels", lambda: None)  # as without triton
    assert all(choose_backend(tensor.device, tensor.dtype, "tks", pq) == "autograd" for tensor in cuda)


def test_tks_works_without_triton():
    # In a process where `import triton` fails, tks imports, the neuron trains on the CPU and CUDA tensors would take
    # the autograd backend.
    code = """
import sys

class NoTriton:
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NoTriton())
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import tks
from tks.snn import LIF, choose_backend, make_surrogate

x = torch.full((3, 2), 0.6, requires_grad=True)
LIF()(x).sum().backward()
with FakeTensorMode():
    cuda = torch.empty(3, 2, device="cuda")
backend = choose_backend(cuda.device, cuda.dtype, "tks", make_surrogate("atan", 2.0))
print([round(g, 6) for g in x.grad[:, 0].tolist()], backend, "tks.snn.backends.triton_lif" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # H = 0.3, 0.45, 0.525 (fires); g' = 1.2, 1.8, 1.9; dL/dH = 2.575, 2.75, 1.9; dL/dI = dL/dH / tau
    assert result.stdout.strip() == "[1.2875, 1.375, 0.95] autograd False"


def test_kernels_compile_for_a_cuda_gpu():
    """Compiled for sm_90 (H200) without a GPU: the PTX has IEEE divisions, no fused multiply-adds, 16-byte accesses."""
    triton = pytest.importorskip("triton", reason="triton is not installed")
    if tuple(int(p) for p in triton.__version__.split(".")[:2]) < (3, 6):
        # ASTSource's arguments changed across releases; 3.6 is the oldest this test was seen to pass on (3.1: no)
        pytest.skip(f"compiling through ASTSource is written for Triton >= 3.6, not {triton.__version__}")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module = _load_triton_lif(interpret=False)
    aligned = [["tt.divisibility", 16]]  # what Triton assumes at launch for aligned pointers and N % 16 == 0
    options = module.COMPILE_OPTIONS  # those of every launch
    names = ("x_ptr", "spikes_ptr", "h_ptr", "steps", "n", "tau", "v_threshold")
    types = ("*bf16", "*bf16", "*bf16", "i32", "i32", "fp32", "fp32")
    signature = {**dict(zip(names, types, strict=True)), "STORE_MEMBRANE": "constexpr", "BLOCK": "constexpr"}
    constants = {"STORE_MEMBRANE": True, "BLOCK": module.BLOCK}
    attrs = {(i,): aligned for i in (0, 1, 2, 4)}
    source = ASTSource(module._lif_forward_kernel, signature, constants, attrs)
    forward = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
    names = ("grad_spikes_ptr", "h_ptr", "grad_x_ptr", "steps", "n", "last_step_offset", "tau", "v_threshold")
    names += ("alpha", "alpha_squared", "half_alpha", "atan_scale")
    types = ("*fp32", "*fp32", "*fp32", "i32", "i32", "i64", *["fp32"] * 6)
    signature = {
        **dict(zip(names, types, strict=True)),
        **dict.fromkeys(("SURROGATE", "DETACH_RESET", "BLOCK"), "constexpr"),
    }
    constants = {"SURROGATE": "atan", "DETACH_RESET": False, "BLOCK": module.BLOCK}
    attrs = {(i,): aligned for i in (0, 1, 2, 4, 5)}
    source = ASTSource(module._lif_backward_kernel, signature, constants, attrs)
    backward = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
    for ptx in (forward, backward):
        assert "div.rn.f32" in ptx and not re.search(r"\bfma\.", ptx) and "div.full" not in ptx
        assert "ld.global.v4" in ptx and "st.global.v4" in ptx
    assert "cvt.rn.bf16" in forward


@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("triton") is None, reason="needs a CUDA GPU and triton"
)
@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
def test_cuda_tensors_run_the_triton_kernels(dtype):
    # On a GPU: the LIF module through the custom ops computes on CUDA what the CPU references above compute.
    x = _inputs(7, "channels_last", dtype)
    grad = torch.randn_like(x)
    assert choose_backend(x.cuda().device, dtype, "tks", make_surrogate("atan", 2.0)) == "triton"
    for tau, v_threshold, alpha in SETTINGS:
        forward = oracle_forward if dtype == torch.float32 else _fp32_state_forward
        expected_spikes, h_seq = forward(x, tau, v_threshold)
        for surrogate in SURROGATES:
            sur = make_surrogate(surrogate, alpha)
            for detach_reset in (True, False):
                a = x.cuda().requires_grad_()
                spikes = LIF(tau, v_threshold, sur, detach_reset)(a)
                spikes.backward(grad.cuda())
                expected = oracle_backward(grad.float(), h_seq.float(), tau, v_threshold, sur, detach_reset)
                assert spikes.stride() == x.stride()
                assert torch.equal(spikes.cpu(), expected_spikes)
                assert torch.equal(a.grad.cpu(), expected.to(dtype)), (surrogate, detach_reset, tau)
