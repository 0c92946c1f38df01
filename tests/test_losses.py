import inspect
import itertools
import math
import os
import re
import warnings
from dataclasses import fields, replace
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tks
from tks.config import ConfigError, LabelSmoothingOptions, LossConfig, StrongWeakOptions, TKSOptions
from tks.errors import OptionError, TKSWarning
from tks.losses import (
    LOSSES,
    Criterion,
    StrongWeakLoss,
    TKSLoss,
    constant,
    label_smoothing_ce,
    linear_ramp,
    list_losses,
    mean_ce,
    register_loss,
    strong_weak_loss,
    strong_weak_objective,
    tet_loss,
    tks_loss,
    tks_objective,
    zero_weight_warning,
)


# ---- a literal transcription of the official formula (docs/reference.md §3), written as the official code does it:
# a list of per-step outputs, a correct-step mask, a summed teacher, a KD term per step, an epoch-linear weight.
def official_kd(student_logits, teacher_logits, temperature):
    log_softmax = nn.LogSoftmax(dim=1)
    soft_target = F.softmax(teacher_logits / temperature, dim=1)
    per_sample = torch.sum(-soft_target * log_softmax(student_logits), dim=1)
    return temperature**2 * per_sample.mean()


def official_tks_total(outputs, target, temperature, alpha, epoch, epochs):
    """outputs: list of T tensors [B, K]."""
    steps = len(outputs)
    mean_out = sum(outputs) / steps
    loss1 = nn.CrossEntropyLoss()(mean_out, target)
    teacher = torch.zeros_like(outputs[0])
    for out in outputs:
        is_right = (out.argmax(dim=1) == target).float().unsqueeze(1)
        teacher = teacher + out * is_right
    loss2 = 0.0
    for out in outputs:
        loss2 = loss2 + official_kd(out, teacher, temperature)
    loss2 = loss2 / steps
    ce_weight = 1 - alpha * epoch / epochs
    return ce_weight * loss1 + (1 - ce_weight) * loss2, loss2


def make_logits(steps=4, batch=16, classes=10, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(steps, batch, classes, generator=g, dtype=dtype) * 2
    target = torch.randint(0, classes, (batch,), generator=g)
    # sample 0: no correct step at all; sample 1: every step correct
    wrong = (target[0] + 1) % classes
    logits[:, 0, wrong] = 50.0
    logits[:, 1, target[1]] = 50.0
    return logits, target


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("temperature", "alpha", "epoch", "epochs"),
    [(3.0, 0.7, 0, 600), (3.0, 0.7, 599, 600), (5.0, 0.3, 40, 100), (1.0, 0.7, 7, 10)],
)
def test_criterion_matches_official_transcription(seed, temperature, alpha, epoch, epochs):
    logits, target = make_logits(seed=seed)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    criterion = Criterion(LossConfig(name="tks", tks=TKSOptions(temperature=temperature, alpha=alpha)))
    ours = criterion(ours_in, target, epoch=epoch, epochs=epochs)
    ref_total, ref_tks = official_tks_total(list(ref_in.unbind(0)), target, temperature, alpha, epoch, epochs)
    torch.testing.assert_close(ours.total, ref_total, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.parts["tks"], ref_tks, rtol=1e-12, atol=1e-12)
    ours.total.backward()
    ref_total.backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-10, atol=1e-12)


def test_every_step_correct_gives_the_teacher_of_all_summed_logits():
    logits, target = make_logits()
    logits, target = logits[:, 1:2], target[1:2]  # only sample 1: correct at every step (make_logits sets it so)
    assert (logits.argmax(-1) == target).all()
    p = torch.softmax(logits.sum(0) / 3.0, -1)  # the teacher: all four steps summed, then tempered
    expected = 9.0 * -(p * torch.log_softmax(logits, -1)).sum(-1).mean()  # tau^2 * mean_t soft CE
    torch.testing.assert_close(tks_loss(logits, target, temperature=3.0), expected)
    # and the two edge samples weigh in the batch loss like any other sample: it is the mean of per-sample losses
    logits, target = make_logits()
    per_sample = torch.stack([tks_loss(logits[:, b : b + 1], target[b : b + 1]) for b in range(len(target))])
    torch.testing.assert_close(tks_loss(logits, target), per_sample.mean())


def test_no_correct_step_gives_uniform_teacher():
    logits, target = make_logits()
    logits, target = logits[:, :1], target[:1]  # only sample 0: never correct
    expected = 9.0 * (-torch.log_softmax(logits, -1)).mean(-1).mean()  # tau^2 * mean_t mean_k(-log q)
    torch.testing.assert_close(tks_loss(logits, target, temperature=3.0), expected)


def test_teacher_not_detached_by_default_and_detach_changes_only_gradients():
    logits, target = make_logits()
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    la, lb = tks_loss(a, target, temperature=3.0), tks_loss(b, target, temperature=3.0, detach_teacher=True)
    torch.testing.assert_close(la, lb)
    la.backward()
    lb.backward()
    assert not torch.allclose(a.grad, b.grad)
    # with a detached teacher, a sample's gradient is exactly the soft-CE gradient of the students
    p = torch.softmax((logits * (logits.argmax(-1) == target).unsqueeze(-1)).sum(0) / 3.0, -1)
    expected = 9.0 * (torch.softmax(logits, -1) - p) / (logits.shape[0] * logits.shape[1])
    torch.testing.assert_close(b.grad, expected)


