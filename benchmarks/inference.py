"""Inference latency against the number of time steps T: the cost of running a trained model at fewer steps.

Usage: python benchmarks/inference.py [--model vgg_snn] [--batch 1 16] [--quick]

The model (eval mode, no autograd) runs at T = 1, 2, 4, 8, 10 on a fixed input; the table gives the median time
per batch and its fraction of the T=10 time, which should be about T/10 (every step costs the same).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tks.models import create_model

INPUTS = {"vgg_snn": (2, 48), "resnet19": (3, 32), "spiking_cnn": (1, 8), "sew_resnet19": (3, 32)}


def latency(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg_snn", choices=list(INPUTS))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 10])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="16x16 input, batch 1, 1 repeat (smoke test)")
    args = parser.parse_args()
    in_channels, size = INPUTS[args.model]
    batches, repeats = ([1], 1) if args.quick else (args.batch, args.repeats)
    size = 16 if args.quick else size
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10, in_channels=in_channels).eval()
    print(f"{args.model}, input {in_channels}x{size}x{size}, fp32, eval mode, median of {repeats}")
    print("| batch | T | latency (ms) | fraction of T=max | T / T_max |")
    print("|---:|---:|---:|---:|---:|")
    for batch in batches:
        x_full = torch.rand(max(args.steps), batch, in_channels, size, size)
        times = {t: latency(model, x_full[:t], repeats) for t in args.steps}
        longest = times[max(args.steps)]
        for t, seconds in times.items():
            print(f"| {batch} | {t} | {1000 * seconds:.1f} | {seconds / longest:.2f} | {t / max(args.steps):.2f} |")


if __name__ == "__main__":
    main()
