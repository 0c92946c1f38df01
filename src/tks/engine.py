"""The training loop: trains whatever model, loaders and criterion it is given.

It knows no model family and no dataset; ``encode`` turns a loader batch into the time-major input ``[T, B, ...]``.
Files written into the run folder (by the main process only): ``log.jsonl`` (one line per epoch), ``checkpoint.pt``
(after every epoch, atomically) and ``best.pt`` (the epoch with the best top-1 on the selecting set: a validation
split, or the test set as the official code does). A checkpoint holds everything needed to continue exactly:
weights, optimizer, gradient scaler, completed epochs, best score, the selected epoch's test metrics and the
random-number-generator states.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tks.checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint
from tks.config import OptimConfig
from tks.distributed import Dist, all_gather_objects, all_reduce_sum
from tks.errors import TKSError
from tks.losses import Criterion
from tks.metrics import classification_metrics
from tks.runfiles import append_jsonl

Encoder = Callable[[Tensor], Tensor]
Batches = Iterable[tuple[Tensor, Tensor]]
SINGLE = Dist.single()


class NonFiniteLossError(TKSError):
    """The loss became NaN or infinite; training stopped before the weights were updated with it."""


@dataclass
class FitState:
    """Progress that a checkpoint carries from one process to the next."""

    epoch: int = 0
    """Completed epochs."""
    best_top1: float = -1.0
    """Best top-1 so far on the set that selects (``fit``'s ``select_on``)."""
    best_epoch: int = 0
    """The (1-based) epoch that reached it."""
    selected: dict[str, Any] | None = None
    """``classification_metrics`` of that epoch's model on the test set (None before the first epoch, or when
    resumed from a checkpoint that did not record them)."""
    train_seconds: float = 0.0
    """Wall time of the training sessions before this one (a resumed run counts all of them)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or Adam; weight decay on weight tensors (ndim > 1) only, as timm's ``create_optimizer``.

    Biases, BatchNorm parameters and other 1-D parameters get no decay. The fused implementation is used where
    PyTorch has one for the parameters' device: one kernel per step, and it can skip an update on the device
    (``NonFiniteGuard``), so that guarding against a non-finite loss costs no host-device synchronisation.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg.name]
    try:
        return optimizer_cls(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except RuntimeError:  # a device or dtype without a fused kernel: the default implementation
        return optimizer_cls(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


class NonFiniteGuard:
    """Keeps a non-finite loss from updating the weights without reading the loss on the host every step.

    Every loss is checked on the device: a non-finite one sets a flag and records its step and value. A fused
    optimizer reads the flag as ``found_inf`` (the mechanism ``GradScaler`` uses) and skips that update inside its
    kernel; under DistributedDataParallel the flag also covers non-finite averaged gradients, which every process
    sees alike, so all processes skip together. The host reads the flag only every ``check_every`` steps and at the
    end of the epoch (``check``), and then stops the run with the epoch and step of the first non-finite loss;
    under DDP that read is one all-reduce, not one per step. An optimizer without ``found_inf`` support (not fused)
    falls back to reading every loss at once, before its backward pass.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, dist: Dist, check_every: int = 50):
        self.optimizer, self.dist, self.check_every = optimizer, dist, check_every
        self.on_device = bool(optimizer.defaults.get("fused"))
        self.pending = torch.zeros((), dtype=torch.bool, device=device)  # a bad loss since the last update
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)  # first bad step of the epoch
        self.first_value = torch.zeros((), device=device)

    def observe(self, loss: Tensor, epoch: int, step: int) -> None:
        """Record whether ``loss`` is finite (called before its backward pass)."""
        bad = ~torch.isfinite(loss.detach())
        if not self.on_device:
            if bad.item():
                self._raise(loss.item(), epoch, step)
            return
        first = bad & (self.first_step < 0)
        self.first_step = torch.where(first, step, self.first_step)
        self.first_value = torch.where(first, loss.detach().float(), self.first_value)
        self.pending = self.pending | bad

    def before_step(self, params: list[Tensor]) -> None:
        """Hand the flag to the optimizer as ``found_inf`` for the update about to run."""
        if not self.on_device:
            return
        skip = self.pending
        if self.dist.enabled:  # gradients are averaged over the processes: a bad one anywhere reaches every one
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False) if grads else skip.float()
            skip = skip | ~torch.isfinite(norm)
        self.optimizer.grad_scale, self.optimizer.found_inf = None, skip.float()

    def after_step(self) -> None:
        """Clear the flag the optimizer used, so that no later update is skipped by it."""
        if self.on_device:
            self.optimizer.found_inf = None
            self.pending = torch.zeros_like(self.pending)

    def check(self, epoch: int, step: int, *, force: bool = False) -> None:
        """Every ``check_every`` steps (and when ``force``), read the flag and stop on a non-finite loss."""
        if not self.on_device or not (force or (step + 1) % self.check_every == 0):
            return
        first = self.first_step.clone()
        if self.dist.enabled:  # every process must stop together, or the others wait forever in a collective
            first = torch.where(first < 0, torch.iinfo(torch.long).max, first)
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
            first = torch.where(first == torch.iinfo(torch.long).max, -1, first)
        if first.item() >= 0:
            value = self.first_value.item() if self.first_step.item() == first.item() else float("nan")
            self._raise(value, epoch, int(first.item()))

    @staticmethod
    def _raise(value: float, epoch: int, step: int) -> None:
        raise NonFiniteLossError(
            f"the loss became {value} at epoch {epoch + 1}, step {step + 1}; training stopped before the "
            "weights were updated, and the checkpoint of the last completed epoch is kept"
        )


