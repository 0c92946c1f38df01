"""The C LIF kernel at its boundaries, against the pure-PyTorch definition, for every dtype it takes.

Each case calls the kernel itself (``cpu_kernel.lif_forward`` / ``lif_backward``, and through the custom operator
``tks::lif_forward`` where the wrapper matters) and compares it with two references:

* the oracle (``tests/lif_oracle.py``): the kernel's operation order in PyTorch ops. Forward in the input's dtype;
  backward in the kernel's compute dtype (float32 for bfloat16, whose kernel computes in float32 and rounds each
  stored value once), rounded to the dtype at the end. Kernel and oracle must agree bit for bit.
* the definition (``tks.snn.lif.lif_reference``, autograd through ``lif_step``): spikes and membrane bit for bit
  (the inputs are built so that every forward value is exact in the dtype); input gradients bit for bit in float32
  and float64 with the reset detached (``tks.snn.lif`` promises it), within ``assert_close``'s default tolerance
  with it attached (autograd sums the reset's term in another order), and in bfloat16 within a stated tolerance
  (autograd rounds H - vth and every product to bfloat16 where the kernel keeps float32; see ``check_kernel``).

Inputs sit exactly on the boundaries: tau and the threshold are powers of two, so a membrane H = x / tau (or one
leak step later) lands exactly on the threshold, on its neighbours (``nextafter``) or on the surrogate's support end.

Example:
    pytest tests/test_kernel_boundaries.py -q --durations=5
"""

import math

import pytest
import torch
from lif_oracle import oracle_backward, oracle_forward

from tks.snn import LIF, lif_reference, make_surrogate
from tks.snn.backends import choose_backend, cpu_kernel
from tks.snn.lif import NeuronError

pytestmark = pytest.mark.skipif(
    cpu_kernel.load_lif_kernel() is None,
    reason="the C LIF kernel is not loaded (no working C compiler, or TKS_LIF_KERNEL=0): nothing to test here",
)

DTYPES = cpu_kernel.DTYPES  # every dtype the kernel takes; the first test pins the set
SURROGATES = cpu_kernel.SURROGATES  # every surrogate formula the kernel implements
ALPHA = 2.0  # the official shape parameter; a power of two, so every surrogate value below is exact

by_dtype = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
by_surrogate = pytest.mark.parametrize("surrogate", SURROGATES)
by_detach = pytest.mark.parametrize("detach_reset", [True, False], ids=["detached", "attached"])


@pytest.fixture(autouse=True)
def _one_thread():
    # Every case here fits in one 512-element chunk of the kernel (or two), and chunks are independent, so the
    # thread count cannot change a result; but each parallel region waits for an idle second thread, which costs
    # a scheduler slice (~8 ms) per call on a busy 2-core machine. One thread keeps the file fast.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernel does its arithmetic in (lif_cpu.c: bfloat16 is computed in float32)."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def run_kernel(x, tau, vth, surrogate, alpha, detach_reset, grad):
    """Spikes, pre-spike membrane H and input gradient from the C kernel, called directly."""
    spikes, h = cpu_kernel.lif_forward(x, tau, vth, True)
    grad_x = cpu_kernel.lif_backward(grad, h, tau, vth, surrogate, alpha, detach_reset)
    return spikes, h, grad_x


def run_operator(x, tau, vth, surrogate, alpha, detach_reset, grad):
    """The same through the custom operator and autograd (the path ``LIF`` takes): the wrapper adds nothing."""
    leaf = x.clone().requires_grad_()
    spikes, h = torch.ops.tks.lif_forward(leaf, tau, vth, surrogate, alpha, detach_reset, True)
    spikes.backward(grad)
    return spikes.detach(), h.detach(), leaf.grad


