"""Calibrated early exit (tks.anytime): each piece against a brute-force computation, and the guarantee itself."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch

from tks.anytime import (
    ExitRule,
    binomial_cdf,
    binomial_cdf_table,
    calibrate,
    empirical_threshold,
    evaluate_rule,
    exit_losses,
    exit_rule_of,
    exit_steps,
    exit_stream,
    grid_losses,
    p_value,
    running_scores,
    threshold_grid,
)
from tks.config import ConfigError


def _exact_cdf(k: int, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)), Fraction(0))


@pytest.mark.parametrize(("k", "n", "p"), [(0, 10, "1/10"), (3, 10, "1/4"), (7, 20, "1/2"), (1, 50, "1/100")])
def test_binomial_cdf_equals_the_exact_sum(k: int, n: int, p: str) -> None:
    assert binomial_cdf(k, n, float(Fraction(p))) == pytest.approx(float(_exact_cdf(k, n, Fraction(p))), rel=1e-12)


def test_binomial_cdf_at_scale_matches_scipy() -> None:
    binom = pytest.importorskip("scipy.stats").binom
    for k, n, p in [(30, 5000, 0.01), (480, 10000, 0.05), (0, 100000, 1e-5), (9999, 10000, 0.999)]:
        assert binomial_cdf(k, n, p) == pytest.approx(binom.cdf(k, n, p), rel=1e-9)
    assert binomial_cdf(-1, 10, 0.5) == 0.0
    assert binomial_cdf(10, 10, 0.5) == 1.0


def test_binomial_cdf_is_one_at_and_above_n() -> None:
    """P(Binomial(n, p) <= k) = 1 for k >= n exactly, where the summed pmf rounds below 1 (0.9999999999999997 at n = 5,
    p = 0.02): a p-value of 1 never rejects, whatever delta."""
    for n, p in [(5, 0.02), (2, 0.01), (3, 0.3)]:
        assert binomial_cdf_table(n, p)[n] < 1.0  # the case this test is about
        assert binomial_cdf(n, n, p) == 1.0
        assert binomial_cdf(n + 1, n, p) == 1.0


def test_binomial_cdf_is_never_above_one() -> None:
    """A probability: the sum of the pmf rounds to just above 1 near k = n (e.g. 1 + 3e-13 at n = 333), clipped."""
    for n, p in [(50, 0.05), (333, 0.01), (333, 0.5), (5000, 0.2)]:
        assert binomial_cdf_table(n, p).max() <= 1.0


@pytest.mark.parametrize(("n", "epsilon"), [(60, "1/20"), (400, "1/100"), (150, "1/5")])
def test_p_value_is_valid_under_the_null(n: int, epsilon: str) -> None:
    """Losses of true risk exactly epsilon: P(p <= delta) <= delta (super-uniform), summed exactly over the sums."""
    eps, delta = Fraction(epsilon), 0.1
    pmf = [math.comb(n, s) * eps**s * (1 - eps) ** (n - s) for s in range(n + 1)]
    rejected = sum((pmf[s] for s in range(n + 1) if p_value(s, n, float(eps)) <= delta), Fraction(0))
    assert rejected <= delta
    assert rejected > delta / 4  # not vacuous: the test rejects at a rate close to delta


def test_running_scores_against_a_loop() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 4, dtype=torch.float64)
    conf, answers = running_scores(logits)  # confidence is the default
    margin, _ = running_scores(logits, "margin")
    for t in range(5):
        for i in range(7):
            probs = sorted(torch.softmax(logits[: t + 1, i].mean(0), -1).tolist(), reverse=True)
            assert conf[t, i].item() == pytest.approx(probs[0])
            assert margin[t, i].item() == pytest.approx(probs[0] - probs[1])
            assert answers[t, i].item() == int(logits[: t + 1, i].sum(0).argmax())


def test_one_class_scores_one_and_an_unknown_rule_is_refused() -> None:
    """With K = 1 the only probability is 1, and there is no second one for the margin to subtract."""
    logits = torch.randn(3, 4, 1, dtype=torch.float64)
    for rule in ("confidence", "margin"):
        scores, answers = running_scores(logits, rule)
        assert scores.tolist() == [[1.0] * 4] * 3 and answers.tolist() == [[0] * 4] * 3
    with pytest.raises(ConfigError, match=r"^rule must be one of confidence, margin, got 'entropy'$"):
        running_scores(logits, "entropy")


def test_exit_steps_and_losses_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.2, 0.5], [0.95, 0.7, 0.4], [0.99, 0.8, 0.3]])  # [T=3, N=3]
    assert exit_steps(scores, 0.7).tolist() == [0, 1, 2]  # third never reaches 0.7: it runs all T
    assert exit_steps(scores, 0.5).tolist() == [0, 1, 0]
    assert exit_steps(scores, None).tolist() == [2, 2, 2]
    answers = torch.tensor([[1, 0, 2], [1, 2, 2], [0, 2, 2]])
    target = torch.tensor([0, 2, 1])
    exits = torch.tensor([0, 0, 0])
    # disagreement: sample 0 answers 1 early, 0 at T; sample 1 answers 0 early, 2 at T; sample 2 agrees
    assert exit_losses(answers, exits, target, "disagreement").tolist() == [1.0, 1.0, 0.0]
    # accuracy drop: only where T is right and the early answer is wrong (samples 0 and 1; sample 2 wrong at T)
    assert exit_losses(answers, exits, target, "accuracy_drop").tolist() == [1.0, 1.0, 0.0]
    assert exit_losses(answers, exits, torch.tensor([1, 0, 2]), "accuracy_drop").tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match=r"^the accuracy_drop risk needs the labels$"):
        exit_losses(answers, exits, None, "accuracy_drop")


def test_grid_is_fixed_descending_and_covers_0_to_1() -> None:
    grid = threshold_grid()
    assert grid[0] == 1.0 and grid[-1] == 0.0
    assert np.all(np.diff(grid) < 0)
    assert (grid > 0.99).sum() >= 20  # dense where trained networks' confidences lie
    # as the docstring builds it: 0, 0.005, ..., 1 and 1 - 10^-7, 1 - 10^-6.75, ... (1 - 10^-2 = 0.99 is in both)
    expected = [k / 200 for k in range(201)] + [1 - 10 ** (-7 + j / 4) for j in range(20)]
    assert grid.tolist() == pytest.approx(sorted(expected, reverse=True), rel=0, abs=1e-12)


@pytest.mark.parametrize("risk", ["disagreement", "accuracy_drop"])
def test_grid_losses_equal_the_rule_at_each_threshold(risk: str) -> None:
    """The interval sums over the grid equal exit_steps + exit_losses run threshold by threshold."""
    torch.manual_seed(0)
    logits = torch.randn(5, 300, 4, dtype=torch.float64) * 2
    target = torch.randint(0, 4, (300,))
    scores, answers = running_scores(logits, "margin")
    grid = np.concatenate([threshold_grid(), scores[2, :5].numpy()])  # thresholds equal to a score: ties
    expected = [exit_losses(answers, exit_steps(scores, float(g)), target, risk).sum().item() for g in grid]
    assert grid_losses(scores, answers, target, risk, grid).tolist() == expected
    assert max(expected) > 0 and min(expected) < max(expected)


def test_grid_losses_when_a_running_maximum_equals_a_grid_point() -> None:
    """One sample, two classes, worked by hand: confidence exactly 0.5 at step 1 (equal logits, answer 0), 0.731 at
    step 2 (mean (0, 1): answer 1), 0.661 at step 3 (mean (4/3, 2/3): answer 0, the final answer).

    At 0.5 it exits at step 1 and agrees with T; at 0.6 at step 2 and disagrees; above 0.731 it runs to T.
    """
    logits = torch.tensor([[[0.0, 0.0]], [[0.0, 2.0]], [[4.0, 0.0]]], dtype=torch.float64)
    scores, answers = running_scores(logits)
    assert scores[0, 0].item() == 0.5 and answers[:, 0].tolist() == [0, 1, 0]
    grid = np.array([0.5, 0.6, 0.75, 1.0])
    assert grid_losses(scores, answers, None, "disagreement", grid).tolist() == [0, 1, 0, 0]


def _synthetic(n: int, generator: torch.Generator, steps: int = 4, classes: int = 5) -> tuple:
    """A known distribution of per-step logits: the true class's logit grows with t, the noise is Gaussian."""
    target = torch.randint(0, classes, (n,), generator=generator)
    signal = torch.nn.functional.one_hot(target, classes).double() * 2.5
    noise = torch.randn(steps, n, classes, generator=generator, dtype=torch.float64)
    scale = torch.linspace(0.6, 1.4, steps, dtype=torch.float64).view(-1, 1, 1)
    return signal * scale + noise, target