def test_mean_teacher_equals_sum_teacher_divided_by_count():
    logits, target = make_logits()
    correct = (logits.argmax(-1) == target).unsqueeze(-1).double()
    z_mean = (logits * correct).sum(0) / correct.sum(0).clamp_min(1)
    p = torch.softmax(z_mean / 2.0, -1)
    expected = 4.0 * -(p * torch.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(tks_loss(logits, target, temperature=2.0, teacher="mean"), expected)


def test_paper_variant_eq5_to_eq7():
    logits, target = make_logits()
    tau = 3.0
    correct = (logits.argmax(-1) == target).unsqueeze(-1).double()
    z = (logits * correct).sum(0) / correct.sum(0).clamp_min(1)  # Eq. 5: mean of the correct steps
    q = torch.log_softmax(logits.mean(0) / tau, -1)  # Eq. 7: softmax(O / tau) of the time-averaged output
    expected = tau**2 * -(torch.softmax(z / tau, -1) * q).sum(-1).mean()
    got = tks_loss(logits, target, temperature=tau, teacher="mean", student="mean", student_temperature=tau)
    torch.testing.assert_close(got, expected)
    # Eq. 6 read literally: Z itself weights -log q, 1/K where no step is correct
    literal = torch.where(correct.sum(0) > 0, z, torch.full_like(z, 0.1))
    expected_literal = tau**2 * -(literal * q).sum(-1).mean()
    got_literal = tks_loss(
        logits,
        target,
        temperature=tau,
        teacher="mean",
        teacher_target="logits",
        student="mean",
        student_temperature=tau,
    )
    torch.testing.assert_close(got_literal, expected_literal)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.integers(2, 7), st.integers(0, 10_000))