def check_kernel(x, *, tau, vth, surrogate, alpha=ALPHA, detach_reset, grad=None):
    """Run the kernel on ``x`` and assert it equals the oracle, the definition and the operator path.

    Returns:
        The kernel's ``(spikes, h, grad_x)``, for the caller's explicit expectations.
    """
    grad = torch.ones_like(x) if grad is None else grad
    sur = make_surrogate(surrogate, alpha)
    spikes, h, grad_x = run_kernel(x, tau, vth, surrogate, alpha, detach_reset, grad)

    # The oracle: the kernel's own operation order, bit for bit.
    o_spikes, o_h = oracle_forward(x, tau, vth)
    work = compute_dtype(x.dtype)
    o_grad = oracle_backward(grad.to(work), h.to(work), tau, vth, sur, detach_reset).to(x.dtype)
    assert torch.equal(spikes, o_spikes), (spikes, o_spikes)
    assert torch.equal(h, o_h), (h, o_h)
    assert torch.equal(grad_x, o_grad), (grad_x, o_grad)
    lean_spikes, _ = cpu_kernel.lif_forward(x, tau, vth, False)  # inference writes no H: the same decisions
    assert torch.equal(lean_spikes, spikes)

    # The definition: lif_step under autograd. Its membrane is V (after the reset); the kernel keeps H (before).
    leaf = x.clone().requires_grad_()
    d_spikes, d_membrane = lif_reference(leaf, tau=tau, v_threshold=vth, surrogate=sur, detach_reset=detach_reset)
    d_spikes.backward(grad)
    assert torch.equal(spikes, d_spikes.detach())
    assert torch.equal(h.masked_fill(spikes.bool(), 0.0), d_membrane.detach())
    if x.dtype == torch.bfloat16:
        # Autograd rounds d = H - vth to bfloat16 (off by up to 2^-8 |d|) where the kernel keeps it in float32, so
        # g'(d) moves by up to about alpha^2 2^-8 |d| (both surrogates' slopes are below alpha^2), most visibly at
        # the support's end; each later product adds a rounding of 2^-8 relative.
        atol = alpha * alpha * 2.0**-8 * grad.abs().max().item() / tau
        torch.testing.assert_close(grad_x, leaf.grad, rtol=2.0**-6, atol=atol)
    elif detach_reset:
        assert torch.equal(grad_x, leaf.grad), (grad_x, leaf.grad)
    else:
        torch.testing.assert_close(grad_x, leaf.grad)  # autograd adds the reset's term in another order

    # The wrapper (custom operator + autograd registration) hands the same numbers through.
    op_spikes, op_h, op_grad = run_operator(x, tau, vth, surrogate, alpha, detach_reset, grad)
    assert torch.equal(op_spikes, spikes) and torch.equal(op_h, h) and torch.equal(op_grad, grad_x)
    return spikes, h, grad_x


def exact(values, dtype):
    """``values`` as a tensor of ``dtype``, asserting that no value was rounded (so a case is what it says)."""
    wide = torch.as_tensor(values, dtype=torch.float64)
    narrow = wide.to(dtype)
    assert torch.equal(narrow.double(), wide), f"{values} is not exact in {dtype}: the case is built wrongly"
    return narrow


def neighbours(value: float, dtype: torch.dtype) -> tuple[float, float, float]:
    """``(just below, value, just above)``: the adjacent representable numbers of ``dtype``."""
    v = torch.tensor(value, dtype=dtype)
    below = torch.nextafter(v, torch.tensor(-math.inf, dtype=dtype))
    above = torch.nextafter(v, torch.tensor(math.inf, dtype=dtype))
    return below.item(), v.item(), above.item()


def test_the_kernel_is_loaded_and_takes_exactly_these_dtypes():
    # Guards the parametrisation: a dtype added to (or dropped from) the kernel must show up here.
    assert set(DTYPES) == {torch.float32, torch.float64, torch.bfloat16}
    assert SURROGATES == ("piecewise_quadratic", "atan")
    for dtype, suffix in cpu_kernel.SUFFIXES.items():
        forward, backward = cpu_kernel._functions(dtype)  # the compiled symbols, not a Python fallback
        assert (forward.__name__, backward.__name__) == (f"lif_forward_{suffix}", f"lif_backward_{suffix}")
        for name in SURROGATES:
            assert choose_backend(torch.device("cpu"), dtype, "tks", make_surrogate(name, ALPHA)) == "cpu_kernel"
    with pytest.raises(RuntimeError, match="not available for torch.float16"):  # float16 runs autograd instead
        cpu_kernel.lif_forward(torch.zeros(2, 3, dtype=torch.float16), 2.0, 0.5, True)


