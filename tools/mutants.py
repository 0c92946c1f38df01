"""Mutation testing of the modules where a silent error changes a result (mutmut 3; docs/testing.md).

For each module it makes a work folder ``.mutants/<name>/`` (a copy of ``src/`` and ``tests/`` with a
``pyproject.toml`` that names the module and the tests that cover it), runs ``mutmut run`` there, and counts the
mutants by outcome. The score is killed / (killed + survived + no tests), with timeouts and segfaults counted as
killed (the tests noticed), and a second score that leaves out the mutants ``tools/equivalent_mutants.txt`` lists as
equivalent (a change no test can see, with the reason). Nothing is asserted: the figures go to docs/testing.md.

Examples:
    python tools/mutants.py losses metrics          # two modules, one after the other
    python tools/mutants.py --list                  # the modules and the tests that cover each
    python tools/mutants.py losses --survivors      # also print every surviving mutant's diff
    python tools/mutants.py --report                # the table of the last runs, without running again
    nox -s mutants -- losses                        # the same in a nox session
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutants"
EQUIVALENT = ROOT / "tools" / "equivalent_mutants.txt"


@dataclass(frozen=True)
class Target:
    """One module (or folder) to mutate and the test files whose tests cover it."""

    sources: tuple[str, ...]
    tests: tuple[str, ...]
    skip: str = ""
    """A ``pytest -k`` expression of tests left out, with the reason in TARGETS."""
    mutants: tuple[str, ...] = ()
    """Mutant name patterns (``mutmut run`` arguments, ``*`` wildcards) to test, where only some functions of a
    module are in scope; empty: every mutant of ``sources``."""


TARGETS = {
    "losses": Target(("src/tks/losses.py",), ("tests/test_losses.py", "tests/test_registries.py")),
    "metrics": Target(("src/tks/metrics.py",), ("tests/test_metrics.py",)),
    "snn": Target(
        ("src/tks/snn/*",),
        (
            "tests/test_neuron.py",
            "tests/test_backends.py",
            "tests/test_layers.py",
            "tests/test_stateful.py",
            "tests/test_surrogate.py",
            "tests/test_kernel_boundaries.py",
            "tests/test_triton_lif.py",
            "tests/test_third_party.py",
        ),
        # the two tests that torch.compile the neuron fail under mutmut alone: dynamo breaks on its trampolines
        skip="not graph_breaks and not through_the_triton_path",
    ),
    "checkpoint": Target(
        ("src/tks/checkpoint.py",),
        ("tests/test_checkpoint.py", "tests/test_engine.py", "tests/test_training.py", "tests/test_resume_random.py"),
        # left out, 1 to 13 s per mutant each, the training tests whose use of checkpoint.py (a checkpoint written
        # each epoch, best.pt copied and read back) test_checkpoint.py checks directly in milliseconds; kept, the
        # fast checkpoint tests of test_engine and test_training and test_resume_random's resumed runs, equal to the
        # uninterrupted ones through the files checkpoint.py wrote and read
        skip="not fit_writes_log and not bf16_autocast and not weight_decay and not selecting_on_test"
        " and not best_checkpoint_follows and not resumed_fit_without and not validation_split_selects"
        " and not channels_last",
    ),
    "experiment": Target(
        ("src/tks/experiment.py",),
        (
            "tests/test_resume_path.py",
            "tests/test_resume_random.py",
            "tests/test_engine.py",
            "tests/test_training.py",
            "tests/test_locks.py",
        ),
        # the tests that call resume in-process (tests/test_run_files.py does too, at 10-30 s a test: left out, its
        # resumes of a finished run, a lost log line and a cut write test_resume_path.py checks on tiny runs); the
        # training tests left out never reach the resume path, and would only lengthen mutmut's first pass
        skip="not fit_writes_log and not bf16_autocast and not weight_decay and not selecting_on_test"
        " and not best_checkpoint_follows and not resumed_fit_without and not channels_last",
        # the resume path: resume (the folder's lock, the checkpoint and its stored config, a finished run left as it
        # is, the log mended, the hand-over to _run) and _restore (weights, optimizer, scaler, generators, progress).
        # _training's part is one line, `state = _restore(...)` when a record is given; the rest of _training and
        # _run (model, optimizer, DDP, compile, data, hooks) builds and trains every run, new or resumed: out of scope
        mutants=("tks.experiment.x_resume__mutmut_*", "tks.experiment.x__restore__mutmut_*"),
    ),
    "splits": Target(
        ("src/tks/data/splits.py",),
        ("tests/test_validation_split.py", "tests/test_data.py", "tests/test_data_events.py"),
    ),
    "encoding": Target(("src/tks/data/encoding.py",), ("tests/test_data.py", "tests/test_engine.py")),
    "folders": Target(("src/tks/sweep/folders.py",), ("tests/test_sweep_folders.py", "tests/test_sweep.py")),
    "export": Target(
        ("src/tks/export.py",),
        ("tests/test_export_parts.py", "tests/test_export.py"),
        # left out, each seconds per mutant, what test_export_parts checks layer by layer in milliseconds: the round
        # trips of the full VGG-SNN and ResNet-19 (conv-BN folding, pooling, the residual block), the export command
        # after a training run and the metadata test on the session's trained digits runs (export_checkpoint,
        # input_metadata); tests/test_nir_interop.py holds other frameworks' importers to run_nir, which these
        # tests hold to the model
        skip="not (round_trip and (vgg_snn or resnet19)) and not (avg_pooling and resnet19) and not export_command"
        " and not says_what_its_input",
    ),
    "anytime": Target(
        ("src/tks/anytime.py",),
        ("tests/test_anytime.py", "tests/test_calibration.py"),
        # left out, test_calibration.py: each of its tests needs the module's trained digits run (12 s to train, and
        # again whenever mutmut's order by duration puts a test_anytime test between two of them); what they check of
        # anytime.py (the exit rule through a NIR graph's metadata, the uncorrected threshold found threshold by
        # threshold) test_anytime.py checks on hand-made logits in milliseconds. The two guarantee tests (3-4 s) stay
        skip="not test_calibration",
    ),
    "compare_anytime": Target(("src/tks/compare/anytime.py",), ("tests/test_compare_anytime.py",)),
}
"""What ``python tools/mutants.py NAME`` mutates, and the tests it runs against each mutant."""

SHARED = ("README.md", "docs", "configs", "studies", "results", "examples", "benchmarks")
"""Files beside src/ and tests/ that tests read (the README, docs, recipes, sweep files, committed results)."""

OUTCOMES = ("killed", "timeout", "survived", "no tests", "skipped", "suspicious", "segfault", "not checked")


def project_file(target: Target) -> str:
    """The work folder's pyproject.toml: the repository's pytest settings and mutmut's for this target."""

    def strings(values: tuple[str, ...]) -> str:
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    return f"""[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "-m 'not slow' -p no:cacheprovider"
markers = ["slow: a long end-to-end test"]

[tool.mutmut]
source_paths = ["src/tks"]
only_mutate = {strings(target.sources)}
pytest_add_cli_args_test_selection = {strings(target.tests)}
pytest_add_cli_args = {strings(("-k", target.skip) if target.skip else ())}
also_copy = {strings(SHARED)}
# torch is not safe to fork after its threads have started: fork each mutant from a server process instead
process_isolation = "forkserver"
"""


