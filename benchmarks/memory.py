"""Peak memory of one training step against T, for tks, its ANN twin and its SpikingJelly twin.

Usage: python benchmarks/memory.py [--model vgg_snn] [--batch 8] [--steps 1 2 4 8 10] [--quick]

Each measurement runs in a fresh process: it builds the model and the input, records the resident-set
high-water mark, runs one training step and reports how far the high-water mark rose: activations, temporaries,
gradients and optimizer state (the last two are the same for all variants). The bytes of tensors saved for
backward are also counted exactly with ``torch.autograd.graph.saved_tensors_hooks``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
from torch import nn

from tks.losses import mean_ce
from tks.models import create_model
from tks.snn import make_neuron

CASES = {"spiking_cnn": (1, 8, 128), "vgg_snn": (2, 48, 8), "resnet19": (3, 32, 8)}


def child(model_name: str, variant: str, steps: int, batch: int, size_cap: int | None) -> dict[str, float]:
    in_channels, size, _ = CASES[model_name]
    size = min(size, size_cap) if size_cap else size
    neuron = nn.ReLU if variant == "ann" else make_neuron("tks" if variant == "tks" else "spikingjelly")
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_channels=in_channels, neuron=neuron)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(steps, batch, in_channels, size, size)
    y = torch.randint(0, 10, (batch,))
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()  # by storage: a tensor saved twice counts once
        return t

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = mean_ce(model(x), y)
    loss.backward()
    optimizer.step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rise_mib": (after - before) / 1024, "saved_mib": sum(saved.values()) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg_snn", choices=list(CASES))
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 10])
    parser.add_argument("--quick", action="store_true", help="small input, T in {1, 2} (smoke test)")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "T", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--size-cap", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, steps, batch = args.child
        print(json.dumps(child(args.model, variant, int(steps), int(batch), args.size_cap)))
        return
    batch = args.batch or CASES[args.model][2]
    steps_list, cap = ([1], 16) if args.quick else (args.steps, None)
    print(
        f"{args.model}, batch {batch}, fp32: rise of the resident-set peak during one training step "
        "(and bytes saved for backward), MiB"
    )
    print("| T | ann | tks | sj | tks / sj |")
    print("|---:|---:|---:|---:|---:|")
    results = {}
    for steps in steps_list:
        row = {}
        for variant in ("ann", "tks", "sj"):
            command = [sys.executable, __file__, "--model", args.model, "--child", variant, str(steps), str(batch)]
            if cap:
                command += ["--size-cap", str(cap)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            row[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        results[steps] = row
        cells = [f"{row[v]['peak_rise_mib']:.0f} ({row[v]['saved_mib']:.0f})" for v in ("ann", "tks", "sj")]
        ratio = row["tks"]["peak_rise_mib"] / max(row["sj"]["peak_rise_mib"], 1e-9)
        print(f"| {steps} | {' | '.join(cells)} | {ratio:.2f} |", flush=True)
    if len(steps_list) > 1:
        first, last = steps_list[0], steps_list[-1]
        growth = {
            v: (results[last][v]["peak_rise_mib"] - results[first][v]["peak_rise_mib"]) / (last - first)
            for v in ("ann", "tks", "sj")
        }
        print("\ngrowth per step of T (MiB): " + ", ".join(f"{v} {g:.0f}" for v, g in growth.items()))


if __name__ == "__main__":
    main()
