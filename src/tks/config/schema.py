"""The config's schema: one frozen dataclass per section, each checking its own ranges when it is built.

``Config`` holds the sections ``data``, ``model`` (with ``neuron``), ``loss`` (each loss's options in its own
nested dataclass), ``optim`` and ``run``. The defaults of ``Config()`` are the quick digits recipe of bare
``tks train`` (``configs/digits.yaml`` states the same values; a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tks.errors import TKSError


class ConfigError(TKSError, ValueError):
    """An invalid config file, key or value."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    """Refuse a value that is none of a ``Literal``'s choices: ``ConfigError`` naming the key and a close match."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}{hint}")


@functools.cache
def _choices_of(cls: type) -> dict[str, tuple[Any, ...]]:
    """The ``Literal`` fields of a dataclass and their choices."""
    hints = typing.get_type_hints(cls)
    return {name: typing.get_args(tp) for name, tp in hints.items() if typing.get_origin(tp) is Literal}


def _check_choices(options: object, section: str) -> None:
    """Every ``Literal`` field of ``options`` holds one of its choices (built in Python, not only from YAML)."""
    for name, choices in _choices_of(type(options)).items():
        check_choice(f"{section}.{name}", getattr(options, name), choices)


@dataclass(frozen=True)
class DataConfig:
    """Which data, over how many time steps, in what batches."""

    name: str = "digits"
    """Registered dataset name (``tks.data.list_datasets()``)."""
    root: str | None = None
    """Folder holding the dataset's files; unused by bundled datasets."""
    num_steps: int = 4
    """T, the number of time steps the network runs for."""
    batch_size: int = 64
    """Training batch size."""
    eval_batch_size: int = 256
    """Batch size for evaluation."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the main process); also frames event files when a cache is built."""
    augment: Literal["official", "none", "flip", "crop_flip", "randaugment", "autoaugment", "crop_flip_rotate"] = (
        "official"
    )
    """Training augmentation preset (docs/datasets.md); ``official``: what the official code uses on the dataset."""
    normalization: Literal["dataset", "imagenet", "official"] = "dataset"
    """Image statistics for train and test: the dataset's own, ImageNet's, or ``official`` (ImageNet's for
    training and CIFAR-10's for testing, the official code's mismatch)."""
    split: Literal["official", "tebn"] = "official"
    """Per-class split of event datasets: first 90% train (official) or first 10% test (TEBN; CIFAR10-DVS)."""
    frame_size: int | None = None
    """Side of the square event frames (None: the dataset's default, 48 for CIFAR10-DVS and N-Caltech101)."""
    frames_cache: str = "auto"
    """Event frame cache: ``auto`` ($TKS_CACHE/frames, default ~/.cache/tks/frames), ``off``, or a folder."""
    train_limit: int | None = None
    """Use only this many training samples (a fixed random subset, the same for every seed); None: all."""
    test_limit: int | None = None
    """Use only this many test samples (a fixed random subset); None: all."""
    val_size: int | None = None
    """Hold out this many training images as a validation split, evaluated after every epoch with the test
    transform and used to choose ``best.pt`` (``run.select_on``); None: no split. The split is stratified by class
    and fixed (its own generator: the same images for every seed and method); it is taken before ``train_limit``,
    which then draws from the remaining images."""
    train_eval_size: int | None = None
    """Also evaluate, after every epoch, this many of the training images (a fixed stratified subset of the images
    trained on, never validation images) with the test transform and eval-mode BN: the clean training accuracy;
    None: off."""

    def __post_init__(self) -> None:
        _require(self.num_steps >= 1, f"data.num_steps (T) must be >= 1, got {self.num_steps}")
        _require(
            self.frame_size is None or self.frame_size >= 1, f"data.frame_size must be >= 1, got {self.frame_size}"
        )
        _require(bool(self.frames_cache), "data.frames_cache must be 'auto', 'off' or a folder")
        _require(self.batch_size >= 1, f"data.batch_size must be >= 1, got {self.batch_size}")
        _require(self.eval_batch_size >= 1, f"data.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        _require(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")
        for key in ("train_limit", "test_limit", "val_size", "train_eval_size"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"data.{key} must be >= 1 or null, got {value}")


