"""The layers that carry the time axis (tks.snn.layers), each against a step-by-step computation of its definition."""

import pytest
import torch
from torch import nn

from tks.errors import StepsError, UnknownNameError
from tks.snn.layers import TEBN, PerStep, TimeInvariant, make_norm, threshold_dependent_bn


def _per_step_reference(modules: nn.Module, x_seq: torch.Tensor) -> torch.Tensor:
    """The stateless modules applied to each time step on its own: ``[T, B, ...]`` -> ``[T, B, ...]``."""
    return torch.stack([modules(x) for x in x_seq])


def test_per_step_is_the_modules_applied_to_every_step():
    torch.manual_seed(0)
    layers = PerStep(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 5, 6))
    x = torch.randn(3, 2, 2, 4, 5)  # T=3, B=2
    y = layers(x)
    assert y.shape == (3, 2, 6)
    torch.testing.assert_close(y, _per_step_reference(nn.Sequential(*layers), x))


def test_per_step_batch_norm_takes_statistics_over_time_and_batch():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 2, 5, 5) * 3 + 1
    y = PerStep(nn.BatchNorm2d(2))(x)
    # the official "layer-by-layer" setting: one mean and variance per channel over (T, B, H, W)
    mean = x.mean(dim=(0, 1, 3, 4), keepdim=True)
    var = x.var(dim=(0, 1, 3, 4), unbiased=False, keepdim=True)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_time_invariant_equals_per_step_on_every_input(steps):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3)
    image = torch.randn(2, 2, 5, 5)
    broadcast = image.unsqueeze(0).expand(steps, *image.shape)
    calls = []
    conv.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    once, every = TimeInvariant(conv), PerStep(conv)
    for x in (broadcast, broadcast.contiguous(), torch.randn(steps, 2, 2, 5, 5)):
        torch.testing.assert_close(once(x), every(x), rtol=0, atol=0)
    # the broadcast input runs one step's batch when T > 1; everything else all T*B samples
    assert calls[0] == (2 if steps > 1 else 2 * steps)
    assert calls[1:] == [2 * steps] * 5


def test_time_invariant_gradient_is_the_sum_over_steps():
    torch.manual_seed(0)
    linear = nn.Linear(4, 3)
    image = torch.randn(2, 4, requires_grad=True)
    out = TimeInvariant(linear)(image.unsqueeze(0).expand(5, 2, 4))
    weights = torch.arange(5.0).view(5, 1, 1)  # a different gradient per step
    (out * weights).sum().backward()
    expected = weights.sum() * linear.weight.sum(0)  # d/dx of sum_t w_t * sum_k (W x)_k
    torch.testing.assert_close(image.grad, expected.expand(2, 4))


def test_tebn_is_bn_over_time_and_batch_times_a_per_step_scale():
    layer = TEBN(3, max_steps=4)
    with torch.no_grad():
        layer.scale.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.randn(4, 5, 3, 2, 2)
    bn = torch.nn.BatchNorm2d(3)
    expected = bn(x.flatten(0, 1)).unflatten(0, (4, 5)) * torch.tensor([1.0, 2, 3, 4]).view(4, 1, 1, 1, 1)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.bn.running_mean, bn.running_mean)
    fewer = x[:2]
    expected_fewer = bn(fewer.flatten(0, 1)).unflatten(0, (2, 5)) * torch.tensor([1.0, 2]).view(2, 1, 1, 1, 1)
    torch.testing.assert_close(layer(fewer), expected_fewer)  # the first two scales


def test_tebn_refuses_more_steps_than_built_for_and_no_steps():
    with pytest.raises(StepsError, match=r"^TEBN was built for at most 2 time steps .* cannot run at T=3; evaluate"):
        TEBN(4, max_steps=2)(torch.randn(3, 2, 4, 1, 1))
    with pytest.raises(ValueError, match="TEBN max_steps must be >= 1, got 0"):
        TEBN(4, max_steps=0)
    assert TEBN(4, max_steps=1).scale.tolist() == [1.0]  # one step is allowed


def test_threshold_dependent_bn_starts_at_alpha_times_threshold():
    layer = threshold_dependent_bn(3, alpha=0.5, v_threshold=0.3)
    assert isinstance(layer, PerStep)
    (bn,) = layer
    assert isinstance(bn, nn.BatchNorm2d)
    torch.testing.assert_close(bn.weight.detach(), torch.full((3,), 0.15))
    torch.testing.assert_close(bn.bias.detach(), torch.zeros(3))


def test_make_norm_builds_each_normalisation_with_its_settings():
    bn = make_norm("bn")(6, alpha=0.5)  # alpha is tdBN's alone
    assert isinstance(bn, PerStep)
    assert isinstance(bn[0], nn.BatchNorm2d) and bn[0].num_features == 6
    torch.testing.assert_close(bn[0].weight.detach(), torch.ones(6))
    assert make_norm("bn")(6)[0].num_features == 6

    tdbn = make_norm("tdbn", v_threshold=0.3)
    torch.testing.assert_close(tdbn(5)[0].weight.detach(), torch.full((5,), 0.3))  # alpha 1 by default
    torch.testing.assert_close(tdbn(5, alpha=0.5)[0].weight.detach(), torch.full((5,), 0.15))
    torch.testing.assert_close(make_norm("tdbn")(2)[0].weight.detach(), torch.full((2,), 0.5))  # the official V_th

    tebn = make_norm("tebn", max_steps=6)(7, alpha=0.5)
    assert isinstance(tebn, TEBN) and tebn.bn.num_features == 7 and tebn.scale.numel() == 6
    assert make_norm("tebn")(7).scale.numel() == 4  # T = 4 unless told


def test_make_norm_refuses_an_unknown_name():
    with pytest.raises(UnknownNameError, match="unknown normalisation 'ln'; choose one of: bn, tdbn, tebn"):
        make_norm("ln")
