"""Event frames read from the frame cache (samples/s) against one training step of vgg_snn, at batch 16 and T=10.

Usage: python benchmarks/frame_loading.py [--steps 10] [--size 48] [--batch 16] [--workers 0 2] [--quick]

The cache is built from digits-dvs (generated into a temporary $TKS_CACHE) at CIFAR10-DVS's frame shape
[T, 2, 48, 48]; loading runs a shuffled DataLoader over the training split, with and without the CIFAR10-DVS
augmentation (crop, flip, rotation). The training step is forward + backward + AdamW on random frames, on CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from torch.utils.data import DataLoader


def loading_rate(dataset, batch: int, workers: int, limit: int) -> float:
    """Samples per second of a shuffled DataLoader over at most ``limit`` samples (after one warm-up batch)."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    seen, start = 0, None
    for x, _ in loader:
        if start is None:
            start, seen = time.perf_counter(), 0  # the first batch includes starting the workers
            continue
        seen += len(x)
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def training_rate(model_name: str, batch: int, steps: int, size: int, repeats: int) -> float:
    from tks.models import create_model

    model = create_model(model_name, num_classes=10, in_channels=2)
    optimizer = torch.optim.AdamW(model.parameters())
    x, y = torch.rand(steps, batch, 2, size, size), torch.randint(0, 10, (batch,))
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x).mean(0), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
    return batch / (sum(times) / len(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="T=2, 8x8 frames, few samples (smoke test)")
    args = parser.parse_args()
    steps, size, limit, model = (2, 8, 64, "spiking_cnn") if args.quick else (args.steps, args.size, 1600, "vgg_snn")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TKS_CACHE"] = cache  # read when the dataset is built: generated data and frames go here
        from tks.data import DataOptions, build_dataset

        start = time.perf_counter()
        options = DataOptions(num_steps=steps, frame_size=size, progress=False)
        plain, _ = build_dataset("digits-dvs", "train", None, options)
        prepare_seconds = time.perf_counter() - start
        augmented, _ = build_dataset(
            "digits-dvs", "train", None, DataOptions(num_steps=steps, frame_size=size, augment="crop_flip_rotate")
        )
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; T={steps}, "
            f"{size}x{size} frames, batch {args.batch}; digits-dvs + its cache: {prepare_seconds:.1f} s"
        )
        print("| what | workers | samples/s |\n|---|---:|---:|")
        for workers in args.workers:
            for name, dataset in (("cache read", plain), ("cache read + CIFAR10-DVS augmentation", augmented)):
                rate = loading_rate(dataset, args.batch, workers, limit)
                print(f"| {name} | {workers} | {rate:,.0f} |", flush=True)
    rate = training_rate(model, args.batch, steps, size, 1 if args.quick else args.repeats)
    print(f"| {model} training step (forward + backward + AdamW) | - | {rate:,.1f} |")


if __name__ == "__main__":
    main()
