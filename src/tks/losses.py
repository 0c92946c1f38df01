"""Losses on per-step logits: mean CE, label smoothing, TET and Temporal Knowledge Sharing.

Every loss is a pure function of ``logits [T, B, K]`` (the output of step t is ``logits[t]``) and integer
``target [B]``; T is reduced only here and in ``tks.metrics``. ``Criterion`` combines a base loss with the TKS term
under a weight schedule and is what the training loop calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tks.config import LossConfig
from tks.errors import check_per_step

Teacher = Literal["sum", "mean"]
Student = Literal["per_step", "mean"]
TeacherTarget = Literal["softmax", "logits"]


def mean_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of the time-averaged logits, the paper's baseline (Eq. 3-4).

    L = CE(O, y) with O = (1/T) sum_t O_t, averaged over the batch.

    Args:
        logits: ``[T, B, K]``.
        target: ``[B]`` class indices.
    """
    check_per_step(logits, target)
    return F.cross_entropy(logits.mean(0), target)


def label_smoothing_ce(logits: Tensor, target: Tensor, *, smoothing: float = 0.1) -> Tensor:
    """Label-smoothed cross-entropy of the time-averaged logits (the "LS" baseline).

    L = (1 - eps) * NLL(p, y) + eps * mean_k(-log p_k), p = softmax(O); identical to timm's
    ``LabelSmoothingCrossEntropy`` used by the official code and to ``F.cross_entropy(label_smoothing=eps)``.

    Args:
        logits: ``[T, B, K]``.
        target: ``[B]`` class indices.
        smoothing: eps in [0, 1).
    """
    check_per_step(logits, target)
    return F.cross_entropy(logits.mean(0), target, label_smoothing=smoothing)


def tet_loss(logits: Tensor, target: Tensor, *, lamb: float = 1e-3, phi: float = 1.0) -> Tensor:
    """Temporal Efficient Training loss (Deng et al. 2022), as in the official TET code.

    L = (1 - lambda) * (1/T) sum_t CE(O_t, y) + lambda * MSE(O_t, phi), the MSE taken over every element of the
    per-step output against the constant phi.

    Args:
        logits: ``[T, B, K]``.
        target: ``[B]`` class indices.
        lamb: weight lambda of the MSE regulariser (official 1e-3; 0 gives SpikingJelly's and BrainCog's TET).
        phi: the constant the outputs are pulled towards (official 1.0).
    """
    check_per_step(logits, target)
    steps = logits.shape[0]
    per_step_ce = F.cross_entropy(logits.flatten(0, 1), target.repeat(steps))  # mean over T and B
    mse = (logits - phi).square().mean()
    return (1.0 - lamb) * per_step_ce + lamb * mse


