"""Calibrated early exit (tks.anytime): each piece against a brute-force computation, and the guarantee itself."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from tks.anytime import (
    ExitRule,
    binomial_cdf,
    calibrate,
    empirical_threshold,
    evaluate_rule,
    exit_losses,
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
    conf, answers = running_scores(logits, "confidence")
    margin, _ = running_scores(logits, "margin")
    for t in range(5):
        for i in range(7):
            probs = sorted(torch.softmax(logits[: t + 1, i].mean(0), -1).tolist(), reverse=True)
            assert conf[t, i].item() == pytest.approx(probs[0])
            assert margin[t, i].item() == pytest.approx(probs[0] - probs[1])
            assert answers[t, i].item() == int(logits[: t + 1, i].sum(0).argmax())


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
    with pytest.raises(ConfigError, match="needs the labels"):
        exit_losses(answers, exits, None, "accuracy_drop")


def test_grid_is_fixed_descending_and_covers_0_to_1() -> None:
    grid = threshold_grid()
    assert grid[0] == 1.0 and grid[-1] == 0.0
    assert np.all(np.diff(grid) < 0)
    assert (grid > 0.99).sum() >= 20  # dense where trained networks' confidences lie


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
    assert rule.threshold == 0.965  # the grid point above 0.96: the walk stopped there
    assert rule.calibration_steps == 2.0
    assert rule.calibration_risk == 0.0


def test_too_few_samples_never_exit_early() -> None:
    """n = 100 cannot certify 1% at delta 0.05 (0.99^100 = 0.37): the rule runs all T steps."""
    logits, target = _synthetic(100, torch.Generator().manual_seed(3))
    rule = calibrate(logits, target, epsilon=0.01, delta=0.05)
    assert rule.threshold is None and rule.p_value is None
    assert rule.calibration_steps == 4.0 and rule.calibration_risk == 0.0


def test_evaluate_rule_against_a_loop() -> None:
    logits, target = _synthetic(300, torch.Generator().manual_seed(4))
    rule = ExitRule("margin", 0.4, 4, "disagreement", 0.05, 0.1, "val", 300, 0.0, 0.0)
    result = evaluate_rule(rule, logits, target)
    steps, correct, changed, full_correct = [], 0, 0, 0
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
        full_correct += final == target[i].item()
    assert result["mean_steps"] == pytest.approx(np.mean(steps))
    assert result["steps_histogram"] == [steps.count(t) for t in (1, 2, 3, 4)]
    assert result["accuracy"] == pytest.approx(correct / 300)
    assert result["full_accuracy"] == pytest.approx(full_correct / 300)
    assert result["risk"] == pytest.approx(changed / 300)
    assert result["within_bound"] == (changed / 300 <= 0.05)
    with pytest.raises(ConfigError, match="calibrated at T=4"):
        evaluate_rule(rule, logits[:3], target)


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
    answers, used = exit_stream(never, iter(logits[:2]))  # the stream ended at step 2
    assert used.tolist() == [2] * 8 and answers.tolist() == logits[:2].mean(0).argmax(-1).tolist()
    with pytest.raises(ValueError, match="at least one step"):
        exit_stream(never, iter([]))


def test_rule_round_trips_and_bad_input_is_one_line() -> None:
    rule = ExitRule("margin", 0.3, 4, "accuracy_drop", 0.01, 0.05, "val", 5000, 0.004, 2.5, 0.01)
    assert ExitRule.from_dict(rule.to_dict()) == rule
    with pytest.raises(ConfigError, match="missing threshold"):
        ExitRule.from_dict({k: v for k, v in rule.to_dict().items() if k != "threshold"})
    with pytest.raises(ConfigError, match="rule must be one of"):
        ExitRule.from_dict({**rule.to_dict(), "rule": "entropy"})
    logits, target = _synthetic(50, torch.Generator().manual_seed(7))
    with pytest.raises(ConfigError, match=r"epsilon \(--risk\) must be in \(0, 1\)"):
        calibrate(logits, target, epsilon=0.0)
    with pytest.raises(ConfigError, match=r"delta \(--delta\)"):
        calibrate(logits, target, epsilon=0.1, delta=1.5)
    with pytest.raises(ConfigError, match="risk must be one of"):
        calibrate(logits, target, epsilon=0.1, risk="top5")
    with pytest.raises(ConfigError, match="not all finite"):
        calibrate(logits.index_fill(1, torch.tensor([3]), float("nan")), target, epsilon=0.1)
    with pytest.raises(ConfigError, match="at least one sample"):
        calibrate(logits[:, :0], target[:0], epsilon=0.1)
