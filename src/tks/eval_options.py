"""What ``tks eval`` measures, as one typed object that the CLI, the sweep and Python callers build alike.

``EvalOptions`` holds the choices and checks them; ``add_eval_arguments`` is their text form on a command line,
and ``parse_eval_options`` turns such text (a sweep file's ``eval`` entry) into the object. This module imports
neither torch nor the CLI, so that the sweep can read its eval entries without importing either.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn

from tks.config import ConfigError

EVENT_STEPS = ("truncate", "rebin")
"""How event data are evaluated at a T other than the trained one (``EvalOptions.event_steps``)."""


@dataclass(frozen=True)
class EvalOptions:
    """The measurements of one evaluation of a checkpoint (``tks.evaluate_checkpoint``, ``tks eval``).

    Attributes:
        steps: the values of T (None: the T it was trained with).
        data_root: overrides the dataset folder stored in the checkpoint's config.
        device: ``auto``, ``cpu`` or ``cuda``.
        features: also save the time-averaged penultimate features (for t-SNE) at the trained T.
        activity: also measure firing rates, operations and energy at the trained T (``tks.activity``).
        early_exit: also sweep these confidence thresholds of anytime inference at the largest T; ``()`` the
            default sweep, None none.
        event_steps: event data at a T other than the trained one: ``truncate`` runs the first T of the trained
            frames; ``rebin`` bins the events into T frames.
        exit_rule: also apply a calibrated early-exit rule on the test set (``tks calibrate``): a rule file, or
            ``""`` for the rule stored in the checkpoint; None none. With ``activity``, its energy is measured too.

    Raises:
        ConfigError: a T below 1, a threshold outside [0, 1] or another ``event_steps``.
    """

    steps: tuple[int, ...] | None = None
    data_root: str | None = None
    device: str = "auto"
    features: bool = False
    activity: bool = False
    early_exit: tuple[float, ...] | None = None
    event_steps: Literal["truncate", "rebin"] = "truncate"
    exit_rule: str | None = None

    def __post_init__(self) -> None:
        # Lists from a caller become tuples, so that the object stays hashable and unchanged.
        if self.steps is not None:
            object.__setattr__(self, "steps", tuple(self.steps))
            if any(t < 1 for t in self.steps):
                raise ConfigError(f"steps must all be >= 1 (tks eval --steps), got {list(self.steps)}")
        if self.early_exit is not None:
            object.__setattr__(self, "early_exit", tuple(self.early_exit))
            if any(not 0.0 <= th <= 1.0 for th in self.early_exit):
                got = list(self.early_exit)
                raise ConfigError(f"early-exit thresholds must be in [0, 1] (tks eval --early-exit), got {got}")
        if self.event_steps not in EVENT_STEPS:
            got = self.event_steps
            raise ConfigError(f"event_steps must be 'truncate' or 'rebin' (tks eval --event-steps), got {got!r}")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> EvalOptions:
        """The options that ``add_eval_arguments`` parsed."""
        return cls(
            steps=args.steps,
            data_root=args.data_root,
            device=args.device,
            features=args.features,
            activity=args.activity,
            early_exit=args.early_exit,
            event_steps=args.event_steps,
            exit_rule=args.exit_rule,
        )


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``tks eval`` (after the checkpoint) as command-line arguments."""
    p.add_argument("--steps", type=int, nargs="+", default=None, metavar="T", help="time steps (default: trained T)")
    p.add_argument("--data-root", default=None, help="dataset folder, if it moved since training")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--features", action="store_true", help="save penultimate features to features.npz (t-SNE)")
    p.add_argument("--activity", action="store_true", help="firing rates, operations and energy at the trained T")
    p.add_argument(
        "--early-exit",
        type=float,
        nargs="*",
        default=None,
        metavar="THRESHOLD",
        help="anytime inference swept over confidence thresholds (default sweep when none given)",
    )
    p.add_argument(
        "--exit-rule",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="apply the early-exit rule of tks calibrate on the test set (default: the one in the checkpoint)",
    )
    p.add_argument(
        "--event-steps",
        choices=EVENT_STEPS,
        default="truncate",
        help="event data at another T: the first T trained frames, or the events re-binned into T frames",
    )


class _RaisingParser(argparse.ArgumentParser):
    """A parser that raises ``ConfigError`` instead of printing its usage and exiting."""

    def error(self, message: str) -> NoReturn:  # noqa: D102
        raise ConfigError(message)


def parse_eval_options(args: Sequence[str]) -> EvalOptions:
    """``tks eval``'s options from its arguments after the checkpoint, e.g. ``["--steps", "1", "2"]``.

    Raises:
        ConfigError: an argument ``tks eval`` does not take, or a value ``EvalOptions`` refuses (one line).
    """
    parser = _RaisingParser(prog="tks eval", add_help=False)
    add_eval_arguments(parser)
    return EvalOptions.from_arguments(parser.parse_args(list(args)))
