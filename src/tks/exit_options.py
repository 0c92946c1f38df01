"""The choices of ``tks calibrate`` (``CalibrationOptions``) and the names of exit rules and risks.

Like ``tks.eval_options``, this module imports neither torch nor the CLI: ``tks --help`` lists the choices from
here, and ``tks.anytime`` checks its arguments with ``check_rule_options``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tks.config import ConfigError

Rule = Literal["confidence", "margin"]
Risk = Literal["disagreement", "accuracy_drop"]
RULES: tuple[str, ...] = ("confidence", "margin")
"""Scores of the running-mean softmax a rule thresholds: its largest probability, or its lead over the second."""
RISKS: tuple[str, ...] = ("disagreement", "accuracy_drop")
"""Risks a rule bounds: the early answer differs from the answer at T; it is wrong where the answer at T is right."""


def check_rule_options(rule: str, risk: str, epsilon: float, delta: float) -> None:
    """Refuse an unknown rule or risk, or an epsilon or delta outside (0, 1), in one line."""
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if risk not in RISKS:
        raise ConfigError(f"risk must be one of {', '.join(RISKS)}, got {risk!r}")
    for name, value in (("epsilon (--risk)", epsilon), ("delta (--delta)", delta)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{name} must be in (0, 1), got {value}")


@dataclass(frozen=True)
class CalibrationOptions:
    """The choices of ``tks calibrate``.

    Attributes:
        epsilon: the bound on the risk (``--risk``), e.g. 0.01.
        delta: the probability that the bound fails (``--delta``).
        rule: the score thresholded: ``confidence`` or ``margin`` (``tks.anytime``).
        risk: ``disagreement`` with the answer at T, or ``accuracy_drop`` against the labels (``--risk-kind``).
        split: ``val`` (the run's validation split), ``train`` (the images trained on: no guarantee, warned), or
            another split name the dataset's builder takes (a plugin's ``calibration`` split); never ``test``.
        data_root: the dataset folder, if it moved since training.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    epsilon: float = 0.01
    delta: float = 0.05
    rule: Rule = "confidence"
    risk: Risk = "disagreement"
    split: str = "val"
    data_root: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        check_rule_options(self.rule, self.risk, self.epsilon, self.delta)
        if self.split == "test":
            raise ConfigError(
                "calibrating on the test set would promise nothing about it: use the validation split (data.val_size) "
                "or another held-out split"
            )
