"""Losses on per-step logits: mean CE, label smoothing, TET, Temporal Knowledge Sharing and its label-free successors.

Every loss is a pure function of ``logits [T, B, K]`` (the output of step t is ``logits[t]``) and, when it needs
labels, integer ``target [B]``; T is reduced only here and in ``tks.metrics``. ``Criterion`` combines a base loss
with the TKS or Strong/Weak term and is what the training loop calls. The option dataclasses of each loss
(``TKSOptions``, ``StrongWeakOptions``) live in ``tks.config`` and are importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tks.config import LabelSmoothingOptions, LossConfig, StrongWeakOptions, TETOptions, TKSOptions
from tks.errors import check_per_step

__all__ = [
    "Criterion",
    "LossOutput",
    "StrongWeakOptions",
    "TKSLoss",
    "TKSOptions",
    "constant",
    "label_smoothing_ce",
    "linear_ramp",
    "mean_ce",
    "strong_weak_loss",
    "strong_weak_objective",
    "tet_loss",
    "tks_loss",
    "tks_objective",
    "tks_weight",
]

Teacher = Literal["sum", "mean"]
Student = Literal["per_step", "mean"]
TeacherTarget = Literal["softmax", "logits"]
TeacherSource = Literal["label", "consensus"]
Direction = Literal["weak2strong", "strong2weak", "both", "cascade"]
Selection = Literal["batch", "sample"]


def mean_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of the time-averaged logits, the paper's baseline (Eq. 3-4).

    L = CE(O, y) with O = (1/T) sum_t O_t, averaged over the batch.

    Args:
        logits: ``[T, B, K]``.
        target: ``[B]`` class indices.
    """
    check_per_step(logits, target)
    return F.cross_entropy(logits.mean(0), target)


def label_smoothing_ce(logits: Tensor, target: Tensor, *, smoothing: float = LabelSmoothingOptions.smoothing) -> Tensor:
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


def tet_loss(logits: Tensor, target: Tensor, *, lamb: float = TETOptions.lamb, phi: float = TETOptions.phi) -> Tensor:
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
    temperature: float = TKSOptions.temperature,
    teacher: Teacher = TKSOptions.teacher,
    detach_teacher: bool = TKSOptions.detach_teacher,
    teacher_target: TeacherTarget = TKSOptions.teacher_target,
    student: Student = TKSOptions.student,
    student_temperature: float = TKSOptions.student_temperature,
    teacher_source: TeacherSource = TKSOptions.teacher_source,
) -> Tensor:
    """Temporal Knowledge Sharing term (Dong, Zhao, Zeng 2023, arXiv:2304.06540), without its weight alpha.

    A step t is correct for sample b when argmax_k O_{t,b,k} = y_b. The teacher aggregates the logits of the
    correct steps, Z_b = sum_t m_{b,t} O_{t,b} (``teacher="sum"``) or that sum / m_b (``"mean"``, paper Eq. 5),
    and becomes the target P_b = softmax(Z_b / tau); a sample with no correct step gets the uniform target 1/K.
    With ``student="per_step"`` every step is trained towards it,

        L = tau^2 * (1/T) sum_t (1/B) sum_b sum_k -P_{b,k} log softmax(O_{t,b} / tau_s)_k,

    and with ``student="mean"`` the single student is the time-averaged output O (paper Eq. 7).

    The defaults reproduce the official code exactly (docs/reference.md §3): sum teacher, not detached, per-step
    students without temperature. The paper's Eq. 5-7 reading is ``teacher="mean", student="mean",
    student_temperature=temperature``; ``teacher_target="logits"`` takes Eq. 6 literally (Z itself as the target
    weights, 1/K where no step is correct), which is not a distribution and is offered only for that comparison.

    ``teacher_source="consensus"`` goes beyond the paper and makes the term label-free: a step counts as "correct"
    when its argmax equals the argmax of the time-averaged logits, y'_b = argmax_k O_{b,k}, instead of y_b. When
    that prediction is right for every sample the two teachers are identical. No step agrees with y'_b only when
    the mean's winner is no single step's winner; such a sample gets the uniform target, as with labels.

    Args:
        logits: ``[T, B, K]`` per-step outputs.
        target: ``[B]`` class indices (hard labels: the correct-step mask needs them; unused by ``consensus``).
        temperature: tau of the teacher softmax, and the tau^2 factor (paper Eq. 8).
        teacher: ``"sum"`` (official) or ``"mean"`` (paper Eq. 5) over the correct steps.
        detach_teacher: stop gradients into the teacher logits (official: False, they flow).
        teacher_target: ``"softmax"`` (official, P = softmax(Z / tau)) or ``"logits"`` (Eq. 6 literally).
        student: ``"per_step"`` (official) or ``"mean"`` (paper Eq. 7).
        student_temperature: tau_s dividing the student logits (official 1.0).
        teacher_source: ``"label"`` (official: steps predicting y) or ``"consensus"`` (steps predicting the
            time-averaged argmax; beyond the paper).

    Returns:
        Scalar loss.
    """
    check_per_step(logits, target)
    if not temperature > 0 or not student_temperature > 0:
        raise ValueError(f"temperatures must be > 0, got {temperature} and {student_temperature}")
    num_classes = logits.shape[-1]
    if teacher_source == "label":
        reference = target
    elif teacher_source == "consensus":
        reference = logits.detach().mean(0).argmax(-1)  # [B]: the ensemble's own prediction stands in for y
    else:
        raise ValueError(f"teacher_source must be 'label' or 'consensus', got {teacher_source!r}")
    correct = logits.argmax(-1) == reference  # [T, B]
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


