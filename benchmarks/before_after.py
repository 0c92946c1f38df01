"""Training-step and inference time of two versions of tks, measured side by side: does a change slow anything?

Usage: python benchmarks/before_after.py BEFORE_TREE [AFTER_TREE] [--models spiking_cnn vgg_snn] [--rounds 5]
       python benchmarks/before_after.py --quick      (this checkout against itself, tiny input: a smoke test)

BEFORE_TREE and AFTER_TREE are checkouts of tks (``git worktree add /tmp/before REV``); AFTER_TREE defaults to this
checkout. Each measurement runs in a fresh process with ``PYTHONPATH=<tree>/src``, so each version imports its own
code (and builds its own C kernel). The two versions alternate, one process each per round, and the median over
rounds is reported, so background load affects both alike; the ratio after/before is the figure to read.

Each process builds the network with the default neuron (engine ``tks``, seed 1, the same weights in both versions
while the model code is unchanged), then times one training step (forward, mean CE + TKS term, backward, AdamW step)
and one inference forward pass (``torch.no_grad``, eval mode): the median of ``--steps-per-round`` after a warm-up.
Only the public API that every version since 0.1 has is used (``create_model``, ``make_neuron``, ``tks_loss``,
``mean_ce``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from tks.provenance import cpu_model

ROOT = Path(__file__).resolve().parents[1]

# (in_channels, size, batch) per network: the input sizes of training_step.py
CASES = {
    "spiking_cnn": (1, 8, 128),
    "spiking_convnet_wide": (1, 28, 64),
    "vgg_snn": (2, 48, 16),
    "resnet19": (3, 32, 16),
    "sew_resnet19": (3, 32, 16),
}
QUICK = {"spiking_cnn": (1, 8, 16)}

# Runs in the measured version's interpreter: keep it to the API every version has.
CHILD = """
import json, statistics, sys, time
import torch
from tks.losses import mean_ce, tks_loss
from tks.models import create_model
from tks.snn import make_neuron

name, in_channels, size, batch, steps, repeats, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
torch.manual_seed(0)
x, y = torch.rand(steps, batch, in_channels, size, size), torch.randint(0, 10, (batch,))
torch.manual_seed(1)
model = create_model(name, num_classes=10, in_channels=in_channels, neuron=make_neuron("tks"))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

def train_step():
    logits = model(x)
    loss = mean_ce(logits, y) + tks_loss(logits, y, temperature=3.0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

def infer():
    with torch.no_grad():
        model(x)

def median_seconds(fn, train):
    model.train(train)
    fn()  # warm-up: kernel build, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

print(json.dumps({"train": median_seconds(train_step, True), "infer": median_seconds(infer, False)}))
"""


def measure(tree: Path, case: list) -> dict[str, float]:
    """One process of ``tree``'s tks: median seconds of a training step and of an inference pass."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": str(case[-1])}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(case)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the measurement failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def git_revision(tree: Path) -> str:
    """The tree's commit (short), with ``+dirty`` when it has uncommitted changes."""
    rev = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    status = ["git", "-C", str(tree), "status", "--porcelain", "--", "src"]
    dirty = subprocess.run(status, capture_output=True, text=True, check=False)
    return (rev.stdout.strip() or "?") + ("+dirty" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, nargs="?", default=None, help="checkout of the earlier version")
    parser.add_argument("after", type=Path, nargs="?", default=ROOT, help="checkout of the later one (this one)")
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=4, help="T")
    parser.add_argument("--rounds", type=int, default=5, help="processes per version and model, alternating")
    parser.add_argument("--steps-per-round", type=int, default=5, help="timed steps in each process (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each process")
    parser.add_argument("--quick", action="store_true", help="this checkout against itself, tiny input, 1 round")
    args = parser.parse_args()
    if args.before is None and not args.quick:
        parser.error("give the checkout of the earlier version (or --quick)")
    cases = QUICK if args.quick else {m: CASES[m] for m in args.models}
    if args.quick:
        args.before, args.rounds, args.steps_per_round = args.after, 1, 1
    for tree in (args.before, args.after):
        if not (tree / "src" / "tks").is_dir():
            raise SystemExit(f"{tree} is not a tks checkout (no src/tks)")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    print(
        f"{cpu_model() or 'unknown CPU'}; {args.threads} thread(s) per process; T={args.steps}; fp32; "
        f"median over {args.rounds} alternating processes of the median of {args.steps_per_round} steps; times in ms"
    )
    print(f"before: {git_revision(trees['before'])} ({trees['before']}); after: {git_revision(trees['after'])}")
    print(
        "| model | input | batch | train before | train after | train after/before "
        "| infer before | infer after | infer after/before |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (in_channels, size, batch) in cases.items():
        case = [name, in_channels, size, batch, args.steps, args.steps_per_round, args.threads]
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            for key, tree in trees.items():
                runs[key].append(measure(tree, case))
        ms = {
            (key, part): 1000 * statistics.median(r[part] for r in runs[key])
            for key in trees
            for part in ("train", "infer")
        }
        cells = []
        for part in ("train", "infer"):
            before, after = ms["before", part], ms["after", part]
            cells += [f"{before:.1f}", f"{after:.1f}", f"{after / before:.2f}"]
        print(f"| {name} | {in_channels}x{size}x{size} | {batch} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