def _pool_losses(pool: tuple, risk: str) -> dict[float | None, torch.Tensor]:
    """Every pool sample's loss ``[N]`` at every grid threshold (and at never exiting)."""
    logits, target = pool
    scores, answers = running_scores(logits, "confidence")
    thresholds = [None, *map(float, threshold_grid())]
    return {t: exit_losses(answers, exit_steps(scores, t), target, risk) for t in thresholds}


def _significantly_above(broken: int, draws: int, delta: float) -> bool:
    """Whether ``broken`` failures in ``draws`` refute a failure rate <= delta (one-sided exact test, level 1%)."""
    tail = sum(math.comb(draws, k) * delta**k * (1 - delta) ** (draws - k) for k in range(broken, draws + 1))
    return tail < 0.01


@pytest.mark.parametrize("risk", ["disagreement", "accuracy_drop"])
def test_the_guarantee_holds_at_the_stated_rate(risk: str) -> None:
    """Over many calibration sets drawn from a known distribution, P(R(lambda_hat) > epsilon) <= delta.

    R, the population risk, is measured on 200,000 fresh samples (standard error about 3e-4 at R = 0.02); the
    realised risk on a test set of 20,000 other fresh samples is checked too. Both failure counts must not be
    significantly above delta x draws (an exact binomial test, so that Monte Carlo noise does not decide). The
    uncorrected choice (the lowest threshold whose calibration risk is <= epsilon) breaks the bound in about half
    of the draws: this test can fail.
    """
    generator = torch.Generator().manual_seed(1)
    pool = _pool_losses(_synthetic(200_000, generator), risk)
    population = {t: losses.mean().item() for t, losses in pool.items()}
    epsilon, delta, draws, n = 0.02, 0.1, 150, 1000
    broken = broken_on_test = naive_broken = exits_early = 0
    for _ in range(draws):
        logits, target = _synthetic(n, generator)
        rule = calibrate(logits, target, epsilon=epsilon, delta=delta, risk=risk)
        test = torch.randint(0, 200_000, (20_000,), generator=generator)
        broken += population[rule.threshold] > epsilon
        broken_on_test += pool[rule.threshold][test].mean().item() > epsilon
        exits_early += rule.calibration_steps < rule.num_steps - 0.5
        naive_broken += population[empirical_threshold(logits, target, epsilon=epsilon, risk=risk)] > epsilon
    assert not _significantly_above(broken, draws, delta)
    assert not _significantly_above(broken_on_test, draws, delta)
    assert exits_early == draws  # not vacuous: every rule saves at least half a step
    assert _significantly_above(naive_broken, draws, delta)