def tks_loss(
    logits: Tensor,
    target: Tensor,
    *,
    temperature: float = 1.0,
    teacher: Teacher = "sum",
    detach_teacher: bool = False,
    teacher_target: TeacherTarget = "softmax",
    student: Student = "per_step",
    student_temperature: float = 1.0,
) -> Tensor:
    """Temporal Knowledge Sharing term (Dong, Zhao, Zeng 2023, arXiv:2304.06540), without its weight alpha.

    A step t is correct for sample b when argmax_k O_{t,b,k} = y_b. The teacher aggregates the logits of the
    correct steps, Z_b = sum_t m_{b,t} O_{t,b} (``teacher="sum"``) or that sum / m_b (``"mean"``, paper Eq. 5),
    and becomes the target P_b = softmax(Z_b / tau); a sample with no correct step gets the uniform target 1/K.
    With ``student="per_step"`` every step is trained towards it,

        L = tau^2 * (1/T) sum_t (1/B) sum_b sum_k -P_{b,k} log softmax(O_{t,b} / tau_s)_k,

    and with ``student="mean"`` the single student is the time-averaged output O (paper Eq. 7).

    The defaults reproduce the official code exactly (reference-spec §3): sum teacher, not detached, per-step
    students without temperature. The paper's Eq. 5-7 reading is ``teacher="mean", student="mean",
    student_temperature=temperature``; ``teacher_target="logits"`` takes Eq. 6 literally (Z itself as the target
    weights, 1/K where no step is correct), which is not a distribution and is offered only for that comparison.

    Args:
        logits: ``[T, B, K]`` per-step outputs.
        target: ``[B]`` class indices (hard labels: the correct-step mask needs them).
        temperature: tau of the teacher softmax, and the tau^2 factor (paper Eq. 8).
        teacher: ``"sum"`` (official) or ``"mean"`` (paper Eq. 5) over the correct steps.
        detach_teacher: stop gradients into the teacher logits (official: False, they flow).
        teacher_target: ``"softmax"`` (official, P = softmax(Z / tau)) or ``"logits"`` (Eq. 6 literally).
        student: ``"per_step"`` (official) or ``"mean"`` (paper Eq. 7).
        student_temperature: tau_s dividing the student logits (official 1.0).

    Returns:
        Scalar loss.
    """
    check_per_step(logits, target)
    if not temperature > 0 or not student_temperature > 0:
        raise ValueError(f"temperatures must be > 0, got {temperature} and {student_temperature}")
    num_classes = logits.shape[-1]
    correct = logits.argmax(-1) == target  # [T, B]
    z = (logits * correct.unsqueeze(-1).to(logits.dtype)).sum(0)  # [B, K]; zeros where no step is correct
    num_correct = correct.sum(0)  # [B]
    if teacher == "mean":
        z = z / num_correct.clamp_min(1).unsqueeze(-1).to(z.dtype)
    elif teacher != "sum":
        raise ValueError(f"teacher must be 'sum' or 'mean', got {teacher!r}")
    if detach_teacher:
        z = z.detach()
    if teacher_target == "softmax":
        p_teacher = torch.softmax(z / temperature, dim=-1)  # softmax(0) is already uniform
    elif teacher_target == "logits":
        p_teacher = torch.where((num_correct > 0).unsqueeze(-1), z, torch.full_like(z, 1.0 / num_classes))
    else:
        raise ValueError(f"teacher_target must be 'softmax' or 'logits', got {teacher_target!r}")
    if student == "per_step":
        log_q = torch.log_softmax(logits / student_temperature, dim=-1)  # [T, B, K]
    elif student == "mean":
        log_q = torch.log_softmax(logits.mean(0) / student_temperature, dim=-1).unsqueeze(0)  # [1, B, K]
    else:
        raise ValueError(f"student must be 'per_step' or 'mean', got {student!r}")
    soft_ce = -(p_teacher * log_q).sum(-1)  # [T, B]: summed over classes
    return temperature**2 * soft_ce.mean()  # mean over B then T (equal-sized groups, so one mean)


def linear_ramp(epoch: int, epochs: int, alpha: float) -> float:
    """Official TKS weight schedule: a = alpha * epoch / epochs for 0-indexed epochs.

    Epoch 0 is pure base loss; the last epoch gets alpha * (epochs - 1) / epochs (reference-spec §3.5).
    """
    return alpha * epoch / epochs


def constant(epoch: int, epochs: int, alpha: float) -> float:
    """Constant weight a = alpha at every epoch.

    Note that the official ``--staticalpha`` flag inverts the meaning (its alpha is the CE weight); here alpha is
    always the weight of the TKS term.
    """
    return alpha


SCHEDULES = {"linear": linear_ramp, "constant": constant}


