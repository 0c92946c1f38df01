"""What importing tks costs: `tks --help`, `import tks` and `import tks.losses` against `import torch`.

Usage: python benchmarks/imports.py [--repeats 7] [--quick]

Each command runs in a fresh interpreter (what a user's `python -c` or `tks` pays), the commands in turn, round
after round, so that a busy or idle moment of the machine falls on all of them alike; the table gives each one's
median wall time and its ratio to the median of `python -c "import torch"` measured in the same rounds. The
interpreter's own start (`python -c pass`) is included in every row, as a user would see it. Targets of
docs/install.md: every `--help` below 0.1x, `import tks.losses` at most 1.1x.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

from tks.provenance import cpu_model

PYTHON = sys.executable
TKS = shutil.which("tks", path=os.path.dirname(PYTHON)) or shutil.which("tks")
COMMANDS = {
    'python -c "pass"': [PYTHON, "-c", "pass"],
    'python -c "import torch"': [PYTHON, "-c", "import torch"],
    "tks --help": [TKS, "--help"] if TKS else [PYTHON, "-m", "tks", "--help"],
    "tks train --help": [TKS, "train", "--help"] if TKS else [PYTHON, "-m", "tks", "train", "--help"],
    "tks sweep --help": [TKS, "sweep", "--help"] if TKS else [PYTHON, "-m", "tks", "sweep", "--help"],
    'python -c "import tks"': [PYTHON, "-c", "import tks"],
    'python -c "import tks.losses"': [PYTHON, "-c", "import tks.losses"],
    'python -c "from tks import TKSLoss, create_model"': [PYTHON, "-c", "from tks import TKSLoss, create_model"],
}


def seconds(argv: list[str]) -> float:
    """Wall time of one run of ``argv`` (its output discarded)."""
    begin = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="rounds; each runs every command once")
    parser.add_argument("--quick", action="store_true", help="2 rounds (a smoke test: the times mean little)")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.repeats
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for argv in COMMANDS.values():
        seconds(argv)  # warm the file cache once
    for _ in range(rounds):
        for name, argv in COMMANDS.items():
            times[name].append(seconds(argv))
    medians = {name: statistics.median(t) for name, t in times.items()}
    torch_seconds = medians['python -c "import torch"']
    print(
        f"median of {rounds} rounds, each command in a fresh interpreter; Python {platform.python_version()}, "
        f"CPU: {cpu_model()}, {os.cpu_count()} cores"
    )
    print("| command | median (s) | / import torch |")
    print("|---|---:|---:|")
    for name, median in medians.items():
        print(f"| {name} | {median:.3f} | {median / torch_seconds:.2f} |")


if __name__ == "__main__":
    main()
