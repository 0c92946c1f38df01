"""The training loop: trains whatever model, loaders and criterion it is given, for the epochs of a schedule.

It knows no model family and no dataset, and writes no file: ``encode`` turns a loader batch into the time-major
input ``[T, B, ...]``, and the work at the end of each epoch (checkpoint, log line, TensorBoard, a caller's function:
``tks.hooks``) is a list of hooks that ``fit`` calls on the main process with an ``EpochEnd``. After every epoch
the model is measured on the evaluation sets (``EvalSets``) and the best epoch so far chosen on the selecting one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tks.checkpoint import load_checkpoint
from tks.config import OptimConfig
from tks.distributed import Dist, all_gather_objects, all_reduce_sum
from tks.errors import TKSError
from tks.inference import SINGLE, Batches, Encoder, autocast, predict
from tks.losses import Criterion
from tks.metrics import classification_metrics
from tks.seeding import rng_state
from tks.snn.stateful import is_stale_graph_error, stateful_model_error


class NonFiniteLossError(TKSError):
    """The loss became NaN or infinite; training stopped before the weights were updated with it."""


@dataclass
class FitState:
    """Progress that a checkpoint carries from one process to the next."""

    epoch: int = 0
    """Completed epochs."""
    best_top1: float = -1.0
    """Best top-1 so far on the selecting set (``EvalSets.select_on``)."""
    best_epoch: int = 0
    """The (1-based) epoch that reached it."""
    selected: dict[str, Any] | None = None
    """``classification_metrics`` of that epoch's model on the test set (None before the first epoch, or when
    resumed from a checkpoint that did not record them)."""
    train_seconds: float = 0.0
    """Wall time of the training sessions before this one (a resumed run counts all of them)."""


@dataclass(frozen=True)
class Training:
    """What the loop trains and how: the model, its loss and optimizer, the schedule, and how a batch runs."""

    model: nn.Module
    """The model to train, possibly wrapped (DistributedDataParallel, ``torch.compile``)."""
    criterion: Criterion
    optimizer: torch.optim.Optimizer
    schedule: OptimConfig
    """Epochs, learning-rate schedule (``lr_at``) and gradient accumulation."""
    encode: Encoder
    """Loader batch -> time-major input ``[T, B, ...]``."""
    device: torch.device
    precision: str = "fp32"
    """``fp32``, ``bf16`` or ``fp16`` (autocast; the loss is computed in fp32)."""
    scaler: torch.amp.GradScaler | None = None
    """The gradient scaler of ``fp16``."""
    dist: Dist = SINGLE
    progress: bool = False
    """Draw a progress bar on a terminal (main process only)."""


@dataclass(frozen=True)
class EvalSets:
    """The sets measured after every epoch, and the one whose top-1 chooses the best epoch."""

    test: Batches
    val: Batches | None = None
    """A validation split (test transform), when there is one."""
    train_eval: Batches | None = None
    """Training images without augmentation: the clean training accuracy."""
    select_on: Literal["val", "test"] = "test"
    """``val`` (needs ``val``) or ``test``, as the official code does; the test set otherwise only reports."""
    best_checkpoint: Path | None = None
    """Where the best epoch's weights are saved (``best.pt``): their test metrics are measured from it at the end
    when the state of a resumed run lacks them (checkpoints written before they were recorded)."""

    def __post_init__(self) -> None:
        if self.select_on not in ("val", "test"):
            raise ValueError(f"select_on must be 'val' or 'test', got {self.select_on!r}")
        if self.select_on == "val" and self.val is None:
            raise ValueError("select_on='val' needs a validation set")


@dataclass(frozen=True)
class EpochEnd:
    """What an epoch-end hook sees: the epoch's log record and the loop's state after it."""

    record: dict[str, Any]
    """The epoch's line of ``log.jsonl``: ``epoch`` (1-based), ``lr``, ``tks_weight``, ``train``, the evaluated
    sets' summaries, ``elapsed_s`` and ``process_cpu_s``."""
    state: FitState
    """Progress after this epoch (hooks read it, never change it)."""
    improved: bool
    """This epoch is the best so far on the selecting set."""
    training: Training
    train_seconds: float
    """Wall time of every session up to now."""
    rng: list[dict[str, Any]]
    """Every process's random-generator states after the epoch, in rank order (``tks.seeding.rng_state``)."""


