"""Wall time of a study swept by ``tks sweep --executor local`` against the hand-made lanes it replaced.

Usage: python benchmarks/sweep_vs_lanes.py [SWEEP] --out EMPTY_DIR [--lane GLOB [GLOB ...]] ...
       python benchmarks/sweep_vs_lanes.py --quick      (a tiny digits grid: a smoke test, about a minute)

Runs ``tks sweep SWEEP --out EMPTY_DIR --executor local --parallel 2 --threads-per-run 1`` (so every run of the
study trains and is evaluated) and times it. Before ``tks sweep``, the studies ran as shell scripts in two fixed
lanes side by side, one thread each: ``studies/all.sh`` of commit a4a2d55^ put study 1's seeds 0 and 1 in one lane
and seed 2 in the other (the default ``--lane '*-s0' '*-s1' --lane '*-s2'``), each lane running its runs one after
another. The lanes' wall time is computed from the run times this sweep measured (each run's ``finished in N s``,
training and evaluation, taken while another run used the other core, as in the lanes): the longest lane's sum.
So both schedules are compared on the same runs, on the same machine, in one measurement, against the sweep's span
of runs (its first run's start to its last run's end; the command also starts up and prints a table at the end);
the lower bound is max(sum of run times / 2, longest run).
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tks.provenance import cpu_model

ROOT = Path(__file__).resolve().parents[1]
OLD_LANES = [["*-s0", "*-s1"], ["*-s2"]]  # studies/all.sh before a4a2d55, study 1's part of its two lanes
STARTED = re.compile(r"^\[.*\] (\S+): started")  # --out is empty: every run starts, none resumes
FINISHED = re.compile(r"^\[.*\] (\S+): finished in (\d+) s")
QUICK_SWEEP = """\
base: {optim: {epochs: 1, warmup_epochs: 0}, data: {num_steps: 1, train_limit: 256}, run: {progress: false}}
out_dir: out
name: quick-{loss.name}-s{run.seed}
grid: {run.seed: [0, 1], loss.name: [ce, tks]}
"""


def lane_times(seconds: dict[str, float], lanes: list[list[str]]) -> list[float]:
    """Each lane's wall time: the sum of the run times of the runs whose names match one of its patterns.

    Raises:
        ValueError: when a run matches no lane or more than one: the lanes must split the study.
    """
    totals = [0.0] * len(lanes)
    for name, run_seconds in seconds.items():
        homes = [i for i, patterns in enumerate(lanes) if any(fnmatch.fnmatch(name, p) for p in patterns)]
        if len(homes) != 1:
            raise ValueError(f"run {name} matches {len(homes)} lanes, not one: {lanes}")
        totals[homes[0]] += run_seconds
    return totals


def sweep_and_time(sweep: Path, out: Path) -> tuple[float, float, dict[str, float]]:
    """Run the sweep into ``out``.

    Returns:
        The command's wall time, the span of its runs (first start to last finish, as each progress line arrives:
        what a schedule of the same runs is compared with) and each run's seconds, by run name.
    """
    command = [sys.executable, "-m", "tks", "sweep", str(sweep), "--out", str(out), "--executor", "local"]
    command += ["--parallel", "2", "--threads-per-run", "1"]
    started_runs = 0
    seconds: dict[str, float] = {}
    started = first_start = last_finish = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", file=sys.stderr)  # the sweep's progress, out of the way of the table
            if STARTED.match(line):
                if started_runs == 0:
                    first_start = time.monotonic()
                started_runs += 1
            elif match := FINISHED.match(line):
                seconds[match.group(1)] = float(match.group(2))
                last_finish = time.monotonic()
    wall = time.monotonic() - started
    if process.returncode != 0 or not seconds or len(seconds) != started_runs:
        raise SystemExit(f"tks sweep failed or left runs unfinished (exit {process.returncode}); see above")
    return wall, last_finish - first_start, seconds


def table(wall: float, span: float, seconds: dict[str, float], lanes: list[list[str]]) -> str:
    """The Markdown table: the measured sweep, the lanes on the same run times, the lower bound; ratios to the
    sweep's span of runs (the command's start-up and closing table are not part of a schedule)."""
    lanes_wall = max(lane_times(seconds, lanes))
    total = sum(seconds.values())
    bound = max(total / 2, max(seconds.values()))
    described = "; ".join(" ".join(p) for p in lanes)  # no "|": it would split the table cell
    rows = [
        ("tks sweep --executor local, 2 runs x 1 thread: the whole command (measured)", wall),
        ("tks sweep: first run's start to last run's end (measured)", span),
        (f"old lanes [{described}], same run times (computed)", lanes_wall),
        ("lower bound: max(sum / 2, longest run)", bound),
    ]
    lines = ["| schedule | wall (s) | / sweep span |", "|---|---:|---:|"]
    lines += [f"| {label} | {value:.0f} | {value / span:.2f} |" for label, value in rows]
    lines.append("")
    longest = max(seconds.values())
    lines.append(f"{len(seconds)} runs, run times summed {total:.0f} s, longest {longest:.0f} s; CPU: {cpu_model()}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default=str(ROOT / "studies" / "fashion_mnist.yaml"))
    parser.add_argument("--out", help="an empty or new folder: every run of the sweep must train")
    parser.add_argument("--lane", nargs="+", action="append", metavar="GLOB", help="run-name patterns of one lane")
    parser.add_argument("--quick", action="store_true", help="a tiny digits grid in a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            sweep, out, lanes = Path(tmp) / "quick.yaml", Path(tmp) / "out", [["*-s0"], ["*-s1"]]
            sweep.write_text(QUICK_SWEEP)
        else:
            if args.out is None:
                parser.error("--out is required (an empty or new folder)")
            sweep, out, lanes = Path(args.sweep), Path(args.out), args.lane or OLD_LANES
            if out.exists() and any(out.iterdir()):
                parser.error(f"--out {out} is not empty: finished runs there would be skipped, not timed")
        wall, span, seconds = sweep_and_time(sweep, out)
    print(table(wall, span, seconds, lanes))


if __name__ == "__main__":
    main()