def test_tks_loss_is_finite_nonnegative_and_batch_permutation_invariant(steps, batch, classes, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(steps, batch, classes, generator=g, dtype=torch.float64) * 5
    target = torch.randint(0, classes, (batch,), generator=g)
    value = tks_loss(logits, target, temperature=3.0)
    assert torch.isfinite(value) and value >= 0
    perm = torch.randperm(batch, generator=g)
    torch.testing.assert_close(tks_loss(logits[:, perm], target[perm], temperature=3.0), value)


def test_mean_ce_label_smoothing_and_tet_against_hand_formulas():
    logits, target = make_logits()
    mean = logits.mean(0)
    log_p = torch.log_softmax(mean, -1)
    nll = -log_p.gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(mean_ce(logits, target), nll.mean())
    # timm LabelSmoothingCrossEntropy: (1 - eps) * nll + eps * mean_k(-log p_k)
    timm_ls = (0.9 * nll + 0.1 * (-log_p).mean(-1)).mean()
    torch.testing.assert_close(label_smoothing_ce(logits, target, smoothing=0.1), timm_ls)
    # official TET: (1 - lambda) mean_t CE(O_t, y) + lambda MSE(O, phi)
    per_step = sum(F.cross_entropy(o, target) for o in logits) / logits.shape[0]
    mse = F.mse_loss(logits, torch.full_like(logits, 1.0))
    torch.testing.assert_close(tet_loss(logits, target, lamb=1e-3, phi=1.0), 0.999 * per_step + 1e-3 * mse)
    torch.testing.assert_close(tet_loss(logits, target, lamb=0.0), per_step)


def test_schedules():
    assert linear_ramp(0, 600, 0.7) == 0.0
    assert linear_ramp(599, 600, 0.7) == pytest.approx(0.6988333)
    assert linear_ramp(5, 10, 0.3) == pytest.approx(0.15)
    assert constant(0, 10, 0.3) == constant(9, 10, 0.3) == 0.3


def test_criterion_names_and_weight():
    logits, target = make_logits()
    ce = Criterion(LossConfig(name="ce"))(logits, target)
    torch.testing.assert_close(ce.total, mean_ce(logits, target))
    assert set(ce.parts) == {"ce"}
    ls = Criterion(LossConfig(name="ls", ls=LabelSmoothingOptions(smoothing=0.2)))(logits, target)
    torch.testing.assert_close(ls.total, label_smoothing_ce(logits, target, smoothing=0.2))
    tet = Criterion(LossConfig(name="tet"))(logits, target)
    torch.testing.assert_close(tet.total, tet_loss(logits, target))
    tks = Criterion(LossConfig(name="tks"))
    torch.testing.assert_close(tks(logits, target, epoch=0, epochs=10).total, mean_ce(logits, target))  # weight 0
    assert tks.tks_weight(5, 10) == pytest.approx(0.35)
    assert Criterion(LossConfig(name="ce")).tks_weight(5, 10) == 0.0
    static_options = TKSOptions(schedule="constant", alpha=1.0)
    static = Criterion(LossConfig(name="tks", tks=static_options))(logits, target, epoch=0, epochs=10)
    torch.testing.assert_close(static.total, tks_loss(logits, target, temperature=3.0))


def test_the_module_and_the_training_loop_compute_one_objective():
    logits, target = make_logits()
    w = linear_ramp(3, 10, 0.7)
    ref, _ = official_tks_total(list(logits.unbind(0)), target, 3.0, 0.7, 3, 10)
    torch.testing.assert_close(TKSLoss(TKSOptions(temperature=3.0))(logits, target, weight=w), ref)
    # label smoothing beside TKS (official --smoothing) is the same in both forms: one objective function
    options = TKSOptions(temperature=2.0, smoothing=0.1, teacher="mean")
    module = TKSLoss(options)(logits, target, weight=linear_ramp(3, 10, options.alpha))
    loop = Criterion(LossConfig(name="tks", tks=options))(logits, target, epoch=3, epochs=10).total
    torch.testing.assert_close(module, loop, rtol=0, atol=0)
    assert not torch.isclose(module, TKSLoss(replace(options, smoothing=0.0))(logits, target, weight=0.21))
    with pytest.raises(ValueError, match="weight must be in"):
        TKSLoss()(logits, target, weight=1.5)


def test_the_functions_take_their_defaults_from_the_options():
    assert TKSOptions().teacher == inspect.signature(tks_loss).parameters["teacher"].default
    shared = set(inspect.signature(tks_loss).parameters) - {"logits", "target"}
    assert shared == {f.name for f in fields(TKSOptions)} - {"alpha", "schedule", "smoothing"}
    for name in shared:
        assert inspect.signature(tks_loss).parameters[name].default == getattr(TKSOptions(), name), name
    for name, parameter in list(inspect.signature(strong_weak_loss).parameters.items())[1:]:
        assert parameter.default == getattr(StrongWeakOptions(), name), name


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"logits must be \[T, B, K\]"):
        tks_loss(torch.randn(4, 10), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target must be \[B\] = \[3\]"):
        mean_ce(torch.randn(2, 3, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="teacher must be"):
        tks_loss(torch.randn(2, 3, 5), torch.zeros(3, dtype=torch.long), teacher="max")
    assert math.isfinite(tks_loss(torch.randn(1, 1, 2), torch.zeros(1, dtype=torch.long)).item())


# ---- Strong2Weak / Weak2Strong (Ding et al. 2025, Alg. 1), transcribed literally: a list of per-step outputs, a
# Python loop for the confidences, max/min over the steps, kl_div between the softened outputs of the two steps.
def alg1_strong_weak(outputs, direction, a=2.0, selection="batch", detach=False, scale_t2=False):
    """outputs: list of T tensors [B, K]; returns the distillation term L of the chosen direction."""
    steps, batch = len(outputs), outputs[0].shape[0]

    def kl(student, teacher):  # KL(teacher || student) of two sub-models' softened outputs
        teacher = F.softmax(teacher / a, dim=1)
        return F.kl_div(
            F.log_softmax(student / a, dim=1), teacher.detach() if detach else teacher, reduction="batchmean"
        )

    def term(outs, con):  # Alg. 1 on a batch `outs` whose step confidences are `con`
        strong = max(range(steps), key=lambda t: con[t])  # Python's max/min return the first extreme
        weak = min(range(steps), key=lambda t: con[t])
        if direction == "strong2weak":
            return kl(outs[weak], outs[strong])
        if direction == "weak2strong":
            return kl(outs[strong], outs[weak])
        if direction == "both":
            return kl(outs[weak], outs[strong]) + kl(outs[strong], outs[weak])
        rank = sorted(range(steps), key=lambda t: -con[t])  # cascade; Python's sort is stable: ties keep time order
        pairs = [kl(outs[rank[i + 1]], outs[rank[i]]) for i in range(steps - 1)]
        return sum(pairs) / (steps - 1) if pairs else torch.zeros(())

    def confidences(outs):
        return [F.softmax(o, dim=1).max(dim=1)[0].mean().item() for o in outs]

    if selection == "batch":
        total = term(outputs, confidences(outputs))
    else:  # each sample on its own: the algorithm on batches of one, averaged over the batch
        total = sum(term(one, confidences(one)) for one in ([o[b : b + 1] for o in outputs] for b in range(batch)))
        total = total / batch
    return total * a**2 if scale_t2 else total


DIRECTIONS = ("weak2strong", "strong2weak", "both", "cascade")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(
    ("selection", "detach", "scale_t2", "a"),
    [
        ("batch", False, False, 2.0),
        ("sample", False, False, 2.0),
        ("batch", True, True, 4.0),
        ("sample", True, False, 1.0),
    ],
)
def test_strong_weak_matches_algorithm_1(seed, direction, selection, detach, scale_t2, a):
    logits, _ = make_logits(steps=5, batch=12, seed=seed)
    logits[:, 0] = logits[:, 0] / 10  # sample 0 near uniform, so confidences differ between samples and steps
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours = strong_weak_loss(
        ours_in, direction=direction, temperature=a, selection=selection, detach_teacher=detach, scale_t2=scale_t2
    )
    ref = alg1_strong_weak(list(ref_in.unbind(0)), direction, a, selection, detach, scale_t2)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert ours > 0
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-10, atol=1e-12)


def test_strong_weak_picks_the_most_and_least_confident_steps_of_the_batch():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 5, generator=g, dtype=torch.float64)
    logits = torch.stack([base * 0.5, base * 3.0, base * 1.0])  # step 1 the most confident, step 0 the least
    q = torch.softmax(logits / 2.0, -1)

    def kl(p, r):
        return (p * (p.log() - r.log())).sum(-1).mean()

    torch.testing.assert_close(strong_weak_loss(logits, direction="strong2weak"), kl(q[1], q[0]))
    torch.testing.assert_close(strong_weak_loss(logits, direction="weak2strong"), kl(q[0], q[1]))
    # cascade ranks 1, 2, 0: step 1 teaches step 2, step 2 teaches step 0
    torch.testing.assert_close(strong_weak_loss(logits, direction="cascade"), (kl(q[1], q[2]) + kl(q[2], q[0])) / 2)