@dataclass(frozen=True)
class NeuronConfig:
    """The LIF neuron (docs/reference.md §1); the defaults are the official ones."""

    engine: Literal["tks", "autograd", "spikingjelly"] = "tks"
    """``tks``: the fused kernels where they apply; ``autograd``: PyTorch ops only (``torch.compile`` can fuse them);
    ``spikingjelly``: SpikingJelly's LIFNode (same numbers). ``tks models --verbose`` shows what runs where."""
    tau: float = 2.0
    """Membrane time constant; the input is divided by tau."""
    v_threshold: float = 0.5
    """Firing threshold."""
    surrogate: Literal["piecewise_quadratic", "atan"] = "piecewise_quadratic"
    """Surrogate-gradient family."""
    surrogate_alpha: float = 2.0
    """Surrogate shape parameter (official: 2, i.e. dS/dx = 2 - 4|x| on |x| <= 0.5)."""
    detach_reset: bool = True
    """Stop the gradient through the hard reset."""

    def __post_init__(self) -> None:
        _require(self.tau > 1.0, f"model.neuron.tau must be > 1, got {self.tau}")
        _require(self.v_threshold > 0.0, f"model.neuron.v_threshold must be > 0, got {self.v_threshold}")
        _require(self.surrogate_alpha > 0.0, f"model.neuron.surrogate_alpha must be > 0, got {self.surrogate_alpha}")


@dataclass(frozen=True)
class ModelConfig:
    """Which network, with which neuron."""

    name: str = "spiking_cnn"
    """Registered model name (``tks.models.list_models()``)."""
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    """The spiking neuron used in every layer."""
    norm: Literal["bn", "tdbn", "tebn"] | None = None
    """Normalisation: BN over T*B, tdBN or TEBN (None: the model's official one)."""
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    """The model's own options, passed to its factory by name (``tks models --verbose`` lists each model's): e.g.
    SEW models' ``connect`` (``ADD``, ``AND``, ``IAND``) and SEW-ResNet-18/34/50's ``stem`` (``imagenet``,
    ``cifar``)."""


@dataclass(frozen=True)
class LabelSmoothingOptions:
    """Options of ``loss.name: ls``."""

    smoothing: float = 0.1
    """Label-smoothing epsilon."""

    def __post_init__(self) -> None:
        _require(0.0 <= self.smoothing < 1.0, f"loss.ls.smoothing must be in [0, 1), got {self.smoothing}")


@dataclass(frozen=True)
class TETOptions:
    """Options of ``loss.name: tet`` (Deng et al. 2022; the official TET code's values)."""

    lamb: float = 1e-3
    """Weight lambda of the MSE regulariser."""
    phi: float = 1.0
    """The constant the outputs are pulled towards."""

    def __post_init__(self) -> None:
        _require(0.0 <= self.lamb <= 1.0, f"loss.tet.lamb must be in [0, 1], got {self.lamb}")


def _variant(default: Any) -> Any:
    """A field of ``TKSOptions`` that changes the shape of the TKS term: runs that set it are a TKS variant."""
    return field(default=default, metadata={"variant": True})


@dataclass(frozen=True)
class TKSOptions:
    """Options of ``loss.name: tks``: the one place the TKS choices are named (``tks.losses.tks_loss`` takes them).

    The defaults reproduce the official code; the paper's equations are ``teacher: mean, student: mean,
    student_temperature`` = ``temperature``. Fields marked as variants (``TKS_VARIANT_FIELDS``) change the term
    itself; ``tks compare`` names a run that sets them a TKS variant.
    """

    temperature: float = 3.0
    """Temperature tau of the teacher softmax and the tau^2 factor (paper: 3 for CIFAR and fine-grained, 1 for
    ImageNet, 5 for DVS)."""
    alpha: float = 0.7
    """Largest weight of the TKS term (paper: 0.7, or 0.3 for DVS)."""
    schedule: Literal["linear", "constant"] = "linear"
    """``linear``: weight alpha * epoch / epochs (official); ``constant``: alpha throughout."""
    smoothing: float = 0.0
    """Label-smoothing epsilon of the CE term beside TKS (official ``--smoothing``, default 0: plain mean CE)."""
    teacher: Literal["sum", "mean"] = _variant("sum")
    """Aggregate of the correct steps' logits: ``sum`` (official) or ``mean`` (paper Eq. 5)."""
    detach_teacher: bool = _variant(False)
    """Stop gradients into the teacher (official: not detached)."""
    teacher_target: Literal["softmax", "logits"] = _variant("softmax")
    """``softmax``: target softmax(Z / tau) (official); ``logits``: Z itself (paper Eq. 6 read literally)."""
    student: Literal["per_step", "mean"] = _variant("per_step")
    """``per_step``: every step's output is a student (official); ``mean``: the time-averaged output (Eq. 7)."""
    student_temperature: float = _variant(1.0)
    """Temperature dividing the student logits (official 1; paper Eq. 7 uses tau)."""
    teacher_source: Literal["label", "consensus"] = _variant("label")
    """Which steps are "correct": those predicting the label (official) or, beyond the paper and label-free, those
    agreeing with the time-averaged prediction (``consensus``)."""

    def __post_init__(self) -> None:
        _check_choices(self, "loss.tks")
        _require(0.0 <= self.alpha <= 1.0, f"loss.tks.alpha must be in [0, 1], got {self.alpha}")
        _require(
            0.0 < self.temperature < math.inf, f"loss.tks.temperature must be finite and > 0, got {self.temperature}"
        )
        _require(
            0.0 < self.student_temperature < math.inf,
            f"loss.tks.student_temperature must be finite and > 0, got {self.student_temperature}",
        )
        _require(0.0 <= self.smoothing < 1.0, f"loss.tks.smoothing must be in [0, 1), got {self.smoothing}")


