"""The ``tks`` command: each verb parses its arguments, calls one library function and prints the result.

Errors caused by the user (a missing file, an unknown name, an invalid value) are printed as one line and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from tks.errors import TKSError, TKSWarning
from tks.eval_options import EvalOptions, add_eval_arguments
from tks.exit_options import RISKS, RULES


def format_results(results: dict[int, dict[str, Any]]) -> str:
    """A table with one row per number of steps T: top-1, top-5, AURC x 10^3 and each step's accuracy (%)."""
    header = f"{'T':>3}  {'top-1':>6}  {'top-5':>6}  {'AURC(x1e3)':>10}  accuracy of each step t=1..T (%)"
    rows = [header, "-" * len(header)]
    for t, m in results.items():
        per_step = " ".join(f"{100 * a:.1f}" for a in m["per_step"])
        rows.append(f"{t:>3}  {100 * m['top1']:6.2f}  {100 * m['top5']:6.2f}  {1000 * m['aurc']:10.2f}  {per_step}")
    return "\n".join(rows)


def _epoch_line(record: dict[str, Any]) -> str:
    train = record["train"]
    parts = " ".join(f"{k} {v:.3f}" for k, v in train.items() if k not in ("loss", "acc", "samples", "samples_per_s"))
    # train: under augmentation, train mode; train-eval: training images as the test set is seen
    sets = [
        (name, record[key]["top1"])
        for name, key in (("val", "val"), ("test", "test"), ("train-eval", "train_eval"))
        if key in record
    ]
    accuracies = "  ".join(f"{name} {100 * top1:5.1f}%" for name, top1 in sets)
    return (
        f"epoch {record['epoch']:>3}  loss {train['loss']:.3f} ({parts})  train {100 * train['acc']:5.1f}%  "
        f"{accuracies}  lr {record['lr']:.2e}  {train['samples_per_s']:.0f} samples/s"
    )


def format_selection(metrics: dict[str, Any]) -> str:
    """The summary lines of a training run: which epoch was selected, on which set, and that model's test top-1."""
    selected = metrics["selected"]
    on = metrics["selected_on"]
    return (
        f"best {on} top-1 {100 * metrics['best_top1']:.2f}% at epoch {metrics['best_epoch']} (best.pt, selected on "
        f"{on}); its test top-1 {100 * selected['top1']:.2f}%\n"
        f"final model (checkpoint.pt, the table above): test top-1 {100 * metrics['top1']:.2f}%"
    )


