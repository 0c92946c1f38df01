"""FLOPs per sample and training speed of the 28x28 networks, as the convergence recipe needs them.

Usage: python benchmarks/flops.py [--models spiking_lenet spiking_convnet ...] [--batch 128] [--steps 4]
                                  [--repeats 5] [--threads 1] [--channels-last] [--quick]

For each model: parameters; forward FLOPs per sample at T steps, counted by ``torch.utils.flop_counter``
(``FlopCounterMode``: convolutions and matrix products, 2 FLOPs per multiply-accumulate; normalisation, neurons
and pooling are not counted) on one forward pass of a directly encoded batch, the image broadcast over T as
``tks.build.encoder`` makes it (so a ``TimeInvariant`` first block counts once); the median time of a full
training step (forward, mean cross-entropy, backward, AdamW) and of an inference forward of ``--eval-batch``
images, as samples per second, on the CPU with ``--threads`` intra-op threads; and the seconds one epoch of 55,000
images (Fashion-MNIST less a 5,000-image validation split) would take at that speed, data loading not included.
``--channels-last`` puts the model and the images in channels-last layout, as ``run.channels_last`` does.
With one thread the times are the CPU time of this process (``time.process_time``): the time on a core of its own,
even while other work shares the machine; with more threads they are wall-clock times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional
from torch.utils.flop_counter import FlopCounterMode

from tks.build import encoder
from tks.models import count_parameters, create_model

MODELS = ("spiking_lenet", "spiking_convnet", "spiking_convnet_wide")
EPOCH_IMAGES = 55_000


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``x`` ``[T, B, ...]``, in eval mode."""
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def clock() -> float:
    """CPU time of this process with one intra-op thread, else wall-clock time (seconds)."""
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


def train_step_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Median seconds of forward + mean CE + backward + AdamW step, after one warm-up step."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for i in range(repeats + 1):
        start = clock()
        loss = functional.cross_entropy(model(x).mean(0), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:
            times.append(clock() - start)
    return statistics.median(times)


@torch.inference_mode()
def eval_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of an inference forward pass, after one warm-up pass."""
    model.eval()
    times = []
    for i in range(repeats + 1):
        start = clock()
        model(x)
        if i:
            times.append(clock() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--eval-batch", type=int, default=500)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true", help="model and images channels-last")
    parser.add_argument("--quick", action="store_true", help="batch 8, one repeat (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.eval_batch, args.repeats = 8, 8, 1
    torch.set_num_threads(args.threads)
    layout = "channels-last" if args.channels_last else "contiguous"
    print(f"T={args.steps}, batch {args.batch} (eval {args.eval_batch}), {args.threads} thread(s), fp32, {layout}\n")
    encode = encoder("static", args.steps, channels_last=args.channels_last)
    print("| model | parameters | forward MFLOPs/sample | train samples/s | eval samples/s | train s/epoch |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_channels=1)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        x = encode(torch.rand(args.batch, 1, 28, 28))
        y = torch.randint(0, 10, (args.batch,))
        flops = forward_flops(model, x) / args.batch
        train_rate = args.batch / train_step_seconds(model, x, y, args.repeats)
        eval_x = encode(torch.rand(args.eval_batch, 1, 28, 28))
        eval_rate = args.eval_batch / eval_seconds(model, eval_x, args.repeats)
        print(
            f"| {name} | {count_parameters(model):,} | {flops / 1e6:.1f} | {train_rate:.0f} | {eval_rate:.0f} | "
            f"{EPOCH_IMAGES / train_rate:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