def test_fixed_sequence_stops_at_the_first_failure() -> None:
    """A risk that is high at 0.9 but zero below: the walk must stop above 0.9, not jump to the safe low thresholds.

    200 samples are confident (0.96) at step 1 with an answer that flips at step 2 (a loss when they exit at step 1,
    for any threshold <= 0.96); 800 are never confident (0.36) and never change their answer.
    """
    n_bad, n_good = 200, 800
    logits = torch.zeros(2, n_bad + n_good, 3, dtype=torch.float64)
    logits[0, :n_bad, 0] = math.log(0.96 / 0.02)  # confident at step 1 on class 0 ...
    logits[1, :n_bad, 1] = 40.0  # ... but class 1 at T
    logits[:, n_bad:, 2] = 0.1  # always class 2, never confident
    rule = calibrate(logits, epsilon=0.05, delta=0.1)
    # the grid point above 0.96: the walk stopped there, with no loss among the 1000, so p = P(Bin(1000, 0.05) = 0)
    expected = ExitRule("confidence", 0.965, 2, "disagreement", 0.05, 0.1, "val", 1000, 0.0, 2.0, 0.95**1000)
    assert rule == dataclasses.replace(expected, p_value=rule.p_value)
    assert rule.p_value == pytest.approx(expected.p_value, rel=1e-9)


