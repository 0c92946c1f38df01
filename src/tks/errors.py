"""Errors that reach the user as one clear line from the command line (no traceback)."""

from __future__ import annotations

import difflib
import os
import sys
from typing import Any


class TKSError(Exception):
    """Base of every error caused by user input: a bad config value, a missing file, an unknown name."""


class TKSWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI shows it as one line."""


class UnknownNameError(TKSError, KeyError):
    """A name not in a registry; the message lists the choices and the closest match."""

    def __init__(self, what: str, name: str, choices: list[str]) -> None:
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown {what} {name!r}{hint}; choose one of: {', '.join(choices)}")

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError would quote the message


class OptionError(TKSError, ValueError):
    """An option that the chosen component does not take."""


class DeviceError(TKSError, ValueError):
    """A device that cannot be used here (unknown, or a GPU this machine does not have)."""


class StepsError(TKSError, ValueError):
    """A model asked to run at a number of time steps it cannot handle."""


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` that names the first caller outside tks and torch.

    Called in the function that warns: a warning then points at the user's line however many layers of tks (and of
    ``torch.nn.Module.__call__``, which differ between torch versions) lie between.
    """
    inside = (
        os.path.dirname(__file__),
        os.path.dirname(os.path.dirname(sys.modules["torch"].__file__)) + os.sep + "torch",
    )
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def short_message(exc: BaseException) -> str:
    """An exception's first two non-empty lines, joined, at most 300 characters: the gist of a library's error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300]


def check_per_step(logits: Any, target: Any) -> None:
    """Raise a clear ``ValueError`` unless ``logits`` is ``[T, B, K]`` and ``target`` is ``[B]``."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be [T, B, K], got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[1:2]:
        hint = ""
        if target.dim() == 1 and target.shape[0] == logits.shape[0]:  # [B, T, K], as batch-first code returns
            hint = "; these logits look batch-first [B, T, K]: tks is time-major, pass logits.transpose(0, 1)"
        raise ValueError(f"target must be [B] = [{logits.shape[1]}], got shape {tuple(target.shape)}{hint}")


def check_logits(logits: Any) -> None:
    """Raise a clear ``ValueError`` unless ``logits`` is ``[T, B, K]`` with T, B and K all at least 1."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be [T, B, K], got shape {tuple(logits.shape)}")
    if 0 in logits.shape:
        raise ValueError(f"logits [T, B, K] need at least one step, sample and class, got shape {tuple(logits.shape)}")


def check_loss_inputs(logits: Any, target: Any) -> None:
    """``check_per_step`` and ``check_logits``, and class indices in ``[0, K)``, as cross-entropy demands.

    Without the range check a loss built from masks (TKS's correct steps) would give an out-of-range sample the
    uniform teacher and return a number, where ``F.cross_entropy`` raises. One device sync per call.
    """
    check_per_step(logits, target)
    check_logits(logits)
    classes = logits.shape[-1]
    outside = (target < 0) | (target >= classes)
    if bool(outside.any()):
        first = target[outside][0].item()
        raise ValueError(f"target holds class index {first}, outside [0, {classes}) for logits of {classes} classes")