@by_dtype
@by_surrogate
@by_detach
@pytest.mark.parametrize("tau", [2.0, 4.0])
def test_membrane_at_just_below_and_just_above_the_threshold(dtype, surrogate, detach_reset, tau):
    vth = 0.5
    below, at, above = neighbours(vth, dtype)
    half = vth / 2  # V_1 for the columns that reach their target one leak step later
    # Columns 0-2: H_1 = x_1 / tau is the target. Columns 3-5: H_1 = vth / 2 (no spike), then
    # H_2 = V_1 + (x_2 - V_1) / tau is the target. Every column then runs one more step, so that gradient flows
    # back through the target step (its dV/dH) from a later one.
    targets = [below, at, above]
    x1 = [tau * t for t in targets] + [tau * half] * 3
    x2 = [vth] * 3 + [half + tau * (t - half) for t in targets]
    x = torch.stack([exact(x1, dtype), exact(x2, dtype), exact([vth] * 6, dtype)])
    grad = exact([[1.0, 0.5, 0.25, 0.75, 1.0, 0.5]] * 3, dtype)
    spikes, h, _ = check_kernel(x, tau=tau, vth=vth, surrogate=surrogate, detach_reset=detach_reset, grad=grad)

    hit = torch.cat([h[0, :3], h[1, 3:]])
    assert hit.tolist() == targets * 2  # the membrane really sits on the boundary
    fired = torch.cat([spikes[0, :3], spikes[1, 3:]])
    assert fired.tolist() == [0.0, 0.0, 1.0] * 2  # strict ">": exactly at the threshold does not fire


@by_dtype
@by_surrogate
@by_detach
def test_threshold_that_the_dtype_cannot_represent(dtype, surrogate, detach_reset):
    # v_threshold = 0.3 is no binary fraction: a membrane equal to 0.3 rounded to the dtype must still not fire,
    # as the definition compares in the dtype (PyTorch rounds the Python threshold to bfloat16: 0.30078125).
    vth = 0.3
    h_at = torch.tensor(vth, dtype=dtype)
    x = (2.0 * h_at).reshape(1, 1)  # tau = 2: H_1 = x / 2 = the threshold in the dtype, exactly
    spikes, h, _ = check_kernel(x, tau=2.0, vth=vth, surrogate=surrogate, detach_reset=detach_reset)
    assert torch.equal(h, h_at.reshape(1, 1)) and spikes.item() == 0.0


@by_dtype
@by_surrogate
@by_detach
def test_reset_is_hard_to_zero_and_detach_reset_changes_only_gradients(dtype, surrogate, detach_reset):
    tau, vth = 2.0, 0.5
    # column 0: H = 0.625 fires, V = 0; H = 0.75 / 2 = 0.375 (a soft reset would give 0.4375, none 0.6875: fire)
    # column 1: H = 0.5 exactly does not fire and keeps V = 0.5; H = 0.5 + (1 - 0.5) / 2 = 0.75 fires
    # column 2: H = 1.0 fires, V = 0; H = 0.5 exactly after the reset does not fire (a soft reset would: 0.75)
    x = exact([[1.25, 1.0, 2.0], [0.75, 1.0, 1.0]], dtype)
    spikes, h, grad_x = check_kernel(x, tau=tau, vth=vth, surrogate=surrogate, detach_reset=detach_reset)
    assert h.tolist() == [[0.625, 0.5, 1.0], [0.375, 0.75, 0.5]]
    assert spikes.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert h.masked_fill(spikes.bool(), 0.0).tolist() == [[0.0, 0.5, 0.0], [0.375, 0.0, 0.5]]

    # The other reset setting: the same forward, another gradient where a spike's reset carries one.
    o_spikes, o_h, o_grad = run_operator(x, tau, vth, surrogate, ALPHA, not detach_reset, torch.ones_like(x))
    assert torch.equal(o_spikes, spikes) and torch.equal(o_h, h)
    assert o_grad[0, 0] != grad_x[0, 0]  # column 0 fired at step 1 and step 2 sends gradient back through V_1
    assert torch.equal(o_grad[1], grad_x[1])  # the last step has no later step: no reset term to detach
    if surrogate == "piecewise_quadratic":
        # By hand (alpha = 2): g'(H - 0.5) = 1.5 at both steps; dL/dH_2 = 1.5, dL/dI_2 = 0.75, dL/dV_1 = 0.75;
        # dV_1/dH_1 = [H_1 <= 0.5] = 0 (detached) or 0 - H_1 g' = -0.9375; dL/dI_1 = (1.5 + 0.75 dV_1/dH_1) / 2.
        assert grad_x[:, 0].tolist() == ([0.75, 0.75] if detach_reset else [0.3984375, 0.75])


