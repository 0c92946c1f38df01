import math
import re

import pytest
import torch

from tks.metrics import (
    aurc,
    classification_metrics,
    confidence,
    cumulative_accuracy,
    early_exit,
    early_exit_curve,
    expected_calibration_error,
    per_step_accuracy,
    topk_accuracy,
)

# T=2 steps, N=3 samples, K=3 classes; targets 0, 1, 2
LOGITS = torch.tensor(
    [
        [[3.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 0.0, 2.0]],  # step 1: right, wrong (2), right
        [[0.0, 5.0, 0.0], [0.0, 3.0, 0.0], [2.0, 0.0, 1.0]],  # step 2: wrong (1), right, wrong (0)
    ]
)
TARGET = torch.tensor([0, 1, 2])
# means: [1.5, 3.0, 0.0] -> 1 (wrong); [0.0, 2.0, 1.0] -> 1 (right); [1.5, 0.0, 1.5] -> tie, argmax 0 (wrong)


def test_topk_on_time_mean():
    assert topk_accuracy(LOGITS, TARGET, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(LOGITS, TARGET, 2) == pytest.approx(3 / 3)  # sample 2: top-2 of [1.5, 0, 1.5] is {0, 2}
    assert topk_accuracy(LOGITS, TARGET, 5) == 1.0  # k clipped to K


def test_per_step_and_cumulative():
    assert per_step_accuracy(LOGITS, TARGET) == pytest.approx([2 / 3, 1 / 3])
    assert cumulative_accuracy(LOGITS, TARGET) == pytest.approx([2 / 3, 1 / 3])
    # a third step that fixes everything on its own, but not the running mean of sample 0
    third = torch.tensor([[[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0]]])
    logits = torch.cat([LOGITS, third])
    assert per_step_accuracy(logits, TARGET)[2] == 1.0
    # means over 3 steps: [4, 2, 0] -> 0 right; [0, 4.33, .67] right; [3, 0, 4] right
    assert cumulative_accuracy(logits, TARGET) == pytest.approx([2 / 3, 1 / 3, 1.0])
    assert cumulative_accuracy(logits, TARGET)[-1] == topk_accuracy(logits, TARGET, 1)


def test_aurc_hand_example():
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6])
    correct = torch.tensor([True, False, True, False])
    # risks at coverage 1..4: 0, 1/2, 1/3, 2/4 -> AURC = 1/3; optimal: (1/3 + 2/4) / 4 = 5/24
    value, excess = aurc(conf, correct)
    assert value == pytest.approx(1 / 3)
    assert excess == pytest.approx(1 / 3 - 5 / 24)


def test_aurc_limits():
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert aurc(conf, torch.ones(4, dtype=torch.bool)) == (0.0, 0.0)
    perfect_ranking = torch.tensor([True, True, False, False])
    value, excess = aurc(conf, perfect_ranking)
    assert excess == pytest.approx(0.0, abs=1e-12) and value > 0
    worst = aurc(conf, torch.tensor([False, False, True, True]))[0]
    assert worst == pytest.approx((1 + 1 + 2 / 3 + 2 / 4) / 4)
    with pytest.raises(ValueError):
        aurc(torch.tensor([]), torch.tensor([], dtype=torch.bool))


def test_confidence_logit_vs_softmax_rank_differently():
    # sample a: logits [5, 4.9] (max logit 5, softmax ~0.52); sample b: [2, -3] (max logit 2, softmax ~0.99)
    logits = torch.tensor([[[5.0, 4.9], [2.0, -3.0]]])
    assert confidence(logits, "logit").argmax().item() == 0
    assert confidence(logits, "softmax").argmax().item() == 1
    with pytest.raises(ValueError):
        confidence(logits, "entropy")


def test_ece_hand_example():
    # confidences kept off the bin edges: float32 0.8 * 10 rounds up past 8
    probs = torch.tensor([[0.92, 0.08], [0.83, 0.17], [0.64, 0.36], [0.61, 0.39]])
    target = torch.tensor([0, 1, 0, 0])
    # 2 bins: all four in (.5, 1]: mean conf .75, accuracy .75 -> 0
    assert expected_calibration_error(probs, target, n_bins=2) == pytest.approx(0.0, abs=1e-6)
    # 10 bins: .92 alone (gap .08), .83 alone and wrong (gap .83), .64 and .61 together (mean .625, acc 1: gap .375)
    assert expected_calibration_error(probs, target, n_bins=10) == pytest.approx((0.08 + 0.83 + 2 * 0.375) / 4)