def strong_weak_loss(
    logits: Tensor,
    *,
    direction: Direction = StrongWeakOptions.direction,
    temperature: float = StrongWeakOptions.temperature,
    selection: Selection = StrongWeakOptions.selection,
    detach_teacher: bool = StrongWeakOptions.detach_teacher,
    scale_t2: bool = StrongWeakOptions.scale_t2,
) -> Tensor:
    """Label-free self-distillation between time steps: Strong2Weak / Weak2Strong (Ding et al. 2025, arXiv:2510.07924).

    Each step t is a sub-model with output O_t (that step's logits, not a running mean). Its confidence is the
    batch mean of its top softmax probability, c_t = (1/B) sum_b max_k softmax(O_{t,b})_k (``selection="batch"``,
    the paper's Alg. 1, recomputed for every batch), or each sample's own c_{t,b} (``"sample"``, beyond the paper).
    The strong step is t_s = argmax_t c_t and the weak step t_w = argmin_t c_t. With the softened outputs
    q_t = softmax(O_t / a) and KL(p || q) = sum_k p_k (log p_k - log q_k) averaged over the batch:

        strong2weak: L = KL(q_{t_s} || q_{t_w})      (teacher the strong step, student the weak one)
        weak2strong: L = KL(q_{t_w} || q_{t_s})      (the weak step's dark knowledge teaches the strong one)
        both:        L = KL(q_{t_s} || q_{t_w}) + KL(q_{t_w} || q_{t_s})
        cascade:     L = 1/(T-1) sum_i KL(q_{r_i} || q_{r_{i+1}}), steps ranked r_1..r_T by decreasing confidence

    times a^2 when ``scale_t2``. The paper's objective is CE(mean_t O_t, y) + lambda * L with lambda = 1, a = 2,
    no a^2 factor and the teacher not detached (``Criterion`` with ``loss.name: strong_weak``). Labels are never
    read. ``torch.nn.functional.kl_div(log q_w, log q_s, log_target=True)`` is the same KL (teacher q_s).

    Where the paper is silent, this function decides:

    - Confidence uses the untempered softmax and carries no gradient (the choice of steps is discrete).
    - Ties go to the earliest step (``argmax`` / ``argmin``): when all steps are equally confident (always at
      T = 1), t_s = t_w and the term is exactly 0, as it is whenever all steps give the same output.
    - The KL is summed over classes and averaged over the batch (``reduction="batchmean"``), the true mean KL; a
      plain element-wise mean would divide it by K as well.
    - ``cascade`` distils each step into the next less confident one (strong to weak along the ranking; ties keep
      time order) and is 0 at T = 1.

    Args:
        logits: ``[T, B, K]`` per-step outputs.
        direction: ``"weak2strong"``, ``"strong2weak"``, ``"both"`` or ``"cascade"``.
        temperature: a, the softening temperature of q_t (paper: 2).
        selection: ``"batch"`` (paper) or ``"sample"``: choose the strong and weak steps per sample.
        detach_teacher: stop gradients into the teacher distribution (paper: not detached).
        scale_t2: multiply by a^2 (Hinton et al.'s distillation scaling; paper: no).

    Returns:
        Scalar loss, >= 0.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be [T, B, K], got shape {tuple(logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    steps, batch, classes = logits.shape
    log_q = torch.log_softmax(logits / temperature, dim=-1)  # [T, B, K]
    with torch.no_grad():  # which step teaches is a discrete choice: no gradient through it
        wide = logits.detach().to(torch.promote_types(logits.dtype, torch.float32))
        confidence = torch.softmax(wide, dim=-1).amax(-1)  # [T, B]
        if selection == "batch":
            confidence = confidence.mean(1, keepdim=True).expand(steps, batch)  # one choice for the whole batch
        elif selection != "sample":
            raise ValueError(f"selection must be 'batch' or 'sample', got {selection!r}")

    def kl(teacher: Tensor, student: Tensor) -> Tensor:  # log-probabilities [..., B, K] -> KL per sample [..., B]
        if detach_teacher:
            teacher = teacher.detach()
        return (teacher.exp() * (teacher - student)).sum(-1)

    if direction == "cascade":
        order = confidence.sort(dim=0, descending=True, stable=True).indices  # [T, B], most confident first
        ranked = log_q.gather(0, order.unsqueeze(-1).expand(steps, batch, classes))
        term = kl(ranked[:-1], ranked[1:]).mean() if steps > 1 else logits.new_zeros(())
    else:

        def pick(index: Tensor) -> Tensor:  # [B] step per sample -> [B, K]
            return log_q.gather(0, index.view(1, batch, 1).expand(1, batch, classes)).squeeze(0)

        strong, weak = pick(confidence.argmax(0)), pick(confidence.argmin(0))
        if direction == "strong2weak":
            term = kl(strong, weak).mean()
        elif direction == "weak2strong":
            term = kl(weak, strong).mean()
        elif direction == "both":
            term = kl(strong, weak).mean() + kl(weak, strong).mean()
        else:
            raise ValueError(f"direction must be 'weak2strong', 'strong2weak', 'both' or 'cascade', got {direction!r}")
    return term * temperature**2 if scale_t2 else term


def linear_ramp(epoch: int, epochs: int, alpha: float) -> float:
    """Official TKS weight schedule: a = alpha * epoch / epochs for 0-indexed epochs.

    Epoch 0 is pure base loss; the last epoch gets alpha * (epochs - 1) / epochs (docs/reference.md §3.5).
    """
    return alpha * epoch / epochs


def constant(epoch: int, epochs: int, alpha: float) -> float:
    """Constant weight a = alpha at every epoch.

    Note that the official ``--staticalpha`` flag inverts the meaning (its alpha is the CE weight); here alpha is
    always the weight of the TKS term.
    """
    return alpha


SCHEDULES = {"linear": linear_ramp, "constant": constant}


@dataclass(frozen=True)
class LossOutput:
    """A loss value and its named parts (detached floats-to-be), for logging."""

    total: Tensor
    parts: dict[str, Tensor]


def tks_weight(options: TKSOptions, epoch: int, epochs: int) -> float:
    """Weight a of the TKS term at a 0-indexed epoch: ``options.schedule`` of ``options.alpha``."""
    return SCHEDULES[options.schedule](epoch, epochs, options.alpha)


def tks_objective(logits: Tensor, target: Tensor, options: TKSOptions, weight: float) -> LossOutput:
    """The whole TKS objective (paper Eq. 8): L = (1 - a) * CE_eps(O, y) + a * ``tks_loss``(logits, y; options).

    CE_eps is ``label_smoothing_ce`` with eps = ``options.smoothing`` (official ``--smoothing``; 0 is exactly
    ``mean_ce``). What both ``TKSLoss`` and the training loop (``Criterion``) compute.

    Args:
        logits: ``[T, B, K]``.
        target: ``[B]`` class indices.
        options: the TKS choices (``tks.config.TKSOptions``; defaults = the official code).
        weight: a, the weight of the TKS term at this epoch (``tks_weight``), in [0, 1].
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    base = label_smoothing_ce(logits, target, smoothing=options.smoothing)
    term = tks_loss(
        logits,
        target,
        temperature=options.temperature,
        teacher=options.teacher,
        detach_teacher=options.detach_teacher,
        teacher_target=options.teacher_target,
        student=options.student,
        student_temperature=options.student_temperature,
        teacher_source=options.teacher_source,
    )
    return LossOutput((1.0 - weight) * base + weight * term, {"ce": base, "tks": term})