TKS_VARIANT_FIELDS = tuple(f.name for f in dataclasses.fields(TKSOptions) if f.metadata.get("variant"))
"""The ``TKSOptions`` that make a run a variant of the official TKS (not temperature, weight or schedule)."""


@dataclass(frozen=True)
class StrongWeakOptions:
    """Options of ``loss.name: strong_weak``, label-free distillation between time steps (Ding et al. 2025).

    The defaults are the paper's; ``tks.losses.strong_weak_loss`` takes them.
    """

    direction: Literal["weak2strong", "strong2weak", "both", "cascade"] = "weak2strong"
    """Who teaches whom: the weakest step the strongest (Weak2Strong), the reverse (Strong2Weak), both terms, or a
    cascade down the steps ranked by confidence (``tks.losses.strong_weak_loss``)."""
    temperature: float = 2.0
    """Temperature a of the softened outputs softmax(O_t / a) (paper: 2)."""
    weight: float = 1.0
    """Weight lambda of the distillation term added to the mean CE (paper: 1, constant)."""
    selection: Literal["batch", "sample"] = "batch"
    """Strong and weak steps by the batch's mean confidence (paper) or per sample (beyond the paper)."""
    detach_teacher: bool = False
    """Stop gradients into the teacher step (paper: not detached)."""
    scale_t2: bool = False
    """Multiply the term by a^2, as Hinton's distillation does (paper: no)."""

    def __post_init__(self) -> None:
        _check_choices(self, "loss.strong_weak")
        _require(
            0.0 < self.temperature < math.inf,
            f"loss.strong_weak.temperature must be finite and > 0, got {self.temperature}",
        )
        _require(0.0 <= self.weight < math.inf, f"loss.strong_weak.weight must be finite and >= 0, got {self.weight}")


BUILTIN_LOSSES = ("ce", "ls", "tet", "tks", "strong_weak")
"""The losses tks registers itself (``tks.losses``), for ``tks train --help`` without importing torch."""