def test_classification_metrics_bundle():
    m = classification_metrics(LOGITS, TARGET)
    assert m["top1"] == pytest.approx(1 / 3) and m["num_steps"] == 2 and m["num_samples"] == 3
    assert m["per_step"] == pytest.approx([2 / 3, 1 / 3])
    assert m["confidence"] == "logit"
    # ranking by max mean logit: sample 0 (3.0, wrong), sample 1 (2.0, right), sample 2 (1.5, wrong)
    assert m["aurc"] == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)
    with pytest.raises(ValueError, match=r"logits must be \[T, B, K\]"):
        classification_metrics(LOGITS[0], TARGET)


def test_early_exit_hand_example():
    # sample 0: step 1 softmax [0.88, 0.12] (confident, right); sample 1: step 1 [0.5, 0.5], step 2 mean [2, 0] wrong
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[2.0, 0.0], [4.0, 0.0]]])
    target = torch.tensor([0, 1])
    assert early_exit(logits, target, 0.8) == (pytest.approx(0.5), pytest.approx(1.5))  # sample 1 runs to the end
    assert early_exit(logits, target, 0.0) == (pytest.approx(0.5), pytest.approx(1.0))  # step 1: tie -> class 0
    assert early_exit(logits, target, 1.1) == (pytest.approx(0.5), pytest.approx(2.0))  # never early: the full run
    assert early_exit(logits, target, 1.1)[0] == topk_accuracy(logits, target, 1)


def test_early_exit_curve_is_monotone_in_the_threshold():
    g = torch.Generator().manual_seed(0)
    logits = (
        torch.randn(6, 200, 5, generator=g)
        + torch.linspace(0, 2, 6).view(6, 1, 1) * torch.eye(5)[torch.randint(0, 5, (200,), generator=g)]
    )
    target = torch.randint(0, 5, (200,), generator=g)
    curve = early_exit_curve(logits, target)
    steps = [point["mean_steps"] for point in curve]
    assert steps == sorted(steps) and steps[0] >= 1 and steps[-1] <= 6
    assert curve[-1]["accuracy"] == pytest.approx(topk_accuracy(logits, target, 1))  # threshold 1: full run


# ---- independent computations (loops over samples, Python floats) of every metric, for what mutation testing
# (tools/mutants.py metrics) found unpinned: ECE's bins, the bundle's keys, ties in AURC, the early-exit threshold.
def brute_aurc(conf, correct):
    """AURC and E-AURC by their definitions, ties ranked in input order (Python's sort is stable)."""
    order = sorted(range(len(conf)), key=lambda i: -float(conf[i]))
    errors, risks = 0, []
    for k, i in enumerate(order, 1):
        errors += not bool(correct[i])
        risks.append(errors / k)
    n, r = len(conf), sum(not bool(c) for c in correct)
    optimal = sum(i / (n - r + i) for i in range(1, r + 1)) / n
    return sum(risks) / n, sum(risks) / n - optimal


def brute_ece(probs, target, n_bins):
    """ECE by its definition: bins (b/n, (b+1)/n], gap |accuracy - confidence| weighted by the bin's share."""
    rows = [(max(p.tolist()), int(torch.argmax(p)) == int(y)) for p, y in zip(probs, target, strict=True)]
    total = 0.0
    for b in range(n_bins):
        members = [(c, ok) for c, ok in rows if b / n_bins < c <= (b + 1) / n_bins or (b == 0 and c == 0)]
        if members:
            gap = sum(c for c, _ in members) / len(members) - sum(ok for _, ok in members) / len(members)
            total += len(members) / len(rows) * abs(gap)
    return total