def prepare(name: str, target: Target) -> Path:
    """A fresh work folder for ``name`` (the previous run's results are thrown away)."""
    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", folder / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", folder / "tests", ignore=ignore)
    for name in SHARED:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, folder / name)
    (folder / "pyproject.toml").write_text(project_file(target), encoding="utf-8")
    return folder


def outcomes(folder: Path) -> dict[str, str]:
    """Every mutant's outcome, by mutant name (``mutmut results --all true``)."""
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    pairs = (line.strip().rsplit(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    return {mutant: outcome for mutant, outcome in pairs}


def equivalent_mutants() -> dict[str, str]:
    """The mutants listed as equivalent, with the reason: ``name  reason`` per line, ``#`` comments."""
    if not EQUIVALENT.is_file():
        return {}
    listed = {}
    for line in EQUIVALENT.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            mutant, _, reason = line.strip().partition(" ")
            listed[mutant] = reason.strip()
    return listed


def score(results: dict[str, str], equivalent: dict[str, str]) -> dict[str, object]:
    """Counts by outcome and the two scores (in percent) of one target."""
    results = {m: o for m, o in results.items() if o != "not checked"}  # out of the target's scope (``mutants``)
    counts = Counter(results.values())
    killed = counts["killed"] + counts["timeout"] + counts["segfault"]  # a crash is noticed too
    missed = [m for m, o in results.items() if o in ("survived", "no tests")]
    judged = killed + len(missed)
    left = [m for m in missed if m not in equivalent]
    return {
        "mutants": len(results),
        "counts": dict(counts),
        "score": round(100 * killed / judged, 1) if judged else None,
        "score_without_equivalent": round(100 * killed / (killed + len(left)), 1) if killed + len(left) else None,
        "equivalent": sorted(set(missed) & set(equivalent)),
        "not_killed": sorted(left),
    }


def run(name: str, target: Target, children: int, survivors: bool) -> dict[str, object]:
    """Mutate one target in a fresh work folder; its summary (also written to ``summary.json`` there)."""
    folder = prepare(name, target)
    started = time.monotonic()
    log = folder / "mutmut.log"
    with open(log, "w", encoding="utf-8") as out:  # mutmut's progress line is long: keep it out of the terminal
        done = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *target.mutants],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            check=False,
        )
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise SystemExit(f"mutmut run failed for {name} (exit {done.returncode}); the end of {log}:\n{tail}")
    summary = {"target": name, **score(outcomes(folder), equivalent_mutants())}
    summary["seconds"] = round(time.monotonic() - started)
    summary["date"] = time.strftime("%Y-%m-%d")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if survivors:
        for mutant in summary["not_killed"]:
            shown = subprocess.run(
                [sys.executable, "-m", "mutmut", "show", mutant], cwd=folder, capture_output=True, text=True
            )
            changed = [ln for ln in shown.stdout.splitlines() if re.match(r"^[-+](?![-+])", ln)]
            print(f"--- {mutant}\n" + "\n".join(changed))
    return summary