def _flipping(n_flip: int, n_steady: int, gap: float) -> torch.Tensor:
    """Two classes, T = 2: ``n_flip`` samples lead by ``gap`` logits at step 1 and lose at step 2 (a loss when they
    exit at step 1); ``n_steady`` never lead by more than 0.1 and never change their answer."""
    logits = torch.zeros(2, n_flip + n_steady, 2, dtype=torch.float64)
    logits[0, :n_flip, 0] = gap
    logits[1, :n_flip, 1] = 3 * gap
    logits[:, n_flip:, 1] = 0.1
    return logits


def test_calibrate_thresholds_the_rule_it_is_given() -> None:
    """Two classes: flippers at softmax sigmoid(3) = 0.9526 at step 1, whose margin is 2 x 0.9526 - 1 = 0.9051.

    The walk stops at the grid point above the score the flippers reach: 0.955 for the confidence, 0.91 for the margin.
    """
    logits = _flipping(200, 800, 3.0)
    assert calibrate(logits, epsilon=0.05, delta=0.1).threshold == 0.955
    assert calibrate(logits, epsilon=0.05, delta=0.1, rule="margin").threshold == 0.91


def test_one_step_never_exits_early() -> None:
    """T = 1: every sample answers at step 1, whatever the threshold, with no loss."""
    logits, target = _synthetic(300, torch.Generator().manual_seed(11), steps=1)
    for risk in ("disagreement", "accuracy_drop"):
        rule = calibrate(logits, target, epsilon=0.02, delta=0.1, risk=risk)
        assert (rule.calibration_steps, rule.calibration_risk, rule.num_steps) == (1.0, 0.0, 1)
        assert rule.threshold == 0.0  # nothing to lose: every threshold is certified (0.98^300 = 0.002 <= 0.1)


def test_a_p_value_equal_to_delta_is_rejected_and_the_walk_can_stop_at_one() -> None:
    """ "Reject when the p-value is at most delta"; the most cautious threshold, 1.0, can be the only one rejected."""
    logits = _flipping(0, 300, 0.0)  # no sample ever changes its answer: every threshold has no loss
    delta = binomial_cdf(0, 300, 0.01)  # = 0.99^300, the p-value of every threshold
    assert calibrate(logits, epsilon=0.01, delta=delta).threshold == 0.0
    assert calibrate(logits, epsilon=0.01, delta=delta * (1 - 1e-9)).threshold is None
    # 30 samples reach 1 - 5e-8 >= 1 - 10^-7 at step 1 and flip: only 1.0 keeps them to T
    rule = calibrate(_flipping(30, 270, math.log(2e7)), epsilon=0.01, delta=0.1)
    assert rule.threshold == 1.0 and rule.p_value == pytest.approx(0.99**300, rel=1e-9)


def test_calibrate_defaults_and_refusals() -> None:
    """delta 0.05, the confidence rule, the disagreement risk, the val split (docs/anytime.md)."""
    rule = calibrate(_flipping(0, 300, 0.0), epsilon=0.02)
    assert (rule.delta, rule.rule, rule.risk, rule.split, rule.num_samples) == (
        0.05,
        "confidence",
        "disagreement",
        "val",
        300,
    )
    flat = torch.zeros(4, 5)
    with pytest.raises(ConfigError, match=re.escape("needs logits [T, N, K] of at least one sample, got [4, 5]")):
        calibrate(flat, epsilon=0.1)
    assert calibrate(flat[:, :1, None].expand(4, 1, 3), epsilon=0.1).num_samples == 1  # one sample is enough


