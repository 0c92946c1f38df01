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
