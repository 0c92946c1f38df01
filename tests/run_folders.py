"""Run folders for the tests of compare, plots and report: hand-written ones with chosen numbers, and real ones."""

import json
from pathlib import Path

import numpy as np

from tks.config import dump_config, load_config
from tks.config.identity import identity_settings
from tks.eval_options import EvalOptions
from tks.evaluation import evaluate_checkpoint
from tks.experiment import train


def fake_run(
    root: Path,
    name: str,
    *,
    loss: str = "ce",
    seed: int = 0,
    steps: int = 2,
    overrides: tuple[str, ...] = (),
    metrics: dict | None = None,
    log: list[dict] | None = None,
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write a run folder as ``tks train`` would, with the given numbers (defaults fill what is not given)."""
    run = root / name
    run.mkdir(parents=True)
    cfg = load_config(None, [f"loss.name={loss}", f"run.seed={seed}", f"data.num_steps={steps}", *overrides])
    (run / "config.yaml").write_text(dump_config(cfg))
    full = {"top1": 0.9, "top5": 1.0, "aurc": 0.01, "e_aurc": 0.005, "ece": 0.02, "per_step": [0.9] * steps}
    full.update(num_steps=steps, best_top1=0.9, best_epoch=2, experiment=identity_settings(cfg))
    full.update(metrics or {})
    if "eval" in full:  # given as what tks eval measured on the final model: its entry for checkpoint.pt
        full["eval"] = {"checkpoint.pt": full["eval"]}
    (run / "metrics.json").write_text(json.dumps(full))
    log = log or [{"epoch": e, "train": {"loss": 2.0 / e}, "test": {"top1": 0.4 * e}} for e in (1, 2)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    if features is not None:
        np.savez_compressed(run / "features.npz", features=features[0], labels=features[1])
    return run


def clustered_features(num_classes: int = 3, per_class: int = 20, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[N, dim]`` in well-separated clusters, one per class, and their labels ``[N]``."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(num_classes), per_class)
    centres = 10.0 * rng.normal(size=(num_classes, dim))
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def make_digits_runs(root: Path) -> list[Path]:
    """Two short real digits runs in ``root``, mean CE and TKS (seed 0, T=2, 2 epochs), each evaluated at
    T = 1, 2, 3 with features saved: what the issue's "done when" asks the commands to work from."""
    runs = []
    for loss in ("ce", "tks"):
        overrides = ["optim.epochs=2", "data.num_steps=2", "run.progress=false", "run.device=cpu"]
        cfg = load_config(None, [*overrides, f"loss.name={loss}", f"run.name={loss}", f"run.out_dir={root}"])
        run_dir = train(cfg).run_dir
        evaluate_checkpoint(run_dir / "checkpoint.pt", EvalOptions(steps=(1, 2, 3), device="cpu", features=True))
        runs.append(run_dir)
    return runs