def test_too_few_samples_never_exit_early() -> None:
    """n = 100 cannot certify 1% at delta 0.05 (0.99^100 = 0.37): the rule runs all T steps."""
    logits, target = _synthetic(100, torch.Generator().manual_seed(3))
    rule = calibrate(logits, target, epsilon=0.01, delta=0.05)
    assert rule.threshold is None and rule.p_value is None
    assert rule.calibration_steps == 4.0 and rule.calibration_risk == 0.0


@pytest.mark.parametrize(("rule", "risk"), [("confidence", "disagreement"), ("margin", "accuracy_drop")])
def test_empirical_threshold_is_the_lowest_within_epsilon(rule: str, risk: str) -> None:
    """Threshold by threshold: the lowest grid point whose calibration risk is <= epsilon, a tie included."""
    logits, target = _synthetic(200, torch.Generator().manual_seed(8))
    scores, answers = running_scores(logits, rule)
    risks = {
        float(g): exit_losses(answers, exit_steps(scores, float(g)), target, risk).mean().item()
        for g in threshold_grid()
    }
    epsilon = sorted(set(risks.values()))[2]  # a risk some thresholds have exactly
    kwargs = {} if rule == "confidence" else {"rule": rule, "risk": risk}  # the defaults: confidence, disagreement
    found = empirical_threshold(logits, target, epsilon=epsilon, **kwargs)
    assert found == min(t for t, r in risks.items() if r <= epsilon)
    assert 0.0 < found < 1.0


def test_empirical_threshold_none_when_even_1_is_too_risky() -> None:
    """Samples exactly certain (softmax 1.0 in float64) at step 1 that flip at step 2 exit early at every threshold."""
    logits = _flipping(30, 270, 800.0)
    assert running_scores(logits)[0][0, 0].item() == 1.0
    assert empirical_threshold(logits, None, epsilon=0.05) is None
    assert empirical_threshold(logits, None, epsilon=0.1) == 0.0  # all 30 losses are 10% of 300


@pytest.mark.parametrize("risk", ["disagreement", "accuracy_drop"])
def test_evaluate_rule_against_a_loop(risk: str) -> None:
    generator = torch.Generator().manual_seed(4)
    logits, target = _synthetic(300, generator)
    logits += 2 * torch.randn(logits.shape, generator=generator, dtype=torch.float64)  # wrong at T at times
    steps, correct, changed, dropped, full_correct = [], 0, 0, 0, 0
    for i in range(300):
        for t in range(4):
            probs = sorted(torch.softmax(logits[: t + 1, i].mean(0), -1).tolist(), reverse=True)
            if probs[0] - probs[1] >= 0.4 or t == 3:
                answer = int(logits[: t + 1, i].mean(0).argmax())
                break
        final = int(logits[:, i].mean(0).argmax())
        steps.append(t + 1)
        correct += answer == target[i].item()
        changed += answer != final
        dropped += answer != target[i].item() and final == target[i].item()
        full_correct += final == target[i].item()
    assert 0 < full_correct - correct < dropped < changed  # the risks and the accuracy drop all differ here
    realised = (changed if risk == "disagreement" else dropped) / 300
    rule = ExitRule("margin", 0.4, 4, risk, realised, 0.1, "val", 300, 0.0, 0.0)  # the bound met with equality
    assert evaluate_rule(rule, logits, target) == {
        "mean_steps": pytest.approx(np.mean(steps)),
        "steps_histogram": [steps.count(t) for t in (1, 2, 3, 4)],
        "accuracy": pytest.approx(correct / 300),
        "full_accuracy": pytest.approx(full_correct / 300),
        "risk": pytest.approx(realised),
        "accuracy_drop": pytest.approx((full_correct - correct) / 300),
        "epsilon": realised,
        "within_bound": True,
        "num_samples": 300,
    }
    assert not evaluate_rule(dataclasses.replace(rule, epsilon=realised * 0.999), logits, target)["within_bound"]
    with pytest.raises(ConfigError, match=r"^the rule was calibrated at T=4; these logits have T=3$"):
        evaluate_rule(rule, logits[:3], target)