def strong_weak_objective(logits: Tensor, target: Tensor, options: StrongWeakOptions) -> LossOutput:
    """Ding et al.'s objective: L = CE(O, y) + lambda * ``strong_weak_loss``(logits; options), lambda constant."""
    base = mean_ce(logits, target)
    term = strong_weak_loss(
        logits,
        direction=options.direction,
        temperature=options.temperature,
        selection=options.selection,
        detach_teacher=options.detach_teacher,
        scale_t2=options.scale_t2,
    )
    return LossOutput(base + options.weight * term, {"ce": base, "sw": term})


class TKSLoss(nn.Module):
    """The TKS objective as a module, for any model that returns per-step logits ``[T, B, K]`` (paper Eq. 8).

    ``tks_objective`` with fixed options; the caller gives the weight a of the current epoch, e.g.
    ``tks_weight(options, epoch, epochs)`` or ``linear_ramp(epoch, epochs, alpha=0.7)`` as the official code::

        loss_fn = TKSLoss(TKSOptions(temperature=3.0))
        loss = loss_fn(model(x), y, weight=linear_ramp(epoch, epochs, 0.7))

    Args:
        options: the TKS choices (default: ``TKSOptions()``, the official code's).
    """

    def __init__(self, options: TKSOptions | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else TKSOptions()

    def forward(self, logits: Tensor, target: Tensor, weight: float) -> Tensor:
        """``tks_objective(logits [T, B, K], target [B], self.options, weight).total``."""
        return tks_objective(logits, target, self.options, weight).total


@dataclass(frozen=True)
class Criterion:
    """The training loss of a ``LossConfig``, called on per-step logits by the training loop.

    ``ce``: ``mean_ce``. ``ls``: ``label_smoothing_ce``. ``tet``: ``tet_loss``. ``tks``: ``tks_objective`` at the
    scheduled weight. ``strong_weak``: ``strong_weak_objective``. Each takes the options of its own section.
    """

    cfg: LossConfig

    def tks_weight(self, epoch: int, epochs: int) -> float:
        """Weight a of the TKS term at a 0-indexed epoch (0 for the non-TKS losses)."""
        return tks_weight(self.cfg.tks, epoch, epochs) if self.cfg.name == "tks" else 0.0

    def __call__(self, logits: Tensor, target: Tensor, *, epoch: int = 0, epochs: int = 1) -> LossOutput:
        """Loss of ``logits [T, B, K]`` against ``target [B]`` at a 0-indexed epoch out of ``epochs``."""
        cfg = self.cfg
        if cfg.name == "tks":
            return tks_objective(logits, target, cfg.tks, self.tks_weight(epoch, epochs))
        if cfg.name == "strong_weak":
            return strong_weak_objective(logits, target, cfg.strong_weak)
        if cfg.name == "ce":
            loss = mean_ce(logits, target)
        elif cfg.name == "ls":
            loss = label_smoothing_ce(logits, target, smoothing=cfg.ls.smoothing)
        else:
            loss = tet_loss(logits, target, lamb=cfg.tet.lamb, phi=cfg.tet.phi)
        return LossOutput(loss, {cfg.name: loss})
