"""Parameter count and one training step (forward + backward) of every registered model.

Usage: python benchmarks/models.py [--batch 2] [--steps 4] [--repeats 3] [--quick]

Each model runs on its paper input size (VGG-SNN 2x48x48 events, CIFAR models 3x32x32, SEW-ResNet-18/34/50
3x224x224, the digits CNN 1x8x8); the time is the median of the repeats after one warm-up step, on CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

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


def step_seconds(name: str, batch: int, steps: int, repeats: int, size_cap: int | None) -> tuple[int, float]:
    in_channels, size = INPUT.get(name, (3, 32))
    size = min(size, size_cap) if size_cap else size
    model = create_model(name, num_classes=10, in_channels=in_channels)
    x = torch.rand(steps, batch, in_channels, size, size)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        model(x).square().mean().backward()
        model.zero_grad(set_to_none=True)
        if i:  # the first call is a warm-up
            times.append(time.perf_counter() - start)
    return count_parameters(model), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat on inputs of at most 32x32 (smoke test)")
    args = parser.parse_args()
    repeats, cap = (1, 32) if args.quick else (args.repeats, None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, T={args.steps}, K=10")
    print("| model | input | parameters | forward+backward (ms) |\n|---|---|---:|---:|")
    for name in list_models():
        in_channels, size = INPUT.get(name, (3, 32))
        size = min(size, cap) if cap else size
        params, seconds = step_seconds(name, args.batch, args.steps, repeats, cap)
        print(f"| {name} | {in_channels}x{size}x{size} | {params:,} | {1000 * seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