def test_evaluate_rule_counts_a_step_nobody_reaches() -> None:
    """Two samples sure at step 1 and two at step 2 of 3: the histogram still has T entries."""
    logits = torch.zeros(3, 4, 2, dtype=torch.float64)
    logits[0, :2, 0] = 20.0  # softmax 1 - 2e-9 at step 1
    logits[1, 2:, 1] = 40.0  # the running mean leads by 20 at step 2
    rule = ExitRule("confidence", 0.99, 3, "disagreement", 0.05, 0.1, "val", 4, 0.0, 0.0)
    assert evaluate_rule(rule, logits, torch.tensor([0, 0, 1, 1]))["steps_histogram"] == [2, 2, 0]


def test_exit_stream_matches_the_batch_rule_and_stops_reading() -> None:
    logits, target = _synthetic(64, torch.Generator().manual_seed(5))
    logits = logits * 3  # confident enough that every sample exits by step 3
    rule = ExitRule("confidence", 0.9, 4, "disagreement", 0.05, 0.1, "val", 64, 0.0, 0.0)
    scores, answers = running_scores(logits, "confidence")
    exits = exit_steps(scores, 0.9)
    read = []

    def steps():
        for t in range(4):
            read.append(t)
            yield logits[t].float()

    got, used = exit_stream(rule, steps())
    assert got.dtype == used.dtype == torch.int64  # class indices and step counts
    assert used.tolist() == (exits + 1).tolist()
    assert got.tolist() == answers.gather(0, exits.long().unsqueeze(0)).squeeze(0).tolist()
    assert len(read) == int(exits.max()) + 1  # the network need not run past the last exit
    single, used_one = exit_stream(rule, iter(logits[:, :1]))
    assert used_one.item() == exits[0].item() + 1 and single.item() == got[0].item()


def test_exit_stream_shorter_than_t_and_never_exiting() -> None:
    logits, _ = _synthetic(8, torch.Generator().manual_seed(6))
    never = ExitRule("confidence", None, 4, "disagreement", 0.05, 0.1, "val", 8, 0.0, 4.0)
    answers, used = exit_stream(never, iter(logits))
    assert used.tolist() == [4] * 8 and answers.tolist() == logits.mean(0).argmax(-1).tolist()
    assert answers.dtype == used.dtype == torch.int64
    answers, used = exit_stream(never, iter(logits[:2]))  # the stream ended at step 2
    assert used.tolist() == [2] * 8 and answers.tolist() == logits[:2].mean(0).argmax(-1).tolist()
    with pytest.raises(ValueError, match=r"^exit_stream needs at least one step of logits$"):
        exit_stream(never, iter([]))


def test_exit_stream_reads_at_most_t_steps_and_exits_at_a_tie() -> None:
    """An endless stream stops at T; a score equal to the threshold exits (>=), as in ``exit_steps``."""
    logits, _ = _synthetic(16, torch.Generator().manual_seed(9))
    scores, answers = running_scores(logits)
    tied = int(torch.nonzero(scores[0] < scores[1])[0])
    threshold = scores[1, tied].item()  # a sample below it at step 1 reaches it exactly at step 2
    read = []

    def endless():
        while True:
            read.append(len(read))
            yield logits[min(len(read), 4) - 1]

    rule = ExitRule("confidence", threshold, 4, "disagreement", 0.05, 0.1, "val", 16, 0.0, 0.0)
    got, used = exit_stream(rule, endless())
    exits = exit_steps(scores, threshold)
    assert exits[tied] == 1 and used[tied] == 2
    assert used.tolist() == (exits + 1).tolist() and got.tolist() == answers.gather(0, exits[None]).squeeze(0).tolist()
    never = ExitRule("confidence", None, 4, "disagreement", 0.05, 0.1, "val", 16, 0.0, 4.0)
    read.clear()
    got, used = exit_stream(never, endless())
    assert len(read) == 4 and used.tolist() == [4] * 16 and got.tolist() == answers[3].tolist()