def test_strong_weak_ties_go_to_the_earliest_step():
    g = torch.Generator().manual_seed(4)
    sharp = torch.randn(4, 6, generator=g, dtype=torch.float64) * 3
    flat = sharp / 4
    swapped = sharp[:, torch.tensor([1, 0, 3, 2, 5, 4])]  # same confidence as `sharp`, another distribution
    logits = torch.stack([flat, sharp, swapped])
    q = torch.softmax(logits / 2.0, -1)
    expected = (q[1] * (q[1].log() - q[0].log())).sum(-1).mean()  # teacher step 1, not its tie step 2
    torch.testing.assert_close(strong_weak_loss(logits, direction="strong2weak"), expected)
    other = (q[2] * (q[2].log() - q[0].log())).sum(-1).mean()
    assert not torch.isclose(expected, other)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("selection", ["batch", "sample"])
def test_strong_weak_is_zero_when_all_steps_agree_or_t_is_one(direction, selection):
    one, _ = make_logits(steps=1, batch=8)
    same = one.expand(4, -1, -1).clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TKSWarning)  # the term says it is 0 (tested below)
        value = strong_weak_loss(same, direction=direction, selection=selection)
        assert value.item() == 0.0
        value.backward()
        torch.testing.assert_close(same.grad, torch.zeros_like(same), rtol=0, atol=1e-15)  # zero up to rounding
        assert strong_weak_loss(one, direction=direction, selection=selection).item() == 0.0


def test_strong_weak_never_reads_the_labels():
    logits, target = make_logits()
    shuffled = target[torch.randperm(len(target), generator=torch.Generator().manual_seed(0))]
    assert not torch.equal(shuffled, target)
    for direction in DIRECTIONS:
        cfg = LossConfig(name="strong_weak", strong_weak=StrongWeakOptions(direction=direction))
        a = Criterion(cfg)(logits, target)
        b = Criterion(cfg)(logits, shuffled)
        torch.testing.assert_close(a.parts["sw"], b.parts["sw"], rtol=0, atol=0)
        assert not torch.equal(a.parts["ce"], b.parts["ce"])  # only the CE term sees them


def test_strong_weak_criterion_is_ce_plus_lambda_times_the_term():
    logits, target = make_logits()
    options = StrongWeakOptions(direction="both", temperature=3.0, weight=0.5, selection="sample", scale_t2=True)
    out = Criterion(LossConfig(name="strong_weak", strong_weak=options))(logits, target, epoch=3, epochs=10)
    term = strong_weak_loss(logits, direction="both", temperature=3.0, selection="sample", scale_t2=True)
    torch.testing.assert_close(out.total, mean_ce(logits, target) + 0.5 * term)
    torch.testing.assert_close(out.parts["sw"], term)
    assert Criterion(LossConfig(name="strong_weak")).tks_weight(5, 10) == 0.0


def test_sample_selection_differs_from_batch_selection():
    g = torch.Generator().manual_seed(5)
    base = torch.randn(2, 5, generator=g, dtype=torch.float64)
    # sample 0: step 0 sharper; sample 1: step 1 far sharper, so the batch picks step 1 as strong for both
    logits = torch.stack([torch.stack([base[0] * 2, base[1]]), torch.stack([base[0], base[1] * 8])])
    batch = strong_weak_loss(logits, direction="strong2weak", selection="batch")
    sample = strong_weak_loss(logits, direction="strong2weak", selection="sample")
    assert not torch.isclose(batch, sample)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.integers(2, 7), st.integers(0, 10_000), st.sampled_from(DIRECTIONS))
def test_strong_weak_is_finite_nonnegative_and_batch_permutation_invariant(steps, batch, classes, seed, direction):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(steps, batch, classes, generator=g, dtype=torch.float64) * 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TKSWarning)  # T=1 warns that the term is 0 (tested below)
        value = strong_weak_loss(logits, direction=direction)
        assert torch.isfinite(value) and value >= 0
        perm = torch.randperm(batch, generator=g)
        torch.testing.assert_close(strong_weak_loss(logits[:, perm], direction=direction), value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"direction": "up"},
            "loss.strong_weak.direction must be one of ['weak2strong', 'strong2weak', 'both', 'cascade'], got 'up'",
        ),
        ({"selection": "step"}, "loss.strong_weak.selection must be one of ['batch', 'sample'], got 'step'"),
        ({"temperature": 0.0}, "loss.strong_weak.temperature must be finite and > 0, got 0.0"),
        ({"temperature": float("inf")}, "loss.strong_weak.temperature must be finite and > 0, got inf"),
        ({"temperature": float("nan")}, "loss.strong_weak.temperature must be finite and > 0, got nan"),
    ],
)
def test_strong_weak_refuses_each_bad_option_by_name(options, message):
    # The options dataclass checks a call's options as it checks a config's: one place, one ConfigError.
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        strong_weak_loss(torch.randn(2, 3, 4), **options)
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        StrongWeakOptions(**options)