def lr_at(epoch: int, cfg: OptimConfig) -> float:
    """Learning rate of a 0-indexed epoch: linear warmup, then cosine, stepped per epoch (docs/reference.md §5.1).

    e < W: lr = warmup_lr + e (lr0 - warmup_lr) / W;  e >= W: lr = min_lr + (lr0 - min_lr)(1 + cos(pi e / E)) / 2.
    """
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr + epoch * (cfg.lr - cfg.warmup_lr) / cfg.warmup_epochs
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a precision: ``fp32`` none, ``bf16`` bfloat16, ``fp16`` float16 (CUDA only)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": version, "state": list(python_state), "gauss": python_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    *,
    encode: Encoder,
    epoch: int,
    epochs: int,
    device: torch.device,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    accumulate: int = 1,
    dist: Dist = SINGLE,
    progress: bool = False,
) -> dict[str, float]:
    """One pass over the training batches.

    The optimizer steps every ``accumulate`` batches (and after the last), on gradients averaged over them; under
    DistributedDataParallel the gradients are synchronised only on those steps.

    Raises:
        NonFiniteLossError: when a loss is NaN or infinite (before any weight sees it).

    Returns:
        Mean loss parts (``loss`` and e.g. ``ce``, ``tks``), ``acc`` (top-1 of the time-mean logits), ``samples``
        and ``samples_per_s``, summed over all processes.
    """
    model.train()
    sums: dict[str, Tensor] = {}
    correct = torch.zeros((), device=device)
    seen = 0
    start = time.perf_counter()
    total = len(batches) if hasattr(batches, "__len__") else None
    # disable=None: draw only on a terminal, so logs and CI output stay clean
    show = progress and dist.is_main
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=None if show else True, unit="batch")
    guard = NonFiniteGuard(optimizer, device, dist)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    step = -1
    for step, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        update = (step + 1) % accumulate == 0 or (total is not None and step + 1 == total)
        sync = contextlib.nullcontext() if update or not dist.enabled else model.no_sync()
        with sync:
            with autocast(device, precision):
                logits = model(encode(x)).float()  # [T, B, K]; the loss is computed in fp32
            out = criterion(logits, y, epoch=epoch, epochs=epochs)
            guard.observe(out.total, epoch, step)
            loss = out.total / accumulate
            (scaler.scale(loss) if scaler is not None else loss).backward()
        if update:
            if scaler is not None:  # a non-finite loss gives non-finite gradients, and the scaler skips that step
                scaler.step(optimizer)
                scaler.update()
            else:
                guard.before_step(params)
                optimizer.step()
                guard.after_step()
            optimizer.zero_grad(set_to_none=True)
        guard.check(epoch, step)

        with torch.no_grad():
            for name, value in {"loss": out.total, **out.parts}.items():
                sums[name] = sums.get(name, 0.0) + value.detach() * y.numel()
            correct += (logits.detach().mean(0).argmax(-1) == y).sum()
        seen += y.numel()
        if not bar.disable and step % 10 == 0:  # reading values syncs the device, so not every step
            rate = seen / (time.perf_counter() - start)
            postfix = {k: f"{v.item() / seen:.3f}" for k, v in sums.items()}
            bar.set_postfix(postfix | {"acc": f"{correct.item() / seen:.3f}", "samples/s": f"{rate:.0f}"})
    guard.check(epoch, step, force=True)  # before anything of this epoch is measured or saved
    elapsed = time.perf_counter() - start
    totals = all_reduce_sum({**sums, "correct": correct, "seen": torch.tensor(float(seen), device=device)}, dist)
    seen_all = max(totals.pop("seen").item(), 1.0)
    stats = {name: value.item() / seen_all for name, value in totals.items() if name != "correct"}
    stats.update(acc=totals["correct"].item() / seen_all, samples=int(seen_all), samples_per_s=seen_all / elapsed)
    return stats