def random_logits(steps=3, samples=60, classes=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(steps, samples, classes, generator=g) * 1.5, torch.randint(0, classes, (samples,), generator=g)


def test_the_bundle_equals_each_metric_computed_by_hand():
    logits, target = random_logits()
    mean = logits.mean(0)
    predicted = [int(torch.argmax(m)) for m in mean]
    correct = [p == int(y) for p, y in zip(predicted, target, strict=True)]
    top5 = [int(y) in torch.topk(m, 5).indices.tolist() for m, y in zip(mean, target, strict=True)]
    got = classification_metrics(logits, target)
    assert set(got) == {
        "top1",
        "top5",
        "aurc",
        "e_aurc",
        "ece",
        "per_step",
        "cumulative",
        "num_steps",
        "num_samples",
        "confidence",
    }
    assert got["top1"] == pytest.approx(sum(correct) / 60) and got["top5"] == pytest.approx(sum(top5) / 60)
    assert 0 < got["top1"] < got["top5"] < 1  # a case where top-1 and top-5 differ
    expected_aurc, expected_e = brute_aurc([float(m.max()) for m in mean], correct)
    assert got["aurc"] == pytest.approx(expected_aurc, abs=1e-12) and got["e_aurc"] == pytest.approx(expected_e)
    assert got["ece"] == pytest.approx(brute_ece(mean.softmax(-1), target, 15), abs=1e-9)
    running = [logits[: t + 1].sum(0) for t in range(3)]
    assert got["cumulative"] == pytest.approx([float((r.argmax(-1) == target).float().mean()) for r in running])
    assert got["per_step"] == pytest.approx([float((o.argmax(-1) == target).float().mean()) for o in logits])
    assert (got["num_steps"], got["num_samples"], got["confidence"]) == (3, 60, "logit")
    soft = classification_metrics(logits, target, confidence_kind="softmax")
    expected_soft, _ = brute_aurc([float(m.softmax(-1).max()) for m in mean], correct)
    assert soft["aurc"] == pytest.approx(expected_soft, abs=1e-12) and soft["confidence"] == "softmax"
    assert soft["aurc"] != pytest.approx(got["aurc"])  # the two rankings really differ here


@pytest.mark.parametrize("n_bins", [15, 4, 10])
def test_ece_equals_its_definition_with_confidences_in_every_bin(n_bins):
    logits, target = random_logits(samples=400, classes=20, seed=1)
    probs = (logits.mean(0) * torch.linspace(0.05, 3, 400).unsqueeze(1)).softmax(-1)  # flat to peaked
    conf = probs.max(-1).values
    assert conf.min() <= 1 / 15 and conf.max() > 0.9  # the first and the last bins are used
    expected = brute_ece(probs, target, n_bins)
    if n_bins == 15:
        assert expected_calibration_error(probs, target) == pytest.approx(expected, abs=1e-12)  # 15 by default
        assert expected != pytest.approx(brute_ece(probs, target, 16), abs=1e-6)
    assert expected_calibration_error(probs, target, n_bins) == pytest.approx(expected, abs=1e-12)


def test_ece_puts_a_confidence_on_a_bin_edge_into_the_lower_bin():
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([1, 0, 0])  # wrong (conf 1/4), right (1/2), right (1)
    # 4 bins: 1/4 -> (0, 1/4], 1/2 -> (1/4, 1/2], 1 -> (3/4, 1]; gaps 1/4, 1/2, 0
    assert expected_calibration_error(probs, target, 4) == pytest.approx((0.25 + 0.5 + 0.0) / 3)
    assert expected_calibration_error(probs, target, 4) == pytest.approx(brute_ece(probs, target, 4))


def test_aurc_breaks_ties_in_input_order_and_equals_its_definition():
    g = torch.Generator().manual_seed(3)
    conf = torch.randint(0, 3, (300,), generator=g).float()  # few values: many ties, where sort order matters
    correct = torch.rand(300, generator=g) < 0.7
    value, excess = aurc(conf, correct)
    expected_value, expected_excess = brute_aurc(conf.tolist(), correct.tolist())
    assert value == pytest.approx(expected_value, abs=1e-12) and excess == pytest.approx(expected_excess, abs=1e-12)


def test_aurc_when_every_prediction_is_wrong_or_right():
    wrong = aurc(torch.tensor([0.9, 0.5, 0.1]), torch.tensor([False, False, False]))
    assert wrong == pytest.approx((1.0, 0.0))  # risk 1 at every coverage, as good as any ranking can be
    assert aurc(torch.tensor([0.9, 0.5]), torch.tensor([True, True])) == pytest.approx((0.0, 0.0))


@pytest.mark.parametrize(("conf", "correct"), [((3,), (4,)), ((2, 2), (2, 2)), ((0,), (0,))])
def test_aurc_refuses_mismatched_shapes(conf, correct):
    message = f"conf and correct must be equal non-empty [N], got {conf}, {correct}"
    with pytest.raises(ValueError, match=re.escape(message)):
        aurc(torch.zeros(conf), torch.zeros(correct, dtype=torch.bool))


def test_defaults_of_confidence_and_topk():
    logits, target = random_logits(samples=30, classes=10, seed=4)
    assert torch.equal(confidence(logits), logits.mean(0).max(-1).values)  # "logit" by default
    assert topk_accuracy(logits, target) == topk_accuracy(logits, target, 1)
    with pytest.raises(ValueError, match=re.escape("confidence must be 'logit' or 'softmax', got 'margin'")):
        confidence(logits, "margin")


def test_topk_clips_k_to_the_classes_not_the_samples():
    logits = torch.tensor([[[9.0, 8.0, 7.0, 6.0, 5.0, 4.0], [9.0, 8.0, 7.0, 6.0, 5.0, 4.0]]])  # N=2, K=6
    target = torch.tensor([4, 5])  # ranks 5 and 6
    assert topk_accuracy(logits, target, 5) == 0.5 and topk_accuracy(logits, target, 6) == 1.0
    assert topk_accuracy(logits, target, 9) == 1.0


def test_early_exit_at_a_confidence_exactly_at_the_threshold():
    # Step 1's two equal logits give a softmax max of exactly 0.5: at threshold 0.5 the sample exits there.
    logits = torch.tensor([[[0.0, 0.0]], [[3.0, 0.0]]])
    assert early_exit(logits, torch.tensor([0]), 0.5) == (1.0, 1.0)  # argmax of a tie: class 0, right
    assert early_exit(logits, torch.tensor([0]), 0.5 + 1e-6) == (1.0, 2.0)


def test_early_exit_reads_the_confidence_of_the_running_mean():
    # Running means: [0, 0] (0.5), [0, 0.5] (softmax max 0.622), [0, 1/3] (0.583). The running sum would give
    # [0, 1] at step 2 (0.731) and exit there at 0.7; the mean does not reach 0.7 before the last step.
    logits = torch.tensor([[[0.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]])
    target = torch.tensor([1])
    assert torch.tensor([0.0, 0.5]).softmax(-1).max() == pytest.approx(0.6225, abs=1e-4)
    assert early_exit(logits, target, 0.7) == (1.0, 3.0)
    assert early_exit(logits, target, 0.6) == (1.0, 2.0)
    assert early_exit(logits, target, 0.4) == (0.0, 1.0)  # step 1's tie predicts class 0: wrong
    curve = early_exit_curve(logits, target, (0.6, 0.7))
    assert curve == [
        {"threshold": 0.6, "accuracy": 1.0, "mean_steps": 2.0},
        {"threshold": 0.7, "accuracy": 1.0, "mean_steps": 3.0},
    ]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_give_non_finite_metrics_not_errors(bad):
    logits = torch.randn(3, 6, 4)
    target = torch.randint(0, 4, (6,))
    logits[1, 2, 0] = bad  # step 2 of sample 2: every summary of the whole run depends on it
    metrics = classification_metrics(logits, target)
    for key in ("top1", "top5", "aurc", "e_aurc", "ece"):
        assert math.isnan(metrics[key]), key
    clean = per_step_accuracy(logits[[0, 2]], target)
    assert metrics["per_step"][0] == clean[0] and math.isnan(metrics["per_step"][1])
    assert metrics["per_step"][2] == clean[1]  # the other steps are still measured
    cumulative = cumulative_accuracy(logits, target)
    assert cumulative[0] == cumulative_accuracy(logits[:1], target)[0]
    assert math.isnan(cumulative[1]) and math.isnan(cumulative[2])  # every running mean from step 2 on
    assert all(math.isnan(v) for v in early_exit(logits, target, 0.5))
    assert all(math.isnan(point["accuracy"]) for point in early_exit_curve(logits, target, (0.5, 0.9)))
    assert all(math.isnan(v) for v in aurc(torch.tensor([0.5, bad]), torch.tensor([True, False])))
    assert math.isnan(expected_calibration_error(torch.tensor([[0.5, bad]]), torch.tensor([0])))


def test_finite_logits_are_unaffected_by_the_non_finite_rule():
    logits = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1e30, 0.0], [0.0, -1e30]]])  # large but finite
    target = torch.tensor([0, 1])
    assert per_step_accuracy(logits, target) == [1.0, 0.5]
    assert cumulative_accuracy(logits, target) == [1.0, 0.5]
    assert topk_accuracy(logits, target) == 0.5
