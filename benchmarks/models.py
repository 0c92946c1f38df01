"""Every registered model: parameters, one training step's time and FLOPs, and its utilisation of the CPU.

Usage: python benchmarks/models.py [--batch B] [--steps 4] [--repeats 3] [--threads 1] [--models NAME ...]
                                   [--channels-last] [--quick]

Each model runs on its paper input size (VGG-SNN 2x48x48 events, CIFAR models 3x32x32, SEW-ResNet-18/34/50
3x224x224, the 28x28 networks, the digits CNN 1x8x8) at a batch typical of its regime (``BATCH``; ``--batch``
sets one for all). For each: the median time of a training step (forward, a loss, backward; the optimizer is left
out) over the repeats after one warm-up step; its FLOPs, counted by ``torch.utils.flop_counter.FlopCounterMode``
over the same forward and backward (convolutions and matrix products, 2 FLOPs per multiply-accumulate; neurons,
normalisation and pooling count 0); and its utilisation,

    utilisation = (FLOPs per step / step time) / (FLOP/s of a 2048x2048 fp32 matmul in the same process),

the share of the machine's dense-arithmetic rate the step achieves. Near 1 a step is bound by arithmetic; far below
1 by overhead and memory traffic (the small networks). Both rates are taken in one process, one after the other, so
the ratio holds on a machine shared with other work. With one thread the times are the CPU time of this process
(``time.process_time``), otherwise wall-clock time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from tks.models import count_parameters, create_model, list_models

INPUT = {
    "spiking_cnn": (1, 8),
    "spiking_lenet": (1, 28),
    "spiking_convnet": (1, 28),
    "spiking_convnet_wide": (1, 28),
    "vgg_snn": (2, 48),
    "vgg_snn_small": (2, 16),
    "sew_resnet18": (3, 224),
    "sew_resnet34": (3, 224),
    "sew_resnet50": (3, 224),
}  # the rest: CIFAR, (3, 32)
BATCH = {
    "spiking_cnn": 128,
    "spiking_lenet": 128,
    "spiking_convnet": 128,
    "spiking_convnet_wide": 128,
    "vgg_snn_small": 64,
    "sew_resnet18": 2,
    "sew_resnet34": 2,
    "sew_resnet50": 2,
}  # the rest: 16


def median_seconds(step: Callable[[], None], repeats: int, clock: Callable[[], float]) -> float:
    """Median time of ``step`` over ``repeats`` calls after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = clock()
        step()
        times.append(clock() - start)
    return statistics.median(times)


def matmul_flops_per_second(size: int, repeats: int, clock: Callable[[], float]) -> float:
    """FLOP/s of a ``size`` x ``size`` fp32 matrix product (2 size^3 FLOPs)."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    return 2 * size**3 / median_seconds(lambda: torch.mm(a, b), repeats, clock)


def training_step(
    name: str, batch: int, steps: int, size_cap: int | None, channels_last: bool = False
) -> tuple[torch.nn.Module, Callable[[], None]]:
    """The model and one training step of it on random input ``[T, B, C, H, W]``."""
    in_channels, size = INPUT.get(name, (3, 32))
    size = min(size, size_cap) if size_cap else size
    model = create_model(name, num_classes=10, in_channels=in_channels)
    x = torch.rand(steps, batch, in_channels, size, size) * 2  # strong enough to make every layer spike
    if channels_last:  # as run.channels_last does: the model's weights and each step's images
        model = model.to(memory_format=torch.channels_last)
        x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)

    def step() -> None:
        model(x).square().mean().backward()
        model.zero_grad(set_to_none=True)

    return model, step


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` (forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="one batch for every model (default: BATCH)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list_models(), choices=list_models(), metavar="NAME")
    parser.add_argument("--channels-last", action="store_true", help="model and images channels-last")
    parser.add_argument(
        "--quick", action="store_true", help="batch 2, one repeat, inputs of at most 32x32 (smoke test)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats, cap, matmul = (1, 32, 256) if args.quick else (args.repeats, None, 2048)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    peak = matmul_flops_per_second(matmul, max(repeats, 3), clock)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), T={args.steps}, K=10, fp32, "
        f"{'channels-last' if args.channels_last else 'contiguous'}; "
        f"{matmul}x{matmul} matmul: {peak / 1e9:.1f} GFLOP/s"
    )
    print("| model | input | batch | parameters | step (ms) | GFLOPs/step | GFLOP/s | utilisation |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        batch = 2 if args.quick else args.batch or BATCH.get(name, 16)
        in_channels, size = INPUT.get(name, (3, 32))
        size = min(size, cap) if cap else size
        model, step = training_step(name, batch, args.steps, cap, args.channels_last)
        seconds = median_seconds(step, repeats, clock)
        flops = step_flops(step)
        rate = flops / seconds
        print(
            f"| {name} | {in_channels}x{size}x{size} | {batch} | {count_parameters(model):,} | {1000 * seconds:.0f} "
            f"| {flops / 1e9:.2f} | {rate / 1e9:.1f} | {rate / peak:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