def test_strong_weak_refuses_logits_that_are_not_per_step():
    with pytest.raises(ValueError, match=r"logits must be \[T, B, K\]"):
        strong_weak_loss(torch.randn(3, 4))


# ---- the label-free TKS teacher (beyond the paper): "correct" = agreeing with the time-averaged prediction
def test_consensus_teacher_equals_label_teacher_when_the_mean_prediction_is_right():
    logits, _ = make_logits(seed=1)
    target = logits.mean(0).argmax(-1)  # the mean prediction is right for every sample
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    label = tks_loss(a, target, temperature=3.0)
    consensus = tks_loss(b, target, temperature=3.0, teacher_source="consensus")
    torch.testing.assert_close(label, consensus, rtol=0, atol=0)
    label.backward()
    consensus.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def test_consensus_teacher_ignores_labels_and_differs_when_the_mean_is_wrong():
    logits, target = make_logits(seed=2)
    assert (logits.mean(0).argmax(-1) != target).any()
    consensus = tks_loss(logits, target, temperature=3.0, teacher_source="consensus")
    assert not torch.isclose(consensus, tks_loss(logits, target, temperature=3.0))
    other = (target + 1) % logits.shape[-1]
    torch.testing.assert_close(tks_loss(logits, other, temperature=3.0, teacher_source="consensus"), consensus)
    # by hand: the label teacher fed the mean prediction as its "label"
    torch.testing.assert_close(consensus, tks_loss(logits, logits.mean(0).argmax(-1), temperature=3.0))
    cfg = LossConfig(name="tks", tks=TKSOptions(teacher_source="consensus", schedule="constant", alpha=1.0))
    torch.testing.assert_close(Criterion(cfg)(logits, target).total, consensus)
    with pytest.raises(ValueError, match="teacher_source must be"):
        tks_loss(logits, target, teacher_source="vote")


# ---- what mutation testing (tools/mutants.py losses) found untested: every option reaches the computation, every
# refusal names its mistake, the module forms hold their options and schedule.
def brute_force_tks(logits, target, tau, tau_s, teacher="sum", student="per_step"):
    """tks_loss by loops over samples and steps, float64, straight from its docstring's equations."""
    steps, batch, _ = logits.shape
    total = 0.0
    for b in range(batch):
        right = [t for t in range(steps) if logits[t, b].argmax() == target[b]]
        z = sum((logits[t, b] for t in right), torch.zeros_like(logits[0, b]))
        if teacher == "mean" and right:
            z = z / len(right)
        p = torch.softmax(z / tau, -1)
        students = [logits[t, b] for t in range(steps)] if student == "per_step" else [logits[:, b].mean(0)]
        total += sum(-(p * torch.log_softmax(o / tau_s, -1)).sum() for o in students) / len(students)
    return tau**2 * total / batch


@pytest.mark.parametrize(("teacher", "student"), [("sum", "per_step"), ("mean", "per_step"), ("mean", "mean")])
def test_tks_loss_equals_its_equations_with_a_student_temperature(teacher, student):
    logits, target = make_logits(steps=3, batch=6, classes=5, seed=3)
    options = {"temperature": 2.0, "student_temperature": 1.5, "teacher": teacher, "student": student}
    expected = brute_force_tks(logits, target, 2.0, 1.5, teacher, student)
    torch.testing.assert_close(tks_loss(logits, target, **options), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 0.0}, "loss.tks.temperature must be finite and > 0, got 0.0"),
        ({"temperature": -1.0}, "loss.tks.temperature must be finite and > 0, got -1.0"),
        ({"temperature": float("inf")}, "loss.tks.temperature must be finite and > 0, got inf"),
        ({"student_temperature": 0.0}, "loss.tks.student_temperature must be finite and > 0, got 0.0"),
        ({"student_temperature": float("inf")}, "loss.tks.student_temperature must be finite and > 0, got inf"),
        ({"teacher_source": "oracle"}, "loss.tks.teacher_source must be one of ['label', 'consensus'], got 'oracle'"),
        ({"teacher": "max"}, "loss.tks.teacher must be one of ['sum', 'mean'], got 'max'"),
        ({"teacher_target": "probs"}, "loss.tks.teacher_target must be one of ['softmax', 'logits'], got 'probs'"),
        ({"student": "last"}, "loss.tks.student must be one of ['per_step', 'mean'], got 'last'"),
        (
            {"student": "means"},
            "loss.tks.student must be one of ['per_step', 'mean'], got 'means' (did you mean 'mean'?)",
        ),
    ],
)
def test_tks_loss_refuses_each_bad_option_by_name(options, message):
    # The options dataclass checks a call's options as it checks a config's: one place, one ConfigError.
    logits, target = make_logits(steps=2, batch=3, classes=4)
    exact = f"^{re.escape(message)}$"
    with pytest.raises(ConfigError, match=exact):
        tks_loss(logits, target, **options)
    with pytest.raises(ConfigError, match=exact):
        TKSOptions(**options)