@by_dtype
@by_surrogate
@by_detach
def test_tau_one_has_no_memory(dtype, surrogate, detach_reset):
    # tau = 1: the leak 1 - 1/tau is 0, so H_t = X_t and nothing crosses time (in the gradient neither:
    # G_{t-1} = dL/dH_t - dL/dH_t / 1 = 0). LIF refuses tau = 1; the kernel and lif_step compute it as written.
    with pytest.raises(NeuronError, match="tau must be > 1"):
        LIF(tau=1.0)
    vth = 0.5
    x = (torch.randint(-16, 17, (4, 64)) / 8).to(dtype)  # multiples of 1/8: every V + (X - V) is exact, some = vth
    x[:, 0] = vth  # at the threshold at every step
    grad = (torch.randint(1, 9, (4, 64)) / 8).to(dtype)
    spikes, h, grad_x = check_kernel(x, tau=1.0, vth=vth, surrogate=surrogate, detach_reset=detach_reset, grad=grad)
    assert torch.equal(h, x)
    assert torch.equal(spikes, (x > vth).to(dtype))
    work = compute_dtype(dtype)
    g = make_surrogate(surrogate, ALPHA).derivative(x.to(work) - vth)
    assert torch.equal(grad_x, (grad.to(work) * g).to(dtype))  # each step's own surrogate, nothing from later ones


@by_dtype
@by_surrogate
@by_detach
@pytest.mark.parametrize("tau", [1.5, 2.0])
def test_single_step(dtype, surrogate, detach_reset, tau):
    # T = 1: V_0 = 0, so H_1 = X / tau; there is no later step, so detach_reset cannot matter.
    x = (torch.rand(1, 4, 256, dtype=torch.float64) * tau).to(dtype)  # H = x / tau in [0, 1): around vth = 0.5
    grad = torch.randn_like(x)
    _, _, grad_x = check_kernel(x, tau=tau, vth=0.5, surrogate=surrogate, detach_reset=detach_reset, grad=grad)
    _, _, other = run_kernel(x, tau, 0.5, surrogate, ALPHA, not detach_reset, grad)
    assert torch.equal(grad_x, other)


@by_dtype
@by_surrogate
@by_detach
@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0, 4), (0,)], ids=["no steps", "empty batch", "nothing"])
def test_empty_inputs_give_empty_outputs_and_gradients(dtype, surrogate, detach_reset, shape):
    x = torch.zeros(shape, dtype=dtype)
    spikes, h = cpu_kernel.lif_forward(x, 2.0, 0.5, True)
    assert spikes.shape == h.shape == shape and spikes.dtype == h.dtype == dtype
    lean_spikes, lean_h = cpu_kernel.lif_forward(x, 2.0, 0.5, False)  # inference: no membrane kept
    assert lean_spikes.shape == shape and lean_h.numel() == 0
    grad_x = cpu_kernel.lif_backward(torch.ones_like(x), h, 2.0, 0.5, surrogate, ALPHA, detach_reset)
    assert grad_x.shape == shape and grad_x.dtype == dtype
    # The operator path under autograd, and the definition: empty too (lif_reference has its own T = 0 branch).
    op_spikes, op_h, op_grad = run_operator(x, 2.0, 0.5, surrogate, ALPHA, detach_reset, torch.ones_like(x))
    assert op_spikes.shape == op_h.shape == op_grad.shape == shape
    leaf = x.clone().requires_grad_()
    d_spikes, d_membrane = lif_reference(leaf, surrogate=make_surrogate(surrogate, ALPHA), detach_reset=detach_reset)
    d_spikes.sum().backward()
    assert d_spikes.shape == d_membrane.shape == leaf.grad.shape == shape