def rescore(name: str) -> dict[str, object]:
    """The summary of the last run of ``name``, scored with the equivalent mutants listed now."""
    folder = WORK / name
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    summary.update(score(outcomes(folder), equivalent_mutants()))
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def table(summaries: list[dict[str, object]]) -> str:
    """The Markdown rows of docs/testing.md's score table."""
    rows = [
        "| module | mutants | killed | survived | no tests | equivalent | score | without equivalent | time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        c = s["counts"]
        killed = c.get("killed", 0) + c.get("timeout", 0) + c.get("segfault", 0)
        rows.append(
            f"| {s['target']} | {s['mutants']} | {killed} | {c.get('survived', 0)} | {c.get('no tests', 0)} | "
            f"{len(s['equivalent'])} | {s['score']}% | {s['score_without_equivalent']}% | {s['seconds']} s |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """``python tools/mutants.py [NAME ...]``: run the targets and print the score table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="NAME", help=f"of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    parser.add_argument("--survivors", action="store_true", help="print the diff of every mutant not killed")
    parser.add_argument("--list", action="store_true", help="list the targets and stop")
    parser.add_argument(
        "--report", action="store_true", help="score the last run of each target again (the equivalents as listed now)"
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, target in TARGETS.items():
            print(f"{name:<15} {' '.join(target.sources)}  <-  {' '.join(target.tests)}")
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    if args.report:
        summaries = [rescore(t) for t in args.targets or TARGETS if (WORK / t / "summary.json").is_file()]
    else:
        summaries = [run(t, TARGETS[t], args.children, args.survivors) for t in args.targets or TARGETS]
    print(table(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