@torch.inference_mode()
def predict(
    model: nn.Module,
    batches: Batches,
    *,
    encode: Encoder,
    device: torch.device,
    precision: str = "fp32",
    dist: Dist = SINGLE,
) -> tuple[Tensor, Tensor]:
    """Per-step logits of a whole evaluation set (each process's share, gathered from all processes).

    Returns:
        ``(logits [T, N, K], targets [N])`` on the CPU, in float32.
    """
    model.eval()
    logits, targets = [], []
    for x, y in batches:
        with autocast(device, precision):
            logits.append(model(encode(x.to(device, non_blocking=True))).float().cpu())
        targets.append(y.cpu())
    parts = all_gather_objects((logits, targets), dist)
    logits = [chunk for part_logits, _ in parts for chunk in part_logits]
    targets = [chunk for _, part_targets in parts for chunk in part_targets]
    if not logits:
        raise ValueError("the evaluation set is empty")
    return torch.cat(logits, dim=1), torch.cat(targets)


SUMMARY_KEYS = ("top1", "top5", "aurc", "per_step")
"""The metrics of an evaluation that ``log.jsonl`` records every epoch."""


def fit(
    model: nn.Module,
    train_batches: Batches,
    test_batches: Batches,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    optim_cfg: OptimConfig,
    *,
    encode: Encoder,
    device: torch.device,
    run_dir: Path,
    checkpoint_extra: dict[str, Any],
    val_batches: Batches | None = None,
    train_eval_batches: Batches | None = None,
    select_on: Literal["val", "test"] = "test",
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    accumulate: int = 1,
    state: FitState | None = None,
    dist: Dist = SINGLE,
    progress: bool = False,
    tensorboard: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train from ``state.epoch`` to ``optim_cfg.epochs``, evaluating after each epoch.

    After every epoch the model is evaluated on the validation batches (when given), the test batches and the
    train-eval batches (when given: training images without augmentation). The main process appends a record to
    ``run_dir/log.jsonl``, rewrites ``run_dir/checkpoint.pt`` (plus ``checkpoint_extra``, e.g. the config) and
    copies it to ``best.pt`` when the top-1 on the ``select_on`` set (``val``, which needs ``val_batches``, or
    ``test``) improved; the test set then only reports, unless it is the one that selects. Samplers with
    ``set_epoch`` (DistributedSampler) get the epoch, so the data order depends only on the epoch.

    Returns:
        ``classification_metrics`` of the final model on the test set, plus ``best_top1`` (on the ``select_on``
        set), ``best_epoch``, ``selected_on``, ``selected`` (the best epoch's test metrics, with ``epoch`` and
        ``selected_on``), ``val`` and ``train_eval`` (the final model's metrics there, when evaluated), ``epoch``
        (completed) and ``train_seconds`` (of every session, ``state.train_seconds`` included).
    """
    if select_on not in ("val", "test"):
        raise ValueError(f"select_on must be 'val' or 'test', got {select_on!r}")
    if select_on == "val" and val_batches is None:
        raise ValueError("select_on='val' needs val_batches")
    state = state or FitState()
    epochs = optim_cfg.epochs
    start = time.perf_counter()
    cpu_start = time.process_time()  # CPU time of this process: the cost of a run on a shared machine
    final: dict[str, Any] = {}
    val: dict[str, Any] | None = None
    train_eval: dict[str, Any] | None = None

    def measure(batches: Batches | None) -> dict[str, Any] | None:
        if batches is None:
            return None
        logits, targets = predict(model, batches, encode=encode, device=device, precision=precision, dist=dist)
        return classification_metrics(logits, targets)

    writer = _tensorboard_writer(run_dir) if tensorboard and dist.is_main else None
    sampler = getattr(train_batches, "sampler", None)
    for epoch in range(state.epoch, epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        lr = lr_at(epoch, optim_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train = train_one_epoch(
            model,
            train_batches,
            criterion,
            optimizer,
            encode=encode,
            epoch=epoch,
            epochs=epochs,
            device=device,
            precision=precision,
            scaler=scaler,
            accumulate=accumulate,
            dist=dist,
            progress=progress,
        )
        val = measure(val_batches)
        final = measure(test_batches)
        train_eval = measure(train_eval_batches)
        score = (val if select_on == "val" else final)["top1"]
        improved = score > state.best_top1
        if improved:
            state.best_top1, state.best_epoch, state.selected = score, epoch + 1, final
        state.epoch = epoch + 1
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "tks_weight": criterion.tks_weight(epoch, epochs),
            "train": train,
            **({"val": _summary(val)} if val is not None else {}),
            "test": _summary(final),
            **({"train_eval": _summary(train_eval)} if train_eval is not None else {}),
            "elapsed_s": time.perf_counter() - start,
            "process_cpu_s": time.process_time() - cpu_start,
        }
        if dist.is_main:
            payload = {
                "model": unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": state.epoch,
                "best_top1": state.best_top1,
                "best_epoch": state.best_epoch,
                "selected": state.selected,
                "train_seconds": state.train_seconds + time.perf_counter() - start,
                "rng": rng_state(),
                "log": record,  # this epoch's line of log.jsonl: a resume restores it if the append below is lost
                **checkpoint_extra,
            }
            # Checkpoint first, log line after: a crash in between leaves a log one line short, which the
            # resume mends from the checkpoint, never a log ahead of the checkpoint (an epoch logged twice).
            save_checkpoint(run_dir / "checkpoint.pt", payload)
            if improved:
                copy_checkpoint(run_dir / "checkpoint.pt", run_dir / "best.pt")
            append_jsonl(run_dir / "log.jsonl", record)
            if writer is not None:
                _write_scalars(writer, record)
            if on_epoch_end is not None:
                on_epoch_end(record)
    if writer is not None:
        writer.close()
    if not final:  # resumed after the last epoch: nothing to train, report the model as it is
        val, final, train_eval = measure(val_batches), measure(test_batches), measure(train_eval_batches)
    if state.best_epoch == state.epoch and state.selected is None:
        state.selected = final
    if state.selected is None:  # resumed from a checkpoint written before the selected metrics were recorded
        state.selected = _evaluate_saved(model, run_dir / "best.pt", measure, test_batches)
    metrics = {
        **final,
        "epoch": state.epoch,
        "best_top1": state.best_top1,
        "best_epoch": state.best_epoch,
        "selected_on": select_on,
        "selected": {"epoch": state.best_epoch, "selected_on": select_on, **state.selected},
    }
    if val is not None:
        metrics["val"] = val
    if train_eval is not None:
        metrics["train_eval"] = train_eval
    metrics["train_seconds"] = state.train_seconds + time.perf_counter() - start
    return metrics


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in SUMMARY_KEYS}


def _evaluate_saved(
    model: nn.Module,
    path: Path,
    measure: Callable[[Batches | None], dict[str, Any] | None],
    batches: Batches,
) -> dict[str, Any]:
    """The test metrics of the weights saved in ``path``; the model's own weights are put back afterwards."""
    inner = unwrap(model)
    current = {k: v.detach().clone() for k, v in inner.state_dict().items()}
    inner.load_state_dict(load_checkpoint(path)["model"])
    try:
        return measure(batches)
    finally:
        inner.load_state_dict(current)


def _tensorboard_writer(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # tensorboard is an optional package
        raise TKSError(f"run.tensorboard needs the tensorboard package (pip install tensorboard): {exc}") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _write_scalars(writer: Any, record: dict[str, Any]) -> None:
    epoch = record["epoch"]
    writer.add_scalar("lr", record["lr"], epoch)
    writer.add_scalar("tks_weight", record["tks_weight"], epoch)
    for key, value in record["train"].items():
        writer.add_scalar(f"train/{key}", value, epoch)
    for split in ("val", "test", "train_eval"):
        for key in ("top1", "top5", "aurc"):
            if split in record:
                writer.add_scalar(f"{split}/{key}", record[split][key], epoch)
