"""Losses on per-step logits: mean CE, label smoothing, TET, Temporal Knowledge Sharing and its label-free successors.

Every loss is a pure function of ``logits [T, B, K]`` (the output of step t is ``logits[t]``) and, when it needs
labels, integer ``target [B]``; T is reduced only here and in ``tks.metrics``. ``Criterion`` combines a base loss
with the TKS or Strong/Weak term and is what the training loop calls. The option dataclasses of each loss
(``TKSOptions``, ``StrongWeakOptions``) live in ``tks.config`` and are importable from here too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tks.config import LabelSmoothingOptions, LossConfig, StrongWeakOptions, TETOptions, TKSOptions
from tks.errors import OptionError, TKSWarning, check_logits, check_loss_inputs, user_stacklevel
from tks.registry import Registry, check_options, parameters

__all__ = [
    "LOSSES",
    "Criterion",
    "LossEntry",
    "LossOutput",
    "StrongWeakLoss",
    "StrongWeakOptions",
    "TKSLoss",
    "TKSOptions",
    "constant",
    "label_smoothing_ce",
    "linear_ramp",
    "list_losses",
    "mean_ce",
    "register_loss",
    "strong_weak_loss",
    "strong_weak_objective",
    "tet_loss",
    "tks_loss",
    "tks_objective",
    "tks_weight",
    "zero_weight_warning",
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
    check_loss_inputs(logits, target)
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
    check_loss_inputs(logits, target)
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
    check_loss_inputs(logits, target)
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
    check_loss_inputs(logits, target)
    # The options check every choice and temperature, for a call as for a config: one place, one ConfigError
    # (detach_teacher, a bool, has nothing to check).
    TKSOptions(
        temperature=temperature,
        teacher=teacher,
        teacher_target=teacher_target,
        student=student,
        student_temperature=student_temperature,
        teacher_source=teacher_source,
    )
    num_classes = logits.shape[-1]
    if teacher_source == "label":
        reference = target
    else:  # consensus: the ensemble's own prediction [B] stands in for y
        reference = logits.detach().mean(0).argmax(-1)
    correct = logits.argmax(-1) == reference  # [T, B]
    z = (logits * correct.unsqueeze(-1).to(logits.dtype)).sum(0)  # [B, K]; zeros where no step is correct
    num_correct = correct.sum(0)  # [B]
    if teacher == "mean":
        z = z / num_correct.clamp_min(1).unsqueeze(-1).to(z.dtype)
    if detach_teacher:
        z = z.detach()
    if teacher_target == "softmax":
        p_teacher = torch.softmax(z / temperature, dim=-1)  # softmax(0) is already uniform
    else:  # logits: Z itself, 1/K where no step is correct (Eq. 6 read literally)
        p_teacher = torch.where((num_correct > 0).unsqueeze(-1), z, torch.full_like(z, 1.0 / num_classes))
    if student == "per_step":
        log_q = torch.log_softmax(logits / student_temperature, dim=-1)  # [T, B, K]
    else:  # mean: the time-averaged output is the one student
        log_q = torch.log_softmax(logits.mean(0) / student_temperature, dim=-1).unsqueeze(0)  # [1, B, K]
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
    check_logits(logits)
    # The options check every choice and the temperature, for a call as for a config (ConfigError).
    StrongWeakOptions(direction=direction, temperature=temperature, selection=selection)
    steps, batch, classes = logits.shape
    log_q = torch.log_softmax(logits / temperature, dim=-1)  # [T, B, K]
    with torch.no_grad():  # which step teaches is a discrete choice: no gradient through it
        wide = logits.detach().to(torch.promote_types(logits.dtype, torch.float32))
        confidence = torch.softmax(wide, dim=-1).amax(-1)  # [T, B]
        if selection == "batch":
            confidence = confidence.mean(1, keepdim=True).expand(steps, batch)  # one choice for the whole batch

    def kl(teacher: Tensor, student: Tensor) -> Tensor:  # log-probabilities [..., B, K] -> KL per sample [..., B]
        if detach_teacher:
            teacher = teacher.detach()
        return (teacher.exp() * (teacher - student)).sum(-1)

    if direction == "cascade":
        order = confidence.sort(dim=0, descending=True, stable=True).indices  # [T, B], most confident first
        ranked = log_q.gather(0, order.unsqueeze(-1).expand(steps, batch, classes))
        if steps == 1:
            _warn_zero_distillation(steps)
        term = kl(ranked[:-1], ranked[1:]).mean() if steps > 1 else logits.new_zeros(())
    else:

        def pick(index: Tensor) -> Tensor:  # [B] step per sample -> [B, K]
            return log_q.gather(0, index.view(1, batch, 1).expand(1, batch, classes)).squeeze(0)

        strongest, weakest = confidence.argmax(0), confidence.argmin(0)
        if bool((strongest == weakest).all()):  # one sync: a term of exactly 0 should not pass unseen
            _warn_zero_distillation(steps)
        strong, weak = pick(strongest), pick(weakest)
        if direction == "strong2weak":
            term = kl(strong, weak).mean()
        elif direction == "weak2strong":
            term = kl(weak, strong).mean()
        else:  # both
            term = kl(strong, weak).mean() + kl(weak, strong).mean()
    return term * temperature**2 if scale_t2 else term


def _warn_zero_distillation(steps: int) -> None:
    """Say (``TKSWarning``, once per calling line) that the strongest and the weakest step are the same step."""
    why = (
        "at T=1 the one step is both the strongest and the weakest"
        if steps == 1
        else "every step of this batch is equally confident (identical outputs, or a softmax so saturated that "
        "each confidence rounds to 1)"
    )
    warnings.warn(
        f"the Strong2Weak/Weak2Strong term is 0: {why}, so the batch trains plain cross-entropy",
        TKSWarning,
        stacklevel=user_stacklevel(),
    )


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


def zero_weight_warning(options: TKSOptions, epochs: int) -> str | None:
    """Why the TKS term would weigh 0 in every one of ``epochs`` epochs (plain CE under the name TKS), or None."""
    if all(tks_weight(options, epoch, epochs) == 0.0 for epoch in range(epochs)):
        why = "alpha is 0" if options.alpha == 0.0 else f"the linear ramp alpha * epoch / {epochs} is 0 at epoch 0"
        return (
            f"the TKS term weighs 0 in every epoch of this {epochs}-epoch run ({why}): it trains plain "
            "cross-entropy; use more epochs, or schedule 'constant'"
        )
    return None


class TKSLoss(nn.Module):
    """The TKS objective as a module, for any model that returns per-step logits ``[T, B, K]`` (paper Eq. 8).

    ``tks_objective`` with its options fixed; alpha and the schedule are given once, in the options. The weight a
    of the TKS term comes from one of, in this order: ``weight`` if given; the options' schedule at ``epoch`` of
    ``epochs`` (0-indexed; the official linear ramp: a = alpha * epoch / epochs); else a = alpha, the full weight::

        loss_fn = TKSLoss(TKSOptions(temperature=3.0, alpha=0.7))   # or TKSLoss(temperature=3.0, alpha=0.7)
        for epoch in range(epochs):
            for x, y in loader:
                loss = loss_fn(model(x), y, epoch=epoch, epochs=epochs)

    A run whose schedule keeps a at 0 throughout (alpha 0, or the linear ramp over 1 epoch) trains plain CE: the
    first call says so once (``TKSWarning``).

    Args:
        options: the TKS choices (default: ``TKSOptions()``, the official code's).
        **settings: fields of ``TKSOptions`` instead of (or on top of) ``options``.
    """

    def __init__(self, options: TKSOptions | None = None, **settings: Any) -> None:
        super().__init__()
        options = options if options is not None else TKSOptions()
        self.options = replace(options, **settings) if settings else options
        self._warned_epochs: set[int] = set()

    def weight(self, epoch: int | None = None, epochs: int | None = None) -> float:
        """The weight a at ``epoch`` of ``epochs`` (the options' schedule), or alpha when they are not given."""
        if epoch is None and epochs is None:
            return self.options.alpha
        if epoch is None or epochs is None:
            raise ValueError("give both epoch and epochs (0-indexed epoch of epochs), or neither")
        if epochs < 1 or not 0 <= epoch < epochs:
            raise ValueError(f"epoch must be in [0, epochs) with epochs >= 1, got epoch={epoch}, epochs={epochs}")
        if epochs not in self._warned_epochs:
            self._warned_epochs.add(epochs)
            message = zero_weight_warning(self.options, epochs)
            if message:
                warnings.warn(message, TKSWarning, stacklevel=user_stacklevel())
        return tks_weight(self.options, epoch, epochs)

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        weight: float | None = None,
        *,
        epoch: int | None = None,
        epochs: int | None = None,
    ) -> Tensor:
        """``tks_objective(logits [T, B, K], target [B], options, a).total`` with a as the class docstring says."""
        a = weight if weight is not None else self.weight(epoch, epochs)
        return tks_objective(logits, target, self.options, a).total


class StrongWeakLoss(nn.Module):
    """Ding et al.'s objective as a module: ``strong_weak_objective`` with its options fixed (a constant weight).

    Args:
        options: the Strong/Weak choices (default: ``StrongWeakOptions()``, Weak2Strong as the paper).
        **settings: fields of ``StrongWeakOptions`` instead of (or on top of) ``options``.
    """

    def __init__(self, options: StrongWeakOptions | None = None, **settings: Any) -> None:
        super().__init__()
        options = options if options is not None else StrongWeakOptions()
        self.options = replace(options, **settings) if settings else options

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``strong_weak_objective(logits [T, B, K], target [B], options).total``."""
        return strong_weak_objective(logits, target, self.options).total


# ------------------------------------------------------------------------------------------------- the registry

Objective = TypeVar("Objective", bound=Callable[..., "Tensor | LossOutput"])


@dataclass(frozen=True)
class LossEntry:
    """A registered loss: its function, the config section holding its options, and its term's schedule."""

    objective: Callable[..., Tensor | LossOutput]
    section: str | None = None
    """The ``LossConfig`` field with the options (``tks``, ...); None: ``loss.options`` passed by name."""
    weight: Callable[[Any, int, int], float] | None = None
    """The weight of its distillation term at an epoch, logged as ``tks_weight`` (None: 0)."""

    @property
    def options(self) -> list[str]:
        """The keyword options ``loss.options`` may set (a registered function's parameters but the passed ones)."""
        return [name for name in parameters(self.objective) if name not in PASSED]


PASSED = ("logits", "target", "epoch", "epochs", "options")
"""What the training loop passes a loss function whose signature names it (``options``: its config section)."""

LOSSES: Registry[LossEntry] = Registry("loss", source=lambda entry: entry.objective)
"""Every registered loss by name; ``register_loss`` fills it."""


def register_loss(
    name: str, *, section: str | None = None, weight: Callable[[Any, int, int], float] | None = None
) -> Callable[[Objective], Objective]:
    """Register a loss function under ``name`` (a decorator; the function is returned unchanged).

    The function takes ``logits [T, B, K]`` and ``target [B]``, plus, where its signature names them, ``epoch``
    and ``epochs`` (0-indexed, for schedules) and the options of ``loss.options`` as keywords; it returns a scalar
    loss or a ``LossOutput`` (its parts are logged)::

        @tks.register_loss("focal")
        def focal(logits, target, *, gamma: float = 2.0):
            ...

        # config: loss: {name: focal, options: {gamma: 1.0}}

    Args:
        name: what ``loss.name`` calls it.
        section: for the built-ins, the ``LossConfig`` field holding their options (passed as ``options``).
        weight: the schedule of its distillation term, ``weight(options, epoch, epochs)``, for the log.

    Raises:
        RegistryError: when another function already has the name.
    """
    return LOSSES.decorator(name, lambda objective: LossEntry(objective, section, weight))


def list_losses() -> list[str]:
    """Names accepted by ``loss.name``."""
    return sorted(LOSSES)


@register_loss("ce")
def _mean_ce(logits: Tensor, target: Tensor) -> Tensor:
    return mean_ce(logits, target)


@register_loss("ls", section="ls")
def _label_smoothing(logits: Tensor, target: Tensor, *, options: LabelSmoothingOptions) -> Tensor:
    return label_smoothing_ce(logits, target, smoothing=options.smoothing)


@register_loss("tet", section="tet")
def _tet(logits: Tensor, target: Tensor, *, options: TETOptions) -> Tensor:
    return tet_loss(logits, target, lamb=options.lamb, phi=options.phi)


@register_loss("tks", section="tks", weight=tks_weight)
def _tks(logits: Tensor, target: Tensor, *, options: TKSOptions, epoch: int, epochs: int) -> LossOutput:
    return tks_objective(logits, target, options, tks_weight(options, epoch, epochs))


@register_loss("strong_weak", section="strong_weak")
def _strong_weak(logits: Tensor, target: Tensor, *, options: StrongWeakOptions) -> LossOutput:
    return strong_weak_objective(logits, target, options)


@dataclass(frozen=True)
class Criterion:
    """The training loss of a ``LossConfig``, called on per-step logits by the training loop.

    ``loss.name`` picks a registered loss (``ce``: ``mean_ce``, ``ls``: ``label_smoothing_ce``, ``tet``:
    ``tet_loss``, ``tks``: ``tks_objective`` at the scheduled weight, ``strong_weak``: ``strong_weak_objective``,
    or one registered by a plugin); the built-ins take the options of their own section, the others
    ``loss.options`` by name. Building it checks both (``UnknownNameError``, ``OptionError``).
    """

    cfg: LossConfig

    def __post_init__(self) -> None:
        entry = LOSSES[self.cfg.name]
        if entry.section is None:
            check_options(f"loss {self.cfg.name!r}", entry.objective, self.cfg.options, entry.options)
        elif self.cfg.options:
            raise OptionError(
                f"loss {self.cfg.name!r} takes its options from loss.{entry.section}, not loss.options "
                f"(got {', '.join(sorted(self.cfg.options))})"
            )

    def tks_weight(self, epoch: int, epochs: int) -> float:
        """Weight of the loss's distillation term at a 0-indexed epoch (the TKS weight; 0 for most losses)."""
        entry = LOSSES[self.cfg.name]
        if entry.weight is None:
            return 0.0
        return entry.weight(getattr(self.cfg, entry.section) if entry.section else self.cfg.options, epoch, epochs)

    def __call__(self, logits: Tensor, target: Tensor, *, epoch: int = 0, epochs: int = 1) -> LossOutput:
        """Loss of ``logits [T, B, K]`` against ``target [B]`` at a 0-indexed epoch out of ``epochs``."""
        entry = LOSSES[self.cfg.name]
        named = parameters(entry.objective)
        kwargs: dict[str, Any] = dict(self.cfg.options)
        if entry.section is not None:
            kwargs["options"] = getattr(self.cfg, entry.section)
        kwargs.update({k: v for k, v in (("epoch", epoch), ("epochs", epochs)) if k in named})
        out = entry.objective(logits, target, **kwargs)
        return out if isinstance(out, LossOutput) else LossOutput(out, {self.cfg.name: out})
