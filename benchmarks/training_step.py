"""Training-step time of tks against its ANN twin and its SpikingJelly twin; TKS-loss overhead; bf16 autocast.

Usage: python benchmarks/training_step.py [--quick] [--repeats 7] [--models spiking_cnn vgg_snn ...]

For every network, one training step (forward, loss, backward, AdamW step) of:
  ann        the same layers with ReLU instead of LIF, T folded into the batch (the floor)
  tks        tks's fused LIF (engine "tks")
  sj         SpikingJelly 2.x LIFNode in multi-step mode (engine "spikingjelly")
  sj-layers  (digits CNN only) the network written with SpikingJelly layers and reset_net, as SNN repositories do
  tks-bf16   tks under torch.autocast(bfloat16)
Variants run interleaved, one step each per round after warm-up, and the median of the rounds is reported, so
background load affects all variants alike. The TKS-loss overhead is timed on its own (forward and backward of the
loss on the step's logits, many repetitions): the extra time of (1 - a) CE + a TKS over CE, as a share of the tks
step. All twins start from the same weights; the script checks that tks and
sj give the same logits before timing.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from tks.losses import mean_ce, tks_loss
from tks.models import create_model
from tks.provenance import cpu_model
from tks.snn import make_neuron

# (in_channels, size, batch) per network: the paper's input sizes, small batches
CASES = {
    "spiking_cnn": (1, 8, 128),
    "vgg_snn": (2, 48, 16),
    "resnet19": (3, 32, 16),
    "sew_resnet19": (3, 32, 16),
    "sew_resnet18": (3, 224, 4),
    "sew_resnet34": (3, 224, 4),
    "sew_resnet50": (3, 224, 4),
}
QUICK = {"spiking_cnn": (1, 8, 16), "vgg_snn": (2, 16, 2)}


def sj_layers_cnn(num_classes: int, in_channels: int) -> tuple[nn.Module, Callable[[nn.Module], None]]:
    """The digits CNN written the way most SNN repositories write it, with SpikingJelly layers."""
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    def lif() -> nn.Module:
        return neuron.LIFNode(
            tau=2.0,
            v_threshold=0.5,
            detach_reset=True,
            step_mode="m",
            surrogate_function=surrogate.PiecewiseQuadratic(alpha=2.0),
        )

    net = nn.Sequential(
        layer.SeqToANNContainer(nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)),
        lif(),
        layer.SeqToANNContainer(nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)),
        lif(),
        layer.SeqToANNContainer(nn.AvgPool2d(2)),
        layer.SeqToANNContainer(nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128)),
        lif(),
        layer.SeqToANNContainer(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(512, num_classes)),
    )
    return net, functional.reset_net


def make_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str = "ce",
    bf16: bool = False,
    after: Callable[[nn.Module], None] | None = None,
) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            logits = model(x)
            value = (
                tks_loss(logits.float(), y, temperature=3.0) + mean_ce(logits.float(), y)
                if loss == "tks"
                else mean_ce(logits.float(), y)
            )
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if after is not None:
            after(model)

    return step


def variants(name: str, in_channels: int, size: int, batch: int, steps: int) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    x = torch.rand(steps, batch, in_channels, size, size)
    y = torch.randint(0, 10, (batch,))

    def build(neuron: Callable[[], nn.Module]) -> nn.Module:
        torch.manual_seed(1)  # the same weights for every twin
        return create_model(name, num_classes=10, in_channels=in_channels, neuron=neuron)

    tks, sj = build(make_neuron("tks")), build(make_neuron("spikingjelly"))
    # Same layers and weights; the neurons agree bit for bit (tests/test_neuron.py) except at exact threshold ties.
    if not all(torch.equal(a, b) for a, b in zip(tks.state_dict().values(), sj.state_dict().values(), strict=True)):
        raise SystemExit(f"{name}: tks and sj twins differ; the comparison would be meaningless")
    out = {"ann": make_step(build(nn.ReLU), x, y), "tks": make_step(tks, x, y), "sj": make_step(sj, x, y)}
    if name == "spiking_cnn":
        torch.manual_seed(1)
        net, reset = sj_layers_cnn(10, in_channels)
        out["sj-layers"] = make_step(net, x, y, after=reset)
    out["tks-bf16"] = make_step(build(make_neuron("tks")), x, y, bf16=True)
    return out


def loss_seconds(steps: int, batch: int, classes: int = 10, repeats: int = 200) -> tuple[float, float]:
    """Median forward+backward time of mean CE, and of the TKS objective (0.5 CE + 0.5 TKS), on [T, B, K] logits."""
    logits = torch.randn(steps, batch, classes, requires_grad=True)
    y = torch.randint(0, classes, (batch,))
    loss_functions = {
        "ce": lambda: mean_ce(logits, y),
        "tks": lambda: 0.5 * mean_ce(logits, y) + 0.5 * tks_loss(logits, y, temperature=3.0),
    }
    times: dict[str, list[float]] = {k: [] for k in loss_functions}
    for _ in range(repeats):
        for key, loss in loss_functions.items():
            start = time.perf_counter()
            loss().backward()
            times[key].append(time.perf_counter() - start)
    return statistics.median(times["ce"]), statistics.median(times["tks"])


def measure(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    for step in steps.values():  # warm-up: allocations, kernel build, autocast caches
        step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=4, help="T")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=None, help="one batch for every model (default: CASES)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--quick", action="store_true", help="tiny inputs, 1 round (smoke test)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = QUICK if args.quick else {m: CASES[m] for m in args.models}
    if args.batch and not args.quick:
        cases = {m: (c, s, args.batch) for m, (c, s, _) in cases.items()}
    repeats = 1 if args.quick else args.repeats
    print(
        f"{cpu_model() or 'unknown CPU'}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"T={args.steps}, fp32 unless noted, median of {repeats} interleaved rounds; times in ms"
    )
    print(
        "| model | input | batch | ann | tks | sj | tks/ann | (tks-ann)/(sj-ann) | sj/tks "
        "| TKS-loss overhead | tks bf16 | bf16 speed-up |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (in_channels, size, batch) in cases.items():
        t = measure(variants(name, in_channels, size, batch, args.steps), repeats)
        ce_seconds, tks_seconds = loss_seconds(args.steps, batch)
        loss_share = 100 * (tks_seconds - ce_seconds) / t["tks"]
        ms = {k: 1000 * v for k, v in t.items()}
        neuron_share = (t["tks"] - t["ann"]) / (t["sj"] - t["ann"]) if t["sj"] > t["ann"] else float("nan")
        sj_note = f" (sj-layers {ms['sj-layers']:.0f})" if "sj-layers" in ms else ""
        print(
            f"| {name} | {in_channels}x{size}x{size} | {batch} | {ms['ann']:.0f} | {ms['tks']:.0f} | "
            f"{ms['sj']:.0f}{sj_note} | {t['tks'] / t['ann']:.2f} | {neuron_share:.2f} | {t['sj'] / t['tks']:.2f} | "
            f"{loss_share:.2f}% | {ms['tks-bf16']:.0f} | {t['tks'] / t['tks-bf16']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