def cmd_train(args: argparse.Namespace) -> int:
    """``tks train [CONFIG] [--set KEY=VALUE ...]``."""
    from dataclasses import replace

    from tks.config import ConfigError, load_config
    from tks.distributed import is_main_from_env
    from tks.experiment import resume, train

    def show(record: dict[str, Any]) -> None:
        print(_epoch_line(record), flush=True)

    if args.resume:
        if args.config or args.set or args.plugin:
            raise ConfigError(
                "--resume continues a run with its stored config and plugins; drop CONFIG, --set, --plugin"
            )
        result = resume(args.resume, on_epoch_end=show)
        if result.already_finished:
            epochs = result.metrics.get("epoch", "all")
            print(f"run folder {args.resume} already finished ({epochs} epochs): nothing to do")
    else:
        cfg = load_config(args.config, args.set)
        cfg = replace(cfg, run=replace(cfg.run, plugins=(*cfg.run.plugins, *args.plugin)))
        result = train(cfg, on_epoch_end=show)
    if result.metrics.get("world_size", 1) > 1 and not is_main_from_env():
        return 0
    m = result.metrics
    print()
    print(format_results({m["num_steps"]: m}))
    print(format_selection(m))
    print(f"\ntrained in {m['train_seconds']:.1f} s; run folder: {result.run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``tks eval CHECKPOINT [--steps T ...]``."""
    from tks.evaluation import evaluate_checkpoint

    options = EvalOptions.from_arguments(args)  # checked before the plugins load
    _load_plugins(args)
    # Printed before the results are written: a failed write loses nothing.
    evaluate_checkpoint(args.checkpoint, options, on_result=_print_evaluation)
    return 0


def _print_evaluation(result: Any) -> None:
    """The table of ``tks eval``: a row per T, then the early-exit curve and the activity when measured."""
    print(format_results(result.steps))
    if result.early_exit is not None:
        print("\nanytime inference: stop at the first step whose running-mean confidence reaches the threshold")
        print(f"{'threshold':>9}  {'top-1':>6}  {'mean steps':>10}")
        for point in result.early_exit:
            print(f"{point['threshold']:>9.3f}  {100 * point['accuracy']:6.2f}  {point['mean_steps']:10.2f}")
    if result.activity is not None:
        print()
        print(format_activity(result.activity))
    if result.exit_rule is not None:
        print()
        print(format_exit_evaluation(result.exit_rule))


def format_exit_rule(rule: dict[str, Any]) -> str:
    """One line: the calibrated rule and what it promises."""
    at = "never before T" if rule["threshold"] is None else f"{rule['rule']} >= {rule['threshold']:.6g}"
    return (
        f"exit rule: {at} (T={rule['num_steps']}); {rule['risk']} <= {rule['epsilon']:g} with probability >= "
        f"{1 - rule['delta']:g}, calibrated on {rule['num_samples']} samples of the {rule['split']} split"
    )


def format_exit_evaluation(result: dict[str, Any]) -> str:
    """The calibrated rule on the test set: steps, accuracy, realised risk against its bound, energy."""
    within = "within" if result["within_bound"] else "ABOVE"
    lines = [
        format_exit_rule(result["rule"]),
        f"test: {result['mean_steps']:.3f} steps on average of {len(result['steps_histogram'])} (exits at t = 1.."
        f"{len(result['steps_histogram'])}: {' '.join(map(str, result['steps_histogram']))}); top-1 "
        f"{100 * result['accuracy']:.2f} against {100 * result['full_accuracy']:.2f} at T; realised "
        f"{result['rule']['risk']} {result['risk']:.4f}, {within} the bound {result['epsilon']:g}",
    ]
    if "energy_uj" in result:
        lines.append(
            f"energy per sample: {result['energy_uj']:.4g} uJ against {result['full_energy_uj']:.4g} uJ for all T "
            f"({100 * result['energy_ratio']:.1f}%)"
        )
    return "\n".join(lines)


def format_activity(activity: dict[str, Any]) -> str:
    """Firing rate of every spiking layer and the energy estimate, as text."""
    rows = [f"{'spiking layer':<32} {'neurons':>9}  {'rate':>6}  {'fired':>6}  rate at each step"]
    for layer in activity["layers"]:
        steps = " ".join(f"{r:.3f}" for r in layer["rate_per_step"])
        rows.append(
            f"{layer['name']:<32} {layer['neurons']:>9}  {layer['rate']:6.3f}  {layer['fired_fraction']:6.3f}  {steps}"
        )
    t = activity["totals"]
    rows.append(
        f"\nper sample: {t['macs']:.3g} MACs + {t['acs']:.3g} ACs = {t['energy_uj']:.4g} uJ "
        f"(ANN of the same layers: {t['ann_macs']:.3g} MACs = {t['ann_energy_uj']:.4g} uJ, "
        f"{t['ann_over_snn']:.2f}x); 4.6 pJ/MAC, 0.9 pJ/AC at 45 nm"
    )
    return "\n".join(rows)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``tks calibrate RUN... [--risk EPS...] [--delta D] [--study]``: the early-exit rule with a guarantee."""
    from tks.calibration import calibrate_checkpoint, rule_file, run_checkpoints, study_checkpoint
    from tks.config import ConfigError
    from tks.exit_options import CalibrationOptions

    if len(args.risk) > 1 and not args.study:
        raise ConfigError("several --risk values need --study (a rule has one bound)")
    options = CalibrationOptions(
        epsilon=args.risk[0],
        delta=args.delta,
        rule=args.rule,
        risk=args.risk_kind,
        split=args.split,
        data_root=args.data_root,
        device=args.device,
    )
    _load_plugins(args)
    for path in run_checkpoints(args.runs):
        if args.study:
            study = study_checkpoint(path, args.risk, options)
            print(f"{path}: {format_study(study)}")
            continue
        rule = calibrate_checkpoint(path, options)
        print(f"{path}: {format_exit_rule(rule.to_dict())}")
        print(
            f"  on those samples: {rule.calibration_steps:.3f} steps on average, "
            f"{rule.risk} {rule.calibration_risk:.4f}; wrote {rule_file(path).name} and the rule into {path.name}"
        )
    return 0


def format_study(study: dict[str, Any]) -> str:
    """One line per bound of ``study_checkpoint``: the calibrated rule's test steps and risk, then the uncorrected."""
    lines = []
    for bound in study["bounds"]:
        cal, naive = bound["calibrated"]["test"], bound["empirical"]["test"]
        lines.append(
            f"  epsilon {bound['epsilon']:g}: calibrated {cal['mean_steps']:.3f} steps, test risk {cal['risk']:.4f}; "
            f"uncorrected {naive['mean_steps']:.3f} steps, test risk {naive['risk']:.4f}"
        )
    return "wrote anytime.json\n" + "\n".join(lines)


def cmd_models(args: argparse.Namespace) -> int:
    """``tks models [--verbose]``: every registered model, its parameter count, input and description."""
    from tks.models import MODELS, count_parameters, create_model, list_models

    _load_plugins(args)
    if args.verbose:
        from tks.snn import describe_backends

        print(describe_backends() + "\n")
    width = max(map(len, list_models()))
    print(f"{'model':<{width}} {'parameters':>12}  {'input':<22}network (K={args.num_classes}, C={args.in_channels})")
    for name in list_models():
        entry = MODELS[name]
        model = create_model(name, num_classes=args.num_classes, in_channels=args.in_channels)
        print(f"{name:<{width}} {count_parameters(model):>12,}  {entry.inputs:<22}{entry.description}")
        if args.verbose:
            print(f"{'':<{width}} options: {', '.join(entry.options) or '-'}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """``tks prepare DATASET --root DIR --steps T``: frame an event dataset once into its frame cache."""
    from tks.data import DataOptions, prepare_frames

    options = DataOptions(
        num_steps=args.steps,
        frame_size=args.frame_size,
        split_scheme=args.split,
        frames_cache=args.cache,
        workers=args.workers,
    )
    for folder in prepare_frames(args.dataset, args.root, options):
        print(f"frame cache ready: {folder}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``tks export CHECKPOINT --format nir``."""
    from tks.export import export_checkpoint
    from tks.paths import check_writable_file

    # Checked here as well as in the library so that the message names the flag, not the Python parameter.
    if args.out is not None:
        check_writable_file(args.out, "--out")
    _load_plugins(args)
    target = export_checkpoint(args.checkpoint, args.out, dt=args.dt, pooling=args.pooling)
    print(f"wrote {target}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``tks compare RUN_DIR... [--out DIR] [--model final|selected]``: Table 4 over the runs, mean ± std."""
    from tks.compare import compare_runs
    from tks.paths import check_writable_folder

    if args.out:
        check_writable_folder(args.out, "--out")
    print(compare_runs(args.run_dirs, args.out, model=args.model, paired=args.paired, anytime=args.anytime), end="")
    if args.out:
        print(f"\nwrote {args.out}/compare.md and {args.out}/compare.csv")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``tks plot RUN_DIR... [--out DIR] [--trained-at-each-t]``: Fig. 3, 4, 5 and training curves."""
    from tks.paths import check_writable_folder
    from tks.plots import plot_runs

    check_writable_folder(args.out, "--out")
    files, notes = plot_runs(args.run_dirs, args.out, trained_at_each_t=args.trained_at_each_t)
    _print_notes(notes)
    print("wrote " + " ".join(str(f) for f in files))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``tks report RUN_DIR... [--out FILE]``: one self-contained HTML page."""
    from tks.paths import check_writable_file
    from tks.report import report_runs

    if args.out is not None:
        check_writable_file(args.out, "--out")
    page, notes = report_runs(args.run_dirs, args.out, trained_at_each_t=args.trained_at_each_t)
    _print_notes(notes)
    print(f"wrote {page}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """``tks sweep SWEEP... [--executor local|ray|slurm] [--parallel N] [--threads-per-run K] [--dry-run]``."""
    from tks.sweep.command import sweep
    from tks.sweep.executors import ExecutorOptions

    executor = ExecutorOptions(
        name=args.executor,
        parallel=args.parallel,
        threads=args.threads_per_run,
        gpus=args.gpus_per_run,
        procs=args.procs_per_run,
        address=args.address,
        partition=args.partition,
        minutes=args.time,
        slurm_params=args.slurm_param,
        slurm_cluster=args.slurm_cluster,
    )
    return sweep(
        args.sweeps,
        executor,
        overrides=args.set,
        out_dir=args.out,
        only=args.only,
        dry_run=args.dry_run,
        measure=args.measure,
        plugins=args.plugin,
        data_root=args.data_root,
        out=lambda line: print(line, flush=True),
    )


def _load_plugins(args: argparse.Namespace) -> None:
    """Import the ``--plugin`` modules (and the installed entry-point plugins) before a command builds anything."""
    from tks.plugins import load_plugins

    load_plugins(args.plugin)


def _add_plugin(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import a module or .py file that registers models, datasets or losses (repeatable)",
    )


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"note: {note}")


def _add_run_dirs(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, or folders that hold run folders")


def _builtin_losses() -> tuple[str, ...]:
    from tks.config import BUILTIN_LOSSES

    return BUILTIN_LOSSES


def _choices(key: str, section: str | None = None) -> tuple[str, ...]:
    """The values a ``Literal`` field of the loss config (or of one of its sections) accepts."""
    from tks.config import LossConfig

    cls = typing.get_type_hints(LossConfig)[section] if section else LossConfig
    return typing.get_args(typing.get_type_hints(cls)[key])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per verb, in the order ``tks --help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="tks", description="Train spiking neural networks with Temporal Knowledge Sharing."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_train(verbs)
    _add_eval(verbs)
    _add_calibrate(verbs)
    _add_prepare(verbs)
    _add_export(verbs)
    _add_compare(verbs)
    _add_plot(verbs)
    _add_report(verbs)
    _add_sweep(verbs)
    _add_models(verbs)
    return parser


_AT_EACH_T = "Fig. 3: also draw the models trained at each T, at their own T"
"""Help of ``--trained-at-each-t`` (``tks plot`` and ``tks report``)."""


def _add_train(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "train",
        help="train a model from a config file (default: the bundled digits recipe)",
        epilog=f"losses (loss.name): {', '.join(_builtin_losses())} or one a plugin registers; strong_weak distils "
        "between time steps without "
        f"labels, loss.strong_weak.direction: {', '.join(_choices('direction', 'strong_weak'))} (README: 'Use the "
        "loss in your own code')",
    )
    p.add_argument("config", nargs="?", default=None, help="YAML config (default: built-in digits recipe)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. loss.tks.alpha=0.3")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR where it stopped")
    _add_plugin(p)
    p.set_defaults(func=cmd_train)


def _add_eval(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("eval", help="evaluate a checkpoint at one or more numbers of time steps")
    p.add_argument("checkpoint", help="checkpoint.pt written by tks train")
    add_eval_arguments(p)
    _add_plugin(p)
    p.set_defaults(func=cmd_eval)


def _add_calibrate(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "calibrate",
        help="an early-exit rule with a guarantee, chosen on the validation split (docs/anytime.md)",
        epilog="Learn-then-Test: the rule's risk is <= --risk with probability >= 1 - --delta over the calibration "
        "samples, when they and the test data are exchangeable. Writes exit-rule.json and stores the rule in the "
        "checkpoint; tks eval CHECKPOINT --exit-rule measures it on the test set.",
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folder (its checkpoint.pt), a checkpoint, or a sweep's folder"
    )
    p.add_argument("--risk", type=float, nargs="+", default=[0.01], metavar="EPS", help="bound on the risk (0.01)")
    p.add_argument("--delta", type=float, default=0.05, help="probability that the bound fails (0.05)")
    p.add_argument(
        "--risk-kind",
        choices=RISKS,
        default="disagreement",
        help="early answer differs from the answer at T, or is wrong where T is right (disagreement)",
    )
    p.add_argument("--rule", choices=RULES, default="confidence", help="score of the running mean (confidence)")
    p.add_argument("--split", default="val", help="held-out split to calibrate on (val; never test)")
    p.add_argument("--data-root", default=None, help="dataset folder, if it moved since training")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--study",
        action="store_true",
        help="for each --risk, the calibrated and the uncorrected rule measured on the test set: anytime.json (tks "
        "compare --anytime); writes no rule",
    )
    _add_plugin(p)
    p.set_defaults(func=cmd_calibrate)


def _add_prepare(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("prepare", help="frame an event dataset once into the frame cache training reads")
    p.add_argument("dataset", help="event dataset, e.g. cifar10-dvs, ncaltech101, digits-dvs")
    p.add_argument("--root", default=None, help="folder holding the dataset's files (docs/datasets.md)")
    p.add_argument("--steps", type=int, required=True, metavar="T", help="frames per sample (data.num_steps)")
    p.add_argument("--frame-size", type=int, default=None, help="frame side (default: the dataset's, 48)")
    p.add_argument("--split", choices=("official", "tebn"), default="official", help="per-class train/test split")
    p.add_argument("--cache", default="auto", help="frame cache folder (default: $TKS_CACHE/frames)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes framing files in parallel")
    p.set_defaults(func=cmd_prepare)


def _add_export(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("export", help="export a trained model (NIR graph for neuromorphic toolchains)")
    p.add_argument("checkpoint", help="checkpoint.pt written by tks train")
    p.add_argument("--format", choices=["nir"], default="nir", help="export format")
    p.add_argument("--out", default=None, help="output file (default: model.nir beside the checkpoint)")
    p.add_argument("--dt", type=float, default=1e-4, help="time step in seconds; LIF tau becomes tau x dt")
    p.add_argument(
        "--pooling",
        choices=("sum", "avg"),
        default="sum",
        help="average pooling as NIR SumPool2d with 1/k^2 in the next weights (default: snnTorch and Norse read it) "
        "or as AvgPool2d (snnTorch only)",
    )
    _add_plugin(p)
    p.set_defaults(func=cmd_export)


def _add_compare(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("compare", help="table of methods by top-1 / top-5 / AURC, mean ± std over seeds")
    _add_run_dirs(p)
    p.add_argument("--out", default=None, metavar="DIR", help="also write compare.md and compare.csv into DIR")
    p.add_argument(
        "--paired", default=None, metavar="METHOD", help="paired differences over seeds against METHOD, e.g. TKS"
    )
    p.add_argument(
        "--anytime",
        action="store_true",
        help="also the early-exit study of each run's anytime.json (tks calibrate --study), as anytime.md",
    )
    p.add_argument(
        "--model",
        choices=("final", "selected"),
        default="final",
        help="report each run's final model (default) or its selected one (best.pt; metrics.json 'selected')",
    )
    p.set_defaults(func=cmd_compare)


def _add_plot(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("plot", help="the paper's Fig. 3, 4, 5 and training curves as PNG and PDF")
    _add_run_dirs(p)
    p.add_argument("--out", default="figures", metavar="DIR", help="output folder (default: figures)")
    p.add_argument("--trained-at-each-t", action="store_true", help=_AT_EACH_T)
    p.set_defaults(func=cmd_plot)


def _add_report(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("report", help="one self-contained HTML page: table, figures and configs")
    _add_run_dirs(p)
    p.add_argument("--out", default="report.html", metavar="FILE", help="output file (default: report.html)")
    p.add_argument("--trained-at-each-t", action="store_true", help=_AT_EACH_T)
    p.set_defaults(func=cmd_report)


def _add_sweep(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "sweep",
        help="train a grid of runs from a sweep file: here, on Ray or on SLURM (docs/sweeps.md)",
        epilog="Finished runs are skipped, interrupted ones resumed; the exit status is 1 when a run failed.",
    )
    p.add_argument("sweeps", nargs="+", metavar="SWEEP", help="sweep file (YAML): base config, grid, runs, eval")
    p.add_argument("--executor", choices=("local", "ray", "slurm"), default="local", help="where runs go (local)")
    p.add_argument(
        "--parallel", type=int, default=None, metavar="N", help="runs at once (local: cores / K; ray, slurm: all)"
    )
    p.add_argument(
        "--threads-per-run",
        type=int,
        default=None,
        metavar="K",
        help="torch threads (CPUs) per run (1; local with --parallel alone: cores / N)",
    )
    p.add_argument("--gpus-per-run", type=float, default=0, metavar="G", help="GPUs per run (fractions on Ray)")
    p.add_argument(
        "--procs-per-run",
        type=int,
        default=None,
        metavar="N",
        help="DDP processes per run, by torchrun or as SLURM tasks (default: one per GPU, else 1; on CPU: gloo)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder instead of the file's out_dir")
    p.add_argument(
        "--only", action="append", default=[], metavar="PATTERN", help="only runs whose name matches, e.g. '*-s0'"
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs and what each needs; start nothing")
    p.add_argument(
        "--measure",
        action="store_true",
        help="with --dry-run: time a few training steps of each model here and estimate the hours from them",
    )
    p.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="folder of the datasets: each run's data.root becomes DIR/<its last folder>, e.g. DIR/cifar10",
    )
    _add_plugin(p)
    group = p.add_argument_group("ray")
    group.add_argument("--address", default=None, help="address of a running Ray cluster (default: a local Ray)")
    group = p.add_argument_group("slurm (through submitit)")
    group.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    group.add_argument("--time", type=int, default=None, metavar="MINUTES", help="time limit of each job (1440)")
    group.add_argument(
        "--slurm-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another submitit parameter, e.g. slurm_mem_gb=16",
    )
    group.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="local: submitit's local executor, jobs on this machine without SLURM",
    )
    p.set_defaults(func=cmd_sweep)


def _add_models(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("models", help="list the registered models with their parameter counts")
    p.add_argument("--num-classes", type=int, default=10, help="K used to size the heads")
    p.add_argument("--in-channels", type=int, default=3, help="input channels")
    p.add_argument("--verbose", action="store_true", help="also each model's options and the LIF backends")
    _add_plugin(p)
    p.set_defaults(func=cmd_models)


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "eval": cmd_eval,
    "prepare": cmd_prepare,
    "export": cmd_export,
    "models": cmd_models,
    "compare": cmd_compare,
    "plot": cmd_plot,
    "report": cmd_report,
    "sweep": cmd_sweep,
    "calibrate": cmd_calibrate,
}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``warnings.showwarning`` for the console: ``TKSWarning`` as one line, any other warning as usual."""
    if issubclass(category, TKSWarning):
        print(f"tks: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tks`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        # Our own warnings read as one line, like errors; catch_warnings restores the hook when the command ends.
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except TKSError as exc:
        print(f"tks: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tks: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