@by_dtype
@by_surrogate
@by_detach
@pytest.mark.parametrize("alpha", [2.0, 4.0])
def test_surrogate_gradient_at_its_boundaries(dtype, surrogate, detach_reset, alpha):
    # T = 1, tau = 2, vth = 1: H = x / 2 is exact, and so is d = H - vth for H in [0.5, 2] (Sterbenz), which
    # holds both support ends (vth - 1/alpha, vth + 1/alpha) and their neighbours. With grad 1 the input
    # gradient is g'(d) / 2.
    tau, vth, end = 2.0, 1.0, 1.0 / alpha
    lo_out, lo_end, lo_in = neighbours(vth - end, dtype)
    hi_in, hi_end, hi_out = neighbours(vth + end, dtype)
    far = 64.0
    huge = torch.finfo(dtype).max / 4  # (pi/2 alpha d)^2 overflows to inf: atan's g' is exactly 0 there
    h_values = [vth, lo_in, hi_in, lo_end, hi_end, lo_out, hi_out, vth - far, vth + far, -huge, huge]
    x = exact([[tau * v for v in h_values]], dtype)
    spikes, h, grad_x = check_kernel(x, tau=tau, vth=vth, surrogate=surrogate, alpha=alpha, detach_reset=detach_reset)
    assert h.double().flatten().tolist() == h_values  # the membrane really sits on each boundary
    g = (grad_x.double() * tau).flatten().tolist()  # g'(H - vth), exactly (times 2 is exact)
    at, lo_in_g, hi_in_g, lo_end_g, hi_end_g, lo_out_g, hi_out_g, far_lo, far_hi, huge_lo, huge_hi = g
    if surrogate == "piecewise_quadratic":
        assert at == alpha  # the peak, at v == vth
        assert lo_in_g > 0 and hi_in_g > 0  # one step inside the support: a (tiny) positive gradient
        assert lo_end_g == hi_end_g == 0.0  # on the support's end |d| = 1/alpha: exactly 0
        assert lo_out_g == hi_out_g == far_lo == far_hi == huge_lo == huge_hi == 0.0  # outside: 0, never negative
        # and the exact value inside: alpha - alpha^2 |d| (exact here: alpha is a power of two)
        d_in = [lo_in - vth, hi_in - vth]
        assert [lo_in_g, hi_in_g] == [alpha - alpha * alpha * abs(d) for d in d_in]
    else:
        assert at == alpha / 2  # the peak, at v == vth
        assert lo_end_g == hi_end_g  # symmetric about the threshold (|d| = 1/alpha on both sides, exactly)
        assert at > lo_in_g >= lo_end_g >= lo_out_g > far_lo > 0.0  # positive everywhere, falling with |d|
        assert at > hi_in_g >= hi_end_g >= hi_out_g > far_hi > 0.0
        assert huge_lo == huge_hi == 0.0  # ... until (pi/2 alpha d)^2 overflows: then exactly 0, no NaN
    assert spikes.flatten().tolist() == [float(v > vth) for v in h.double().flatten().tolist()]


# Each off-power-of-two case once found a rounding the kernel did differently from PyTorch (fixed in lif_cpu.c):
# alpha squared in float32 and alpha - alpha^2 |x| in double (fabs), alpha/2 divided by 1 + z^2 rather than
# multiplied by its reciprocal.
@pytest.mark.parametrize(
    ("surrogate", "alpha", "dtype"),
    [
        pytest.param("piecewise_quadratic", 3.3, torch.float32, id="pq-3.3-float32"),
        pytest.param("piecewise_quadratic", 3.3, torch.float64, id="pq-3.3-float64"),
        pytest.param("atan", 3.0, torch.float32, id="atan-3-float32"),
        pytest.param("atan", 3.0, torch.float64, id="atan-3-float64"),
        # alpha/2 a power of two: dividing by 1 + z^2 and multiplying by its reciprocal round alike
        pytest.param("atan", 4.0, torch.float32, id="atan-4-float32"),
    ],
)
def test_surrogate_shape_off_the_powers_of_two_is_bit_exact(surrogate, alpha, dtype):
    # lif.py states that the kernel equals autograd through lif_step bit for bit in float32 and float64 (reset
    # detached), for no particular alpha; the other tests use powers of two, where every rounding is exact.
    x = torch.randn(3, 4096, dtype=dtype) * 0.5 + 0.5  # dense around vth = 0.5 and the support ends
    grad = torch.randn_like(x)
    sur = make_surrogate(surrogate, alpha)
    _, _, grad_x = run_kernel(x, 2.0, 0.5, surrogate, alpha, True, grad)
    leaf = x.clone().requires_grad_()
    lif_reference(leaf, tau=2.0, v_threshold=0.5, surrogate=sur, detach_reset=True)[0].backward(grad)
    assert torch.equal(grad_x, leaf.grad), f"{(grad_x != leaf.grad).sum().item()} gradients differ"
