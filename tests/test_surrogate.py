import math

import pytest
import torch

from tks.snn import ATan, PiecewiseQuadratic, make_surrogate, spike

GRID = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], dtype=torch.float64)


def test_piecewise_quadratic_alpha1_is_triangle_on_grid():
    assert PiecewiseQuadratic(alpha=1.0).derivative(GRID).tolist() == [0, 0, 0.5, 1, 0.5, 0, 0]


def test_piecewise_quadratic_official_alpha2_is_2_minus_4abs():
    x = torch.tensor([-0.6, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 0.6], dtype=torch.float64)
    expected = [0, 0, 1.0, 1.6, 2.0, 1.6, 1.0, 0, 0]
    torch.testing.assert_close(PiecewiseQuadratic(alpha=2.0).derivative(x), torch.tensor(expected, dtype=torch.float64))


def test_piecewise_quadratic_has_unit_area():
    x = torch.linspace(-1, 1, 200001, dtype=torch.float64)
    area = torch.trapezoid(PiecewiseQuadratic(alpha=2.0).derivative(x), x)
    assert area.item() == pytest.approx(1.0, abs=1e-6)


def test_atan_peak_and_shape():
    s = ATan(alpha=2.0)
    assert s.derivative(torch.tensor(0.0)).item() == pytest.approx(1.0)
    x = 0.3
    assert s.derivative(torch.tensor(x)).item() == pytest.approx(1.0 / (1 + (math.pi / 2 * 2 * x) ** 2))


def test_spike_forward_is_strict_heaviside_and_backward_is_surrogate():
    x = torch.tensor([-0.2, 0.0, 1e-7, 0.3], requires_grad=True)
    s = spike(x, PiecewiseQuadratic(alpha=2.0))
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0]  # exactly at threshold: no spike (BrainCog's ">")
    s.sum().backward()
    torch.testing.assert_close(x.grad, PiecewiseQuadratic(alpha=2.0).derivative(x.detach()))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (PiecewiseQuadratic(alpha=2.0), ("PiecewiseQuadratic", 2.0)),
        (PiecewiseQuadratic(alpha=1.0), ("PiecewiseQuadratic", 1.0)),
        (ATan(alpha=2.0), ("ATan", 2.0)),
        (ATan(alpha=3.5), ("ATan", 3.5)),
    ],
)
def test_surrogate_gradients_match_spikingjelly(ours, theirs):
    sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate", reason="SpikingJelly (the extra)")
    theirs = getattr(sj_surrogate, theirs[0])(alpha=theirs[1])
    x = torch.linspace(-2, 2, 401, dtype=torch.float64) + 1e-4  # avoid the exact threshold
    a = x.clone().requires_grad_()
    spike(a, ours).sum().backward()
    b = x.clone().requires_grad_()
    theirs(b).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_make_surrogate_errors():
    from tks.errors import TKSError, UnknownNameError

    with pytest.raises(UnknownNameError, match="unknown surrogate 'sigmoid'.*atan"):
        make_surrogate("sigmoid", 1.0)
    with pytest.raises(TKSError, match="alpha must be > 0"):
        make_surrogate("atan", 0.0)
    with pytest.raises(TKSError, match="alpha must be > 0"):  # the same check when built directly
        ATan(alpha=-1.0)