@dataclass(frozen=True)
class LossConfig:
    """The training loss: ``name`` picks it, the section of that name holds its options.

    ``tks.losses.Criterion`` turns it into a callable. The sections of the other losses are kept (with their
    defaults) so that switching ``loss.name`` alone switches the loss.
    """

    name: str = "tks"
    """A registered loss (``tks.losses.list_losses()``): ``ce``: mean CE; ``ls``: label smoothing; ``tet``: TET;
    ``tks``: CE + Temporal Knowledge Sharing; ``strong_weak``: CE + label-free distillation between the strongest
    and weakest steps; or a loss of your own (``tks.register_loss``)."""
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    """The options of a loss of your own, passed to its function by name (the built-ins read their section)."""
    ls: LabelSmoothingOptions = field(default_factory=LabelSmoothingOptions)
    """Options of ``name: ls``."""
    tet: TETOptions = field(default_factory=TETOptions)
    """Options of ``name: tet``."""
    tks: TKSOptions = field(default_factory=TKSOptions)
    """Options of ``name: tks``."""
    strong_weak: StrongWeakOptions = field(default_factory=StrongWeakOptions)
    """Options of ``name: strong_weak``."""


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule (docs/reference.md §5.1)."""

    name: Literal["adamw", "adam"] = "adamw"
    """Optimizer; weight decay applies to weight tensors (ndim > 1) only, as timm's ``create_optimizer``."""
    lr: float = 5e-3
    """Peak learning rate (used as given: no batch-size scaling)."""
    weight_decay: float = 0.01
    """Weight decay of the weight tensors."""
    epochs: int = 15
    """Number of epochs."""
    warmup_epochs: int = 1
    """Linear warmup from ``warmup_lr`` over this many epochs, then cosine to ``min_lr``."""
    warmup_lr: float = 1e-6
    """Learning rate of epoch 0 when warming up."""
    min_lr: float = 1e-5
    """Floor of the cosine schedule."""
    accumulate: int = 1
    """Gradient accumulation: step the optimizer every this many batches (effective batch = batch_size x this)."""
    linear_scaling: bool = False
    """Scale lr by (batch_size x world size x accumulate) / 1024, as the official code does unannounced."""

    def __post_init__(self) -> None:
        _require(self.lr > 0.0, f"optim.lr must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0.0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.epochs >= 1, f"optim.epochs must be >= 1, got {self.epochs}")
        _require(
            0 <= self.warmup_epochs <= self.epochs,
            f"optim.warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}",
        )
        _require(self.warmup_lr >= 0.0 and self.min_lr >= 0.0, "optim.warmup_lr and optim.min_lr must be >= 0")
        _require(self.accumulate >= 1, f"optim.accumulate must be >= 1, got {self.accumulate}")


MAX_NAME_BYTES = 200
"""The longest ``run.name`` (bytes of UTF-8), leaving room for the time stamp in a 255-byte folder name."""


@dataclass(frozen=True)
class RunConfig:
    """Where and how a run executes."""

    name: str = "digits"
    """Run name; the run folder is ``<out_dir>/<name>-<time>``."""
    seed: int = 0
    """Seed of every random generator."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    out_dir: str = "runs"
    """Parent folder of the run folders."""
    progress: bool = True
    """Show a progress bar per epoch."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast of the forward pass: ``bf16`` (CPU with AVX-512/AMX, or CUDA), ``fp16`` (CUDA, with gradient
    scaling); losses and weights stay fp32."""
    compile: bool = False
    """Run the model through ``torch.compile``."""
    channels_last: bool = False
    """Keep the model, static input images and conv activations in channels-last memory layout (faster convolutions
    on recent GPUs, and on CPUs with oneDNN: 1.45x for spiking_convnet on an AMD EPYC)."""
    deterministic: bool = False
    """Use only deterministic algorithms, so that a run (and a resumed run) repeats bit for bit."""
    tensorboard: bool = False
    """Also write TensorBoard scalars to ``<run folder>/tensorboard``."""
    tracker: Literal["none", "mlflow"] = "none"
    """Also send the run to an experiment tracker: ``mlflow`` (the ``mlflow`` extra; ``tks.tracking`` says where
    to, by MLflow's ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME``)."""
    plugins: tuple[str, ...] = ()
    """Modules or ``.py`` files to import first, which register models, datasets or losses (``tks.plugins``)."""
    select_on: Literal["val", "test"] | None = None
    """The set whose top-1 chooses the best epoch (``best.pt`` and the ``selected`` metrics): ``val`` (needs
    ``data.val_size``) or ``test`` (the official code's choice, optimistic); None: ``val`` when ``data.val_size`` is
    set, else ``test``."""

    def __post_init__(self) -> None:
        _require(
            re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
            f"run.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}",
        )
        _require(
            bool(self.name) and not set(self.name) & {"/", "\0"},
            f"run.name must be a non-empty name without '/' or NUL, got {self.name!r}",
        )
        # the run folder is <name>-YYYYmmdd-HHMMSS[-N]: keep it within the usual 255-byte limit of a file name
        _require(
            len(self.name.encode()) <= MAX_NAME_BYTES,
            f"run.name is {len(self.name.encode())} bytes long; at most {MAX_NAME_BYTES} fit in a folder name",
        )
        _require(0 <= self.seed < 2**32, f"run.seed must be in [0, 2^32), got {self.seed}")


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        _require(
            self.run.select_on != "val" or self.data.val_size is not None,
            "run.select_on: val needs a validation split: set data.val_size (e.g. 5000 images held out of the "
            "training set), or choose on the test set with run.select_on: test",
        )

    @property
    def select_on(self) -> Literal["val", "test"]:
        """The set that chooses the best epoch: ``run.select_on``, or by default ``val`` when there is one."""
        if self.run.select_on is not None:
            return self.run.select_on
        return "val" if self.data.val_size is not None else "test"