def test_tks_loss_at_the_smallest_temperature_it_takes():
    logits, target = make_logits(steps=2, batch=3, classes=4)
    tiny = 1e-3  # > 0 is accepted however small: only 0 and below are refused
    assert math.isfinite(tks_loss(logits, target, temperature=tiny, student_temperature=tiny).item())


NON_DEFAULT_TKS = TKSOptions(
    temperature=2.0,
    alpha=0.5,
    teacher="mean",
    detach_teacher=True,
    teacher_target="logits",
    student="mean",
    student_temperature=1.5,
    teacher_source="consensus",
    smoothing=0.1,
)


def test_tks_objective_passes_every_option_to_the_term():
    assert all(
        getattr(NON_DEFAULT_TKS, f.name) != getattr(TKSOptions(), f.name)
        for f in fields(TKSOptions)
        if f.name != "schedule"
    )
    logits, target = make_logits(steps=3, batch=6, classes=5, seed=1)
    term_options = {f.name: getattr(NON_DEFAULT_TKS, f.name) for f in fields(TKSOptions)}
    for name in ("alpha", "schedule", "smoothing"):
        del term_options[name]
    leaf = logits.clone().requires_grad_()
    out = tks_objective(leaf, target, NON_DEFAULT_TKS, 0.25)
    assert set(out.parts) == {"ce", "tks"}
    reference_leaf = logits.clone().requires_grad_()
    term = tks_loss(reference_leaf, target, **term_options)
    base = label_smoothing_ce(reference_leaf, target, smoothing=0.1)
    torch.testing.assert_close(out.parts["tks"], term, rtol=0, atol=0)
    torch.testing.assert_close(out.parts["ce"], base, rtol=0, atol=0)
    (0.75 * base + 0.25 * term).backward()
    out.total.backward()
    torch.testing.assert_close(leaf.grad, reference_leaf.grad, rtol=0, atol=0)  # detach_teacher reached it too


def test_strong_weak_objective_passes_every_option_to_the_term():
    options = StrongWeakOptions(
        direction="both", temperature=3.0, selection="sample", detach_teacher=True, scale_t2=True, weight=0.4
    )
    assert all(getattr(options, f.name) != getattr(StrongWeakOptions(), f.name) for f in fields(StrongWeakOptions))
    logits, target = make_logits(steps=3, batch=6, classes=5, seed=2)
    leaf, reference_leaf = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    out = strong_weak_objective(leaf, target, options)
    assert set(out.parts) == {"ce", "sw"}
    term = strong_weak_loss(
        reference_leaf, direction="both", temperature=3.0, selection="sample", detach_teacher=True, scale_t2=True
    )
    torch.testing.assert_close(out.parts["sw"], term, rtol=0, atol=0)
    out.total.backward()
    (mean_ce(reference_leaf, target) + 0.4 * term).backward()
    torch.testing.assert_close(leaf.grad, reference_leaf.grad, rtol=0, atol=0)
    assert StrongWeakLoss(options)(logits, target) == out.total  # the module computes the same objective
    assert StrongWeakLoss().options == StrongWeakOptions()
    assert StrongWeakLoss(options, weight=0.1).options == replace(options, weight=0.1)


def test_cascade_at_two_steps_is_the_kl_from_the_stronger_to_the_weaker_step():
    logits = torch.tensor([[[0.0, 1.0, 0.0]], [[3.0, 0.0, 0.0]]], dtype=torch.float64)  # step 1 more confident
    q = torch.log_softmax(logits / 2.0, -1)
    expected = (q[1].exp() * (q[1] - q[0])).sum()
    torch.testing.assert_close(strong_weak_loss(logits, direction="cascade"), expected)
    assert expected > 0


def test_strong_weak_ranks_low_precision_steps_by_their_float32_confidence():
    # Two bfloat16 steps whose top probabilities differ in float32 but round to the same bfloat16 number: the
    # ranking must see the difference (the confidence is computed in float32).
    logits = torch.tensor([[[0.9140625, 0.0]], [[0.921875, 0.0]]], dtype=torch.bfloat16)  # adjacent in bfloat16
    wide = torch.softmax(logits.float(), -1).amax(-1)
    narrow = torch.softmax(logits, -1).amax(-1)
    assert wide[1] > wide[0] and narrow[1] == narrow[0]  # the case this test is about
    # Ranked in bfloat16 the two would tie, both picks would fall on step 0 and the term would be exactly 0.
    assert strong_weak_loss(logits, direction="weak2strong") > 0
    with pytest.warns(TKSWarning, match="every step of this batch is equally confident"):
        assert strong_weak_loss(logits[:1].expand(2, 1, 2), direction="weak2strong") == 0  # same step twice: 0


