"""Training-step time of a paper recipe as ``tks train`` runs it, in fp32 and bf16 autocast, and the epoch it implies.

Usage: python benchmarks/recipe_step.py [--quick] [--config configs/paper/cifar10_resnet19_tks.yaml] [--repeats 3]

The step is the training loop's own (``tks.engine.train_one_epoch``: encoding, forward, the configured loss,
backward, optimizer step) on random input of the dataset's shape at the recipe's batch size and T, so no dataset is
needed. Rounds alternate fp32 and bf16 after a warm-up step of each (``training_step.measure``); the median is
reported. The implied epoch time
is the step time times the number of steps of one pass over the training set (``--train-size``, CIFAR-10's 50,000
by default), without data loading.
"""

from __future__ import annotations

import argparse
import math
from functools import partial

import torch
from training_step import measure  # the same warm-up and interleaved rounds (benchmarks/ is on sys.path)

from tks.build import build_model, build_optimizer
from tks.config import Config, load_config
from tks.data import dataset_info, to_time_major
from tks.engine import Training, train_one_epoch
from tks.losses import Criterion


def step_seconds(cfg: Config, precisions: tuple[str, ...], repeats: int) -> dict[str, float]:
    """Median seconds of one training step of the recipe, per precision (one model and optimizer per precision)."""
    info = dataset_info(cfg.data.name)
    size = cfg.data.frame_size or info.input_size[0]
    shape = (info.in_channels, size, size)
    if info.kind == "events":  # event frames arrive batch-first over time: [B, T, 2, H, W], sparse binary
        x = (torch.rand(cfg.data.batch_size, cfg.data.num_steps, *shape) < 0.1).float()
    else:
        x = torch.rand(cfg.data.batch_size, *shape)
    batch = [(x, torch.randint(0, info.num_classes, (cfg.data.batch_size,)))]
    encode = partial(to_time_major, kind=info.kind, num_steps=cfg.data.num_steps)
    runs = {}
    for precision in precisions:
        torch.manual_seed(0)
        model = build_model(cfg.model, info, cfg.data.num_steps)
        optimizer = build_optimizer(model, cfg.optim)
        criterion = Criterion(cfg.loss)
        training = Training(model, criterion, optimizer, cfg.optim, encode, torch.device("cpu"), precision=precision)
        runs[precision] = partial(train_one_epoch, training, batch, epoch=1)
    return measure(runs, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/paper/cifar10_resnet19_tks.yaml")
    parser.add_argument("--train-size", type=int, default=50_000, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="digits CNN, batch 16, 1 round (smoke test)")
    args = parser.parse_args()
    config, overrides, repeats = args.config, [], args.repeats
    if args.quick:
        config, overrides, repeats = None, ["data.batch_size=16"], 1
    cfg = load_config(config, overrides)
    seconds = step_seconds(cfg, ("fp32", "bf16"), repeats)
    steps_per_epoch = math.ceil(args.train_size / cfg.data.batch_size)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {config or 'default config'}: "
        f"{cfg.model.name}, batch {cfg.data.batch_size}, T={cfg.data.num_steps}, loss {cfg.loss.name}; "
        f"median of {repeats} rounds"
    )
    print(f"| precision | step (s) | samples/s | epoch of {args.train_size:,} (min, {steps_per_epoch} steps) |")
    print("|---|---:|---:|---:|")
    for precision, s in seconds.items():
        rate = cfg.data.batch_size / s
        print(f"| {precision} | {s:.2f} | {rate:.1f} | {s * steps_per_epoch / 60:.1f} |")
    print(f"bf16 speed-up: {seconds['fp32'] / seconds['bf16']:.2f}x")


if __name__ == "__main__":
    main()
