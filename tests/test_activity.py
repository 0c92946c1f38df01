import pytest
import torch
from torch import nn

from tks.activity import energy_pj, measure_activity
from tks.data import to_time_major
from tks.models import create_model
from tks.snn import LIF, PerStep


def two_layer_network():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 1, 1] = 2.0  # each output = 2 x the input pixel
    return nn.Sequential(PerStep(conv), LIF(), PerStep(nn.Flatten(), nn.Linear(32, 3, bias=False)))


def test_energy_of_a_two_layer_network_by_hand():
    x = torch.zeros(1, 1, 4, 4)
    x[..., :2] = 1.0  # left half on: conv output 2 there, so those LIFs fire at both steps (H = 1 > 0.5), others never
    result = measure_activity(
        two_layer_network(),
        [(x, torch.zeros(1))],
        device=torch.device("cpu"),
        encode=lambda b: to_time_major(b, "static", 2),
    )
    (layer,) = result["layers"]
    assert layer["rate_per_step"] == [0.5, 0.5] and layer["fired_fraction"] == 0.5
    assert layer["spikes_per_sample"] == 2 * 8 * 2  # 2 channels x 8 positions x 2 steps
    conv, linear = result["ops"]
    # conv: 2 x 4 x 4 outputs x 9 taps = 288 MACs per step, real-valued input -> 576 MACs over T=2
    assert (conv["op"], conv["dense_macs"], conv["count"]) == ("MAC", 288, 576)
    # linear: 3 x 32 = 96 MACs per step dense; spikes at rate 0.5 -> 96 x 0.5 x 2 = 96 ACs
    assert (linear["op"], linear["dense_macs"], linear["input_mean"], linear["count"]) == ("AC", 96, 0.5, 96)
    totals = result["totals"]
    assert totals["energy_uj"] * 1e6 == pytest.approx(4.6 * 576 + 0.9 * 96)  # 2736.0 pJ
    assert totals["ann_energy_uj"] * 1e6 == pytest.approx(4.6 * (288 + 96))  # 1766.4 pJ
    assert energy_pj(10, 100) == pytest.approx(46 + 90)


def test_event_input_counts_the_first_layer_as_accumulates():
    x = torch.zeros(1, 1, 4, 4)
    x[..., :2] = 1.0
    result = measure_activity(
        two_layer_network(),
        [(x, torch.zeros(1))],
        device=torch.device("cpu"),
        encode=lambda b: to_time_major(b, "static", 2),
        real_valued_input=False,
    )
    assert result["ops"][0]["op"] == "AC" and result["ops"][0]["count"] == 288 * 0.5 * 2


def test_activity_of_a_registered_model_is_consistent():
    model = create_model("vgg_snn", num_classes=10, in_channels=2)
    batches = [(torch.rand(2, 4, 2, 16, 16), torch.zeros(2)) for _ in range(2)]
    result = measure_activity(
        model,
        batches,
        encode=lambda b: b.transpose(0, 1),
        device=torch.device("cpu"),
        real_valued_input=False,
        max_batches=1,
    )
    assert result["num_samples"] == 2 and result["num_steps"] == 4
    assert len(result["layers"]) == 8 and len(result["ops"]) == 9  # 8 conv-LIF blocks, one classifier
    assert all(0.0 <= r <= 1.0 for layer in result["layers"] for r in layer["rate_per_step"])
    assert result["totals"]["acs"] == pytest.approx(sum(op["count"] for op in result["ops"]))


def test_layers_run_once_for_a_static_image_are_counted_at_every_step():
    torch.manual_seed(0)
    model = create_model("spiking_convnet", num_classes=10, in_channels=1)
    batches = [(torch.rand(3, 1, 28, 28) * 3, torch.zeros(3))]
    counts = [
        measure_activity(model, batches, encode=encode, device=torch.device("cpu"))
        for encode in (lambda b: to_time_major(b, "static", 4), lambda b: to_time_major(b, "static", 4).contiguous())
    ]
    once, every_step = counts  # a broadcast input runs the first block once; a materialised one T times
    assert once["ops"][0]["dense_macs"] == 28 * 28 * 16 * 9  # one 3x3 conv 1 -> 16 at 28x28, per step
    for a, b in zip(once["ops"], every_step["ops"], strict=True):
        assert a["dense_macs"] == b["dense_macs"] and a["count"] == pytest.approx(b["count"])
    assert once["totals"]["macs"] == pytest.approx(4 * 28 * 28 * 16 * 9)