def test_tks_loss_module_takes_its_options_and_schedule():
    assert TKSLoss().options == TKSOptions()
    assert TKSLoss(alpha=0.3).options == replace(TKSOptions(), alpha=0.3)
    assert TKSLoss(NON_DEFAULT_TKS, temperature=4.0).options == replace(NON_DEFAULT_TKS, temperature=4.0)
    loss = TKSLoss(TKSOptions(alpha=0.6))
    assert loss.weight() == 0.6 and loss.weight(1, 4) == pytest.approx(0.15) and loss.weight(0, 4) == 0.0
    assert TKSLoss(alpha=0.6, schedule="constant").weight(0, 4) == 0.6
    logits, target = make_logits(steps=3, batch=6, classes=5, seed=4)
    for kwargs, weight in [
        ({}, 0.6),
        ({"epoch": 2, "epochs": 4}, 0.3),
        ({"weight": 0.1, "epoch": 2, "epochs": 4}, 0.1),
    ]:
        expected = tks_objective(logits, target, TKSOptions(alpha=0.6), weight).total
        assert loss(logits, target, **kwargs) == expected, kwargs


@pytest.mark.parametrize(
    ("epoch", "epochs", "message"),
    [
        (1, None, "give both epoch and epochs (0-indexed epoch of epochs), or neither"),
        (None, 3, "give both epoch and epochs (0-indexed epoch of epochs), or neither"),
        (3, 3, "epoch must be in [0, epochs) with epochs >= 1, got epoch=3, epochs=3"),
        (-1, 3, "epoch must be in [0, epochs) with epochs >= 1, got epoch=-1, epochs=3"),
        (0, 0, "epoch must be in [0, epochs) with epochs >= 1, got epoch=0, epochs=0"),
    ],
)
def test_tks_loss_module_refuses_an_epoch_outside_the_run(epoch, epochs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TKSLoss().weight(epoch, epochs)


def outside_tks_and_torch(filename):
    """Whether a warning points at a caller's line (here this file; a wrapper's under mutation testing)."""
    return not filename.startswith((os.path.dirname(tks.__file__), os.path.dirname(torch.__file__)))


def test_a_schedule_that_weighs_zero_throughout_is_said_once():
    ramp = (
        "the TKS term weighs 0 in every epoch of this 1-epoch run (the linear ramp alpha * epoch / 1 is 0 at "
        "epoch 0): it trains plain cross-entropy; use more epochs, or schedule 'constant'"
    )
    assert zero_weight_warning(TKSOptions(), 1) == ramp
    zero = zero_weight_warning(TKSOptions(alpha=0.0, schedule="constant"), 5)
    assert zero.startswith("the TKS term weighs 0 in every epoch of this 5-epoch run (alpha is 0): ")
    assert zero_weight_warning(TKSOptions(), 2) is None  # epoch 1 of 2 weighs alpha / 2
    assert zero_weight_warning(TKSOptions(schedule="constant"), 1) is None
    loss = TKSLoss()
    with pytest.warns(TKSWarning, match=re.escape(ramp)) as caught:
        loss.weight(0, 1)
        loss.weight(0, 1)  # the same run again: not said twice
    assert len(caught) == 1 and outside_tks_and_torch(caught[0].filename)  # it points at the caller's line
    logits, target = make_logits(steps=2, batch=3, classes=4)
    with pytest.warns(TKSWarning) as caught:
        TKSLoss()(logits, target, epoch=0, epochs=1)  # through nn.Module.__call__ and forward
    assert outside_tks_and_torch(caught[0].filename), caught[0].filename
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loss.weight(1, 4) == pytest.approx(0.175)  # another run length that does weigh: no warning


def test_a_loss_registered_by_name_gets_its_options_epoch_and_schedule(monkeypatch):
    monkeypatch.setattr(LOSSES, "_entries", dict(LOSSES._entries))  # the registration ends with the test
    seen = {}

    def schedule(options, epoch, epochs):
        return options["scale"] * epoch / epochs

    register_loss("probe-sectioned", section="tks")(tks_objective)
    assert LOSSES["probe-sectioned"].section == "tks" and LOSSES["probe-sectioned"].weight is None

    @register_loss("probe-loss", weight=schedule)
    def probe(logits, target, *, epoch, epochs, scale: float = 1.0):
        seen.update(epoch=epoch, epochs=epochs, scale=scale)
        return logits.sum() * 0 + scale

    entry = LOSSES["probe-loss"]
    assert (entry.objective, entry.section, entry.weight) == (probe, None, schedule)
    assert entry.options == ["scale"] and "probe-loss" in list_losses() and list_losses() == sorted(LOSSES)
    criterion = Criterion(LossConfig(name="probe-loss", options={"scale": 2.0}))
    logits, target = make_logits(steps=2, batch=3, classes=4)
    out = criterion(logits, target)  # the defaults: epoch 0 of 1
    assert seen == {"epoch": 0, "epochs": 1, "scale": 2.0} and set(out.parts) == {"probe-loss"}
    criterion(logits, target, epoch=3, epochs=8)
    assert seen == {"epoch": 3, "epochs": 8, "scale": 2.0}
    assert criterion.tks_weight(3, 8) == 0.75  # its own schedule, given loss.options
    with pytest.raises(OptionError, match=r"^loss 'probe-loss' has no option scael \(.*probe takes: scale\)$"):
        Criterion(LossConfig(name="probe-loss", options={"scael": 2.0}))


def test_a_built_in_loss_refuses_options_by_name():
    with pytest.raises(OptionError) as refused:
        Criterion(LossConfig(name="tks", options={"temperature": 2.0, "alpha": 0.1}))
    assert str(refused.value) == (
        "loss 'tks' takes its options from loss.tks, not loss.options (got alpha, temperature)"
    )


def test_cascade_keeps_time_order_among_equally_confident_steps():
    # Steps 0 and 1 are equally confident (the same logits in another class order), step 2 the least confident;
    # the ranking 0, 1, 2 (time order among ties) distils 0 -> 1 -> 2, never 1 -> 0 -> 2.
    logits = torch.tensor([[[2.0, 1.0, 0.0, 0.0]], [[2.0, 0.0, 1.0, 0.0]], [[0.0, 0.5, 0.0, 0.0]]], dtype=torch.float64)
    confidence = torch.softmax(logits, -1).amax(-1)
    assert confidence[0] == confidence[1] > confidence[2]  # the case this test is about
    q = torch.log_softmax(logits / 2.0, -1)

    def kl(a, b):
        return (q[a].exp() * (q[a] - q[b])).sum()

    torch.testing.assert_close(strong_weak_loss(logits, direction="cascade"), (kl(0, 1) + kl(1, 2)) / 2)
    assert not torch.isclose(kl(0, 1) + kl(1, 2), kl(1, 0) + kl(0, 2))  # the other order would show


def test_cascade_keeps_time_order_among_many_equally_confident_steps():
    # 96 steps, each a permutation of the same logits: all equally confident. Time order must hold however many
    # tie (an unstable sort reorders ties at this size); the reference ranks by Python's stable sort.
    perms = [torch.tensor([2.0, *p]) for p in itertools.permutations([1.0, 0.0, 0.5])]
    logits = torch.stack([perms[(7 * t) % len(perms)] for t in range(96)]).unsqueeze(1).double()  # [96, 1, 4]
    q = torch.log_softmax(logits / 2.0, -1)[:, 0]
    order = sorted(range(96), key=lambda t: -float(torch.softmax(logits[t, 0], -1).max()))
    assert order == list(range(96))  # all tie: the ranking is time order
    expected = sum((q[a].exp() * (q[a] - q[b])).sum() for a, b in itertools.pairwise(order)) / 95
    torch.testing.assert_close(strong_weak_loss(logits, direction="cascade"), expected)


LOSS_CALLS = {
    "ce": mean_ce,
    "ls": label_smoothing_ce,
    "tet": tet_loss,
    "tks": tks_loss,
    "tks consensus": partial(tks_loss, teacher_source="consensus"),
}


@pytest.mark.parametrize("loss", list(LOSS_CALLS))
@pytest.mark.parametrize("bad", [-1, 4, 100])
def test_class_indices_outside_the_classes_are_refused_as_cross_entropy_does(loss, bad):
    logits = torch.randn(2, 3, 4)
    target = torch.tensor([0, bad, 3])
    with pytest.raises(IndexError):  # what cross-entropy does with such a target
        torch.nn.functional.cross_entropy(logits[0], target)
    message = f"target holds class index {bad}, outside [0, 4) for logits of 4 classes"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        LOSS_CALLS[loss](logits, target)


@pytest.mark.parametrize("loss", list(LOSS_CALLS))
@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
def test_logits_without_steps_samples_or_classes_are_refused(loss, shape):
    message = f"logits [T, B, K] need at least one step, sample and class, got shape {shape}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        LOSS_CALLS[loss](torch.randn(shape), torch.zeros(shape[1], dtype=torch.long))


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
def test_strong_weak_refuses_empty_logits(shape):
    with pytest.raises(ValueError, match=r"^logits \[T, B, K\] need at least one step, sample and class"):
        strong_weak_loss(torch.randn(shape))


def test_the_last_class_index_is_accepted():
    logits = torch.randn(2, 3, 4)
    for loss in LOSS_CALLS.values():
        assert torch.isfinite(loss(logits, torch.tensor([0, 3, 3])))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_strong_weak_at_one_step_says_its_term_is_zero(direction):
    with pytest.warns(TKSWarning) as caught:
        assert strong_weak_loss(torch.randn(1, 4, 3), direction=direction) == 0
    assert [str(w.message) for w in caught] == [
        "the Strong2Weak/Weak2Strong term is 0: at T=1 the one step is both the strongest and the weakest, so the "
        "batch trains plain cross-entropy"
    ]
    assert Path(tks.__file__).parent not in Path(caught[0].filename).parents  # the caller's line, not tks's


@pytest.mark.parametrize("direction", ["strong2weak", "weak2strong", "both"])
def test_saturated_logits_say_their_term_is_zero(direction):
    logits = torch.zeros(3, 2, 4)
    logits[..., 0] = torch.tensor([100.0, 200.0, 300.0]).view(3, 1)  # every softmax is 1.0 in float32
    with pytest.warns(TKSWarning) as caught:
        assert strong_weak_loss(logits, direction=direction) == 0
    assert [str(w.message) for w in caught] == [
        "the Strong2Weak/Weak2Strong term is 0: every step of this batch is equally confident (identical outputs, or "
        "a softmax so saturated that each confidence rounds to 1), so the batch trains plain cross-entropy"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one sharper step: a strongest and a weakest, no warning
        logits[0, :, 0] = 1.0
        assert strong_weak_loss(logits, direction=direction) > 0