class MeanCELoss(nn.Module):
    """Module form of ``mean_ce``: ``loss_fn(logits [T, B, K], target [B])``."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """See ``mean_ce``."""
        return mean_ce(logits, target)


class LabelSmoothingLoss(nn.Module):
    """Module form of ``label_smoothing_ce`` with a fixed epsilon."""

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """See ``label_smoothing_ce``."""
        return label_smoothing_ce(logits, target, smoothing=self.smoothing)


class TETLoss(nn.Module):
    """Module form of ``tet_loss``."""

    def __init__(self, lamb: float = 1e-3, phi: float = 1.0) -> None:
        super().__init__()
        self.lamb, self.phi = lamb, phi

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """See ``tet_loss``."""
        return tet_loss(logits, target, lamb=self.lamb, phi=self.phi)


class TKSLoss(nn.Module):
    """The whole TKS objective for any model that returns per-step logits ``[T, B, K]`` (paper Eq. 8).

    L = (1 - a) * CE(O, y) + a * ``tks_loss``(logits, y), where the caller gives the weight a of the current
    epoch, e.g. ``linear_ramp(epoch, epochs, alpha=0.7)`` as the official code::

        loss_fn = TKSLoss(temperature=3.0)
        loss = loss_fn(model(x), y, weight=linear_ramp(epoch, epochs, 0.7))

    The constructor arguments are those of ``tks_loss``; the defaults reproduce the official code.
    """

    def __init__(
        self,
        temperature: float = 3.0,
        *,
        teacher: Teacher = "sum",
        detach_teacher: bool = False,
        teacher_target: TeacherTarget = "softmax",
        student: Student = "per_step",
        student_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.temperature, self.teacher, self.detach_teacher = temperature, teacher, detach_teacher
        self.teacher_target, self.student, self.student_temperature = teacher_target, student, student_temperature

    def term(self, logits: Tensor, target: Tensor) -> Tensor:
        """The TKS term alone: ``tks_loss`` with this module's settings."""
        return tks_loss(
            logits,
            target,
            temperature=self.temperature,
            teacher=self.teacher,
            detach_teacher=self.detach_teacher,
            teacher_target=self.teacher_target,
            student=self.student,
            student_temperature=self.student_temperature,
        )

    def forward(self, logits: Tensor, target: Tensor, weight: float) -> Tensor:
        """(1 - weight) * ``mean_ce`` + weight * ``tks_loss`` of ``logits [T, B, K]`` and ``target [B]``."""
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        return (1.0 - weight) * mean_ce(logits, target) + weight * self.term(logits, target)


@dataclass(frozen=True)
class LossOutput:
    """A loss value and its named parts (detached floats-to-be), for logging."""

    total: Tensor
    parts: dict[str, Tensor]


@dataclass(frozen=True)
class Criterion:
    """The training loss of a ``LossConfig``, called on per-step logits by the training loop.

    ``ce``: ``mean_ce``. ``ls``: ``label_smoothing_ce``. ``tet``: ``tet_loss``.
    ``tks``: (1 - a) * base + a * ``tks_loss``, where a = schedule(epoch, epochs, alpha) and base is
    ``label_smoothing_ce`` with eps = ``tks_smoothing`` (official ``--smoothing``, default 0: plain ``mean_ce``).
    """

    cfg: LossConfig

    @cached_property
    def _tks(self) -> TKSLoss:
        cfg = self.cfg
        return TKSLoss(
            cfg.temperature,
            teacher=cfg.teacher,
            detach_teacher=cfg.detach_teacher,
            teacher_target=cfg.teacher_target,
            student=cfg.student,
            student_temperature=cfg.student_temperature,
        )

    def tks_weight(self, epoch: int, epochs: int) -> float:
        """Weight a of the TKS term at a 0-indexed epoch (0 for the non-TKS losses)."""
        return SCHEDULES[self.cfg.schedule](epoch, epochs, self.cfg.alpha) if self.cfg.name == "tks" else 0.0

    def __call__(self, logits: Tensor, target: Tensor, *, epoch: int = 0, epochs: int = 1) -> LossOutput:
        """Loss of ``logits [T, B, K]`` against ``target [B]`` at a 0-indexed epoch out of ``epochs``."""
        cfg = self.cfg
        if cfg.name == "ce":
            loss = mean_ce(logits, target)
        elif cfg.name == "ls":
            loss = label_smoothing_ce(logits, target, smoothing=cfg.smoothing)
        elif cfg.name == "tet":
            loss = tet_loss(logits, target, lamb=cfg.tet_lambda, phi=cfg.tet_phi)
        else:
            base = label_smoothing_ce(logits, target, smoothing=cfg.tks_smoothing)  # eps = 0 is exactly mean_ce
            tks = self._tks.term(logits, target)
            weight = self.tks_weight(epoch, epochs)
            return LossOutput((1.0 - weight) * base + weight * tks, {"ce": base, "tks": tks})
        return LossOutput(loss, {cfg.name: loss})
