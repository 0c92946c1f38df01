"""The training loop: trains whatever model, loaders and criterion it is given.

It knows no model family and no dataset; ``encode`` turns a loader batch into the time-major input ``[T, B, ...]``.
Files written into the run folder: ``log.jsonl`` (one line per epoch) and ``checkpoint.pt`` (after every epoch,
atomically).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tks.checkpoint import save_checkpoint
from tks.config import OptimConfig
from tks.losses import Criterion
from tks.metrics import classification_metrics
from tks.utils import append_jsonl

Encoder = Callable[[Tensor], Tensor]
Batches = Iterable[tuple[Tensor, Tensor]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or Adam; weight decay on weight tensors (ndim > 1) only, as timm's ``create_optimizer``.

    Biases, BatchNorm parameters and other 1-D parameters get no decay.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg.name]
    return optimizer_cls(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


def lr_at(epoch: int, cfg: OptimConfig) -> float:
    """Learning rate of a 0-indexed epoch: linear warmup, then cosine, stepped per epoch (timm, reference §5.1).

    e < W: lr = warmup_lr + e (lr0 - warmup_lr) / W;  e >= W: lr = min_lr + (lr0 - min_lr)(1 + cos(pi e / E)) / 2.
    """
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr + epoch * (cfg.lr - cfg.warmup_lr) / cfg.warmup_epochs
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a precision: bfloat16 autocast for ``bf16``, nothing for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


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
    progress: bool = False,
) -> dict[str, float]:
    """One pass over the training batches.

    Returns:
        Mean loss parts (``loss`` and e.g. ``ce``, ``tks``), ``acc`` (top-1 of the time-mean logits),
        ``samples`` and ``samples_per_s``.
    """
    model.train()
    sums: dict[str, Tensor] = {}
    correct = torch.zeros((), device=device)
    seen = 0
    start = time.perf_counter()
    # disable=None: draw only on a terminal, so logs and CI output stay clean
    bar = tqdm(
        batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=None if progress else True, unit="batch"
    )
    for step, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(encode(x)).float()  # [T, B, K]; the loss is computed in fp32
        out = criterion(logits, y, epoch=epoch, epochs=epochs)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()

        with torch.no_grad():
            for name, value in {"loss": out.total, **out.parts}.items():
                sums[name] = sums.get(name, 0.0) + value.detach() * y.numel()
            correct += (logits.detach().mean(0).argmax(-1) == y).sum()
        seen += y.numel()
        if not bar.disable and step % 10 == 0:  # reading values syncs the device, so not every step
            rate = seen / (time.perf_counter() - start)
            postfix = {k: f"{v.item() / seen:.3f}" for k, v in sums.items()}
            bar.set_postfix(postfix | {"acc": f"{correct.item() / seen:.3f}", "samples/s": f"{rate:.0f}"})
    elapsed = time.perf_counter() - start
    stats = {name: value.item() / max(seen, 1) for name, value in sums.items()}
    stats.update(acc=correct.item() / max(seen, 1), samples=seen, samples_per_s=seen / elapsed)
    return stats


@torch.inference_mode()
def predict(
    model: nn.Module, batches: Batches, *, encode: Encoder, device: torch.device, precision: str = "fp32"
) -> tuple[Tensor, Tensor]:
    """Per-step logits of a whole evaluation set.

    Returns:
        ``(logits [T, N, K], targets [N])`` on the CPU, in float32.
    """
    model.eval()
    logits, targets = [], []
    for x, y in batches:
        with autocast(device, precision):
            logits.append(model(encode(x.to(device, non_blocking=True))).float().cpu())
        targets.append(y)
    if not logits:
        raise ValueError("the evaluation set is empty")
    return torch.cat(logits, dim=1), torch.cat(targets)


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
    precision: str = "fp32",
    progress: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train for ``optim_cfg.epochs`` epochs, evaluating on the test set after each.

    Every epoch appends a record to ``run_dir/log.jsonl`` and rewrites ``run_dir/checkpoint.pt`` (model, optimizer,
    completed epochs, and ``checkpoint_extra``, e.g. the config).

    Returns:
        ``classification_metrics`` of the final model on the test set, plus ``train_seconds``.
    """
    epochs = optim_cfg.epochs
    start = time.perf_counter()
    final: dict[str, Any] = {}
    for epoch in range(epochs):
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
            progress=progress,
        )
        logits, targets = predict(model, test_batches, encode=encode, device=device, precision=precision)
        final = classification_metrics(logits, targets)
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "tks_weight": criterion.tks_weight(epoch, epochs),
            "train": train,
            "test": {k: final[k] for k in ("top1", "top5", "aurc", "per_step")},
            "elapsed_s": time.perf_counter() - start,
        }
        append_jsonl(run_dir / "log.jsonl", record)
        save_checkpoint(
            run_dir / "checkpoint.pt",
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1, **checkpoint_extra},
        )
        if on_epoch_end is not None:
            on_epoch_end(record)
    return {**final, "train_seconds": time.perf_counter() - start}