EpochHook = Callable[[EpochEnd], None]
"""Work done at the end of every epoch on the main process, in list order (``tks.hooks``)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


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


def train_one_epoch(training: Training, batches: Batches, epoch: int) -> dict[str, float]:
    """One pass over the training batches: the 0-indexed ``epoch`` of ``training.schedule.epochs``.

    The optimizer steps every ``training.schedule.accumulate`` batches (and after the last), on gradients averaged
    over them; under DistributedDataParallel the gradients are synchronised only on those steps.

    Raises:
        NonFiniteLossError: when a loss is NaN or infinite (before any weight sees it).

    Returns:
        Mean loss parts (``loss`` and e.g. ``ce``, ``tks``), ``acc`` (top-1 of the time-mean logits), ``samples``
        and ``samples_per_s``, summed over all processes.
    """
    model, criterion, optimizer, encode = training.model, training.criterion, training.optimizer, training.encode
    device, precision, scaler, dist = training.device, training.precision, training.scaler, training.dist
    epochs, accumulate = training.schedule.epochs, training.schedule.accumulate
    model.train()
    sums: dict[str, Tensor] = {}
    correct = torch.zeros((), device=device)
    seen = 0
    start = time.perf_counter()
    total = len(batches) if hasattr(batches, "__len__") else None
    # disable=None: draw only on a terminal, so logs and CI output stay clean
    show = training.progress and dist.is_main
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
            try:
                (scaler.scale(loss) if scaler is not None else loss).backward()
            except RuntimeError as exc:
                if is_stale_graph_error(exc):
                    raise stateful_model_error() from None
                raise
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


SUMMARY_KEYS = ("top1", "top5", "aurc", "per_step")
"""The metrics of an evaluation that ``log.jsonl`` records every epoch."""


def fit(
    training: Training,
    train_batches: Batches,
    evaluated: EvalSets,
    *,
    state: FitState | None = None,
    hooks: Sequence[EpochHook] = (),
) -> dict[str, Any]:
    """Train from ``state.epoch`` to ``training.schedule.epochs``, evaluating after each epoch.

    After every epoch the model is measured on the validation set (when given), the test set and the train-eval set
    (when given); the best epoch is the one with the highest top-1 on the ``select_on`` set. The main process then
    calls ``hooks`` in order (``tks.hooks``: checkpoint, log line, TensorBoard, ...). Samplers with ``set_epoch``
    (DistributedSampler) get the epoch, so the data order depends only on the epoch.

    Returns:
        ``classification_metrics`` of the final model on the test set, plus ``best_top1`` (on the ``select_on``
        set), ``best_epoch``, ``selected_on``, ``selected`` (the best epoch's test metrics, with ``epoch`` and
        ``selected_on``), ``val`` and ``train_eval`` (the final model's metrics there, when evaluated), ``epoch``
        (completed) and ``train_seconds`` (of every session, ``state.train_seconds`` included).
    """
    state = state or FitState()
    epochs = training.schedule.epochs
    start = time.perf_counter()
    cpu_start = time.process_time()  # CPU time of this process: the cost of a run on a shared machine
    final: dict[str, Any] = {}
    val: dict[str, Any] | None = None
    train_eval: dict[str, Any] | None = None
    sampler = getattr(train_batches, "sampler", None)
    for epoch in range(state.epoch, epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        lr = lr_at(epoch, training.schedule)
        for group in training.optimizer.param_groups:
            group["lr"] = lr
        train = train_one_epoch(training, train_batches, epoch)
        val, final, train_eval = _measure(training, evaluated)
        score = (val if evaluated.select_on == "val" else final)["top1"]
        improved = score > state.best_top1
        if improved:
            state.best_top1, state.best_epoch, state.selected = score, epoch + 1, final
        state.epoch = epoch + 1
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "tks_weight": training.criterion.tks_weight(epoch, epochs),
            "train": train,
            **({"val": _summary(val)} if val is not None else {}),
            "test": _summary(final),
            **({"train_eval": _summary(train_eval)} if train_eval is not None else {}),
            "elapsed_s": time.perf_counter() - start,
            "process_cpu_s": time.process_time() - cpu_start,
        }
        rng = all_gather_objects(rng_state(), training.dist)  # by every rank: a resume gives each its own back
        if training.dist.is_main:
            end = EpochEnd(record, state, improved, training, state.train_seconds + time.perf_counter() - start, rng)
            for hook in hooks:
                hook(end)
    if not final:  # resumed after the last epoch: nothing to train, report the model as it is
        val, final, train_eval = _measure(training, evaluated)
    if state.best_epoch == state.epoch and state.selected is None:
        state.selected = final
    if state.selected is None:  # resumed from a checkpoint written before the selected metrics were recorded
        state.selected = _measure_saved(training, evaluated)
    metrics = {
        **final,
        "epoch": state.epoch,
        "best_top1": state.best_top1,
        "best_epoch": state.best_epoch,
        "selected_on": evaluated.select_on,
        "selected": {"epoch": state.best_epoch, "selected_on": evaluated.select_on, **state.selected},
    }
    if val is not None:
        metrics["val"] = val
    if train_eval is not None:
        metrics["train_eval"] = train_eval
    metrics["train_seconds"] = state.train_seconds + time.perf_counter() - start
    return metrics


def _metrics_on(training: Training, batches: Batches | None) -> dict[str, Any] | None:
    if batches is None:
        return None
    t = training
    logits, targets = predict(t.model, batches, encode=t.encode, device=t.device, precision=t.precision, dist=t.dist)
    return classification_metrics(logits, targets)


def _measure(training: Training, evaluated: EvalSets) -> tuple[dict[str, Any] | None, dict[str, Any], dict | None]:
    """The current model's metrics on the validation, test and train-eval sets (in that order: the data order)."""
    val = _metrics_on(training, evaluated.val)
    test = _metrics_on(training, evaluated.test)
    return val, test, _metrics_on(training, evaluated.train_eval)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in SUMMARY_KEYS}


def _measure_saved(training: Training, evaluated: EvalSets) -> dict[str, Any]:
    """The test metrics of the weights in ``best_checkpoint``; the model's own weights are put back afterwards."""
    if evaluated.best_checkpoint is None:
        raise ValueError("the selected epoch's metrics are unknown and no best_checkpoint holds its weights")
    inner = unwrap(training.model)
    current = {k: v.detach().clone() for k, v in inner.state_dict().items()}
    inner.load_state_dict(load_checkpoint(evaluated.best_checkpoint).model)
    try:
        return _metrics_on(training, evaluated.test)
    finally:
        inner.load_state_dict(current)
