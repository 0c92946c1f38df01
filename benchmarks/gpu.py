"""GPU training step: tks (Triton LIF) against its SpikingJelly twin and its ANN twin, fp32 / bf16, compiled or not.

Usage: python benchmarks/gpu.py [--quick] [--repeats 20] [--budget-s 270] [--models vgg_snn resnet19 sew_resnet34]

One short script for a lent GPU (docs/benchmarks.md, "GPU"). For every network at the paper's batch and T
(``vgg_snn`` batch 64, T=10, 48x48; ``resnet19`` batch 128, T=4, 32x32; ``sew_resnet34`` batch 64, T=4, 224x224)
it times one training step (forward, mean CE, backward, fused AdamW step) of three twins with the same layers and
weights:

  ann  ReLU instead of LIF, T folded into the batch (the floor)
  tks  tks's LIF: on CUDA the Triton kernels of tks.snn.backends.triton_lif behind one custom op
  sj   SpikingJelly 2.x LIFNode in multi-step mode (its own CUDA/Triton kernels on a GPU)

in fp32 and under bf16 autocast, eager and through ``torch.compile``, and reports the median step time (CUDA
events, after warm-up) and the peak memory allocated during the timed steps. Targets: tks <= 1.1x the ANN twin,
faster than the SpikingJelly twin, peak memory <= SpikingJelly's. Rows are printed as they finish; when the time
budget runs out the remaining rows are skipped (and said so), so the whole run stays within one lease.

``--quick`` runs everything on the CPU with tiny shapes (a smoke test for CI: nothing is asserted on speed).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from tks.losses import mean_ce
from tks.models import create_model
from tks.snn import make_neuron

# (in_channels, size, batch, T)
CASES = {"vgg_snn": (2, 48, 64, 10), "resnet19": (3, 32, 128, 4), "sew_resnet34": (3, 224, 64, 4)}
QUICK = {"spiking_cnn": (1, 8, 4, 2), "vgg_snn_small": (2, 16, 2, 2)}
TWINS = ("ann", "tks", "sj")


def build(name: str, twin: str, in_channels: int, device: torch.device) -> nn.Module:
    """One twin; every twin of a network starts from the same weights."""
    neuron = {"ann": nn.ReLU, "tks": make_neuron("tks"), "sj": make_neuron("spikingjelly")}[twin]
    torch.manual_seed(1)
    return create_model(name, num_classes=10, in_channels=in_channels, neuron=neuron).to(device)


def make_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bf16: bool, compile_model: bool
) -> Callable[[], None]:
    """A training step of ``model`` on the fixed batch ``(x, y)``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    if compile_model:
        # Every twin's forward is the same code object (SpikingClassifier.forward): without a reset, the twins
        # compiled before would fill dynamo's cache for it until the recompile limit sends the rest to eager.
        torch.compiler.reset()
    forward = torch.compile(model) if compile_model else model

    def step() -> None:
        autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            logits = forward(x)
        loss = mean_ce(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_step(
    step: Callable[[], None], device: torch.device, repeats: int, warmup: int = 3
) -> tuple[float, float | None]:
    """Median seconds of a step after warm-up, and the peak memory (bytes) allocated meanwhile (CUDA only)."""
    for _ in range(warmup):  # compilation, kernel autotuning, allocator
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            begin = time.perf_counter()
            step()
            times.append(time.perf_counter() - begin)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return statistics.median(times), peak


def measure_row(
    row: tuple[str, int, int, int, int, str, bool],
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    quick: bool,
    repeats: int,
) -> str:
    """One table row: the three twins of a network at one precision, eager or compiled."""
    model_name, steps, batch, in_channels, size, precision, compile_model = row
    ms, peak = {}, {}
    for twin in TWINS:
        model = build(model_name, twin, in_channels, device)
        step = make_step(model, x, y, bf16=precision == "bf16", compile_model=compile_model)
        seconds, peak_bytes = time_step(step, device, repeats, warmup=1 if quick else 3)
        ms[twin], peak[twin] = 1000 * seconds, peak_bytes
        del model, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    mib = {k: "-" if v is None else f"{v / 2**20:.0f}" for k, v in peak.items()}
    memory = f"{peak['tks'] / peak['sj']:.2f}" if peak["tks"] and peak["sj"] else "-"
    return (
        f"| {model_name} | {steps} | {batch} | {in_channels}x{size}x{size} | {precision} | "
        f"{'on' if compile_model else 'off'} | {ms['ann']:.1f} | {ms['tks']:.1f} | {ms['sj']:.1f} | "
        f"{ms['tks'] / ms['ann']:.2f} | {ms['sj'] / ms['tks']:.2f} | {mib['ann']} | {mib['tks']} | "
        f"{mib['sj']} | {memory} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=270.0, help="skip the rows left after this many seconds")
    parser.add_argument(
        "--compile", choices=("both", "off", "only"), default="both", help="eager rows, compiled rows, or both"
    )
    parser.add_argument("--quick", action="store_true", help="CPU, tiny shapes, 2 rounds (smoke test)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.quick:
        raise SystemExit("no CUDA GPU here: run with --quick for the CPU smoke test")
    cases = QUICK if args.quick else {m: CASES[m] for m in args.models}
    repeats = 2 if args.quick else args.repeats
    compiles = {"both": (False, True), "off": (False,), "only": (True,)}[args.compile]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"{name}; torch {torch.__version__}; median of {repeats} steps after 3 warm-up; times in ms, memory in MiB")
    print(
        "| model | T | batch | input | precision | compile | ann | tks | sj | tks/ann | sj/tks | peak ann | peak tks "
        "| peak sj | tks/sj memory |"
    )
    print("|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    began = time.perf_counter()
    skipped = 0
    for compile_model in compiles:  # every eager row first: a compiled row costs minutes of compilation
        for model_name, (in_channels, size, batch, steps) in cases.items():
            if args.quick and compile_model and model_name != "spiking_cnn":
                continue  # CPU compilation is slow: the smoke test compiles the smallest network only
            torch.manual_seed(0)
            x = torch.rand(steps, batch, in_channels, size, size, device=device)
            y = torch.randint(0, 10, (batch,), device=device)
            for precision in ("fp32", "bf16"):
                if args.quick and compile_model and precision == "bf16":
                    continue
                if time.perf_counter() - began > args.budget_s:
                    skipped += 1
                    continue
                row = (model_name, steps, batch, in_channels, size, precision, compile_model)
                try:
                    print(measure_row(row, x, y, device, args.quick, repeats), flush=True)
                except Exception as exc:  # noqa: BLE001 - one lease, one run: a failed row must not lose the others
                    print(
                        f"| {model_name} | {precision} | compile {compile_model} | failed: {exc!r:.300} |", flush=True
                    )
    if skipped:
        print(f"\n{skipped} row(s) skipped: the time budget of {args.budget_s:.0f} s ran out (--budget-s)")


if __name__ == "__main__":
    main()