def test_rule_round_trips_and_bad_input_is_one_line() -> None:
    rule = ExitRule("margin", 0.3, 4, "accuracy_drop", 0.01, 0.05, "val", 5000, 0.004, 2.5, 0.01)
    assert ExitRule.from_dict(rule.to_dict()) == rule
    # keys beside the rule's (exit-rule.json's checkpoint and epoch) are ignored; p_value may be absent
    assert ExitRule.from_dict({**rule.to_dict(), "epoch": 3}) == rule
    without_p = {k: v for k, v in rule.to_dict().items() if k != "p_value"}
    assert ExitRule.from_dict(without_p) == ExitRule(**without_p) and ExitRule(**without_p).p_value is None
    with pytest.raises(ConfigError, match=r"^not an exit rule: missing delta, threshold$"):
        ExitRule.from_dict({k: v for k, v in rule.to_dict().items() if k not in ("threshold", "delta")})
    with pytest.raises(ConfigError, match="rule must be one of"):
        ExitRule.from_dict({**rule.to_dict(), "rule": "entropy"})
    logits, target = _synthetic(50, torch.Generator().manual_seed(7))
    with pytest.raises(ConfigError, match=r"epsilon \(--risk\) must be in \(0, 1\)"):
        calibrate(logits, target, epsilon=0.0)
    with pytest.raises(ConfigError, match=r"delta \(--delta\)"):
        calibrate(logits, target, epsilon=0.1, delta=1.5)
    with pytest.raises(ConfigError, match="risk must be one of"):
        calibrate(logits, target, epsilon=0.1, risk="top5")
    with pytest.raises(
        ConfigError, match=r"^calibration logits are not all finite \(NaN or inf\): the model's outputs"
    ):
        calibrate(logits.index_fill(1, torch.tensor([3]), float("nan")), target, epsilon=0.1)
    with pytest.raises(ConfigError, match="at least one sample"):
        calibrate(logits[:, :0], target[:0], epsilon=0.1)


def test_exit_rule_of_a_graphs_metadata() -> None:
    """The rule ``tks export`` stores as JSON text, read back as str, bytes, numpy bytes or a 0-d array (HDF5)."""
    rule = ExitRule("margin", 0.3, 4, "accuracy_drop", 0.01, 0.05, "val", 5000, 0.004, 2.5, 0.01)
    text = json.dumps(rule.to_dict())
    arrays = (np.array(text.encode()), np.array(text.encode(), dtype=object), np.array(text))  # bytes and str
    for stored in (text, text.encode(), np.bytes_(text.encode()), *arrays):
        assert exit_rule_of({"dt": 1.0, "exit_rule": stored}) == rule
    assert exit_rule_of({"dt": 1.0}) is None
    with pytest.raises(ConfigError, match="^the graph's exit_rule metadata is not JSON text: Expecting value"):
        exit_rule_of({"exit_rule": "not json"})
    with pytest.raises(
        ConfigError, match=r"^the graph's exit_rule metadata is not an exit rule \(a JSON object\), got 3$"
    ):
        exit_rule_of({"exit_rule": "3"})
    with pytest.raises(ConfigError, match="^not an exit rule: missing"):  # said once, not twice
        exit_rule_of({"exit_rule": "{}"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_logits_give_the_cpu_results() -> None:
    """The tensors the functions make live on the logits' device (on the CPU, the default, no test can tell)."""
    logits, target = _synthetic(2000, torch.Generator().manual_seed(10))
    on_cpu = calibrate(logits, target, epsilon=0.05, delta=0.1)
    on_gpu = calibrate(logits.cuda(), target.cuda(), epsilon=0.05, delta=0.1)
    assert on_gpu.threshold == on_cpu.threshold is not None
    assert on_gpu.calibration_steps == pytest.approx(on_cpu.calibration_steps)
    answers, used = exit_stream(on_cpu, iter(logits.cuda()))
    expected_answers, expected_used = exit_stream(on_cpu, iter(logits))
    assert answers.device.type == used.device.type == "cuda"
    assert answers.tolist() == expected_answers.tolist() and used.tolist() == expected_used.tolist()
