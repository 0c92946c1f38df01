"""Registries: names to the models, datasets and losses a config can ask for, filled by decorators.

The built-ins register themselves with the same public decorators a user's code uses (``tks.register_model``,
``tks.register_dataset``, ``tks.register_loss``), as timm's ``@register_model`` does; nothing private is part of
the way in. A registry is a read-only mapping; an unknown name is one ``UnknownNameError`` that lists the choices.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from tks.errors import OptionError, TKSError, UnknownNameError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., object])


class RegistryError(TKSError, ValueError):
    """A name registered twice for different things, or a name that cannot be one."""


def defined_at(obj: object) -> str:
    """Where a function or class was defined, for messages: ``module.qualname``."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _origin(obj: object) -> tuple[str, str | None]:
    """What identifies code across imports of one file: its qualified name and its module's file."""
    module = sys.modules.get(getattr(obj, "__module__", ""))
    return defined_at(obj), getattr(module, "__file__", None)


class Registry(Mapping[str, T], Generic[T]):
    """Names to entries of one kind (``what``: "model", "dataset", "loss").

    Registering the same entry twice under one name does nothing (a plugin module imported again); registering
    another one under a taken name is a ``RegistryError`` naming both, so that a plugin cannot silently replace a
    built-in.
    """

    def __init__(self, what: str, source: Callable[[T], object]) -> None:
        """An empty registry.

        Args:
            what: the kind, for messages.
            source: the function or class an entry was made from (two entries from one source are the same).
        """
        self.what = what
        self._source = source
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        """Register ``entry`` under ``name``."""
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise RegistryError(f"a {self.what} name must be a non-empty string, without spaces around it: {name!r}")
        if name in self._entries:
            old, new = self._source(self._entries[name]), self._source(entry)
            if _origin(old) == _origin(new):
                self._entries[name] = entry  # the same code, imported again
                return
            raise RegistryError(
                f"{self.what} {name!r} is already registered by {defined_at(old)}; {defined_at(new)} needs another name"
            )
        self._entries[name] = entry

    def decorator(self, name: str, make_entry: Callable[[F], T]) -> Callable[[F], F]:
        """A decorator registering ``make_entry(f)`` under ``name`` and returning ``f`` unchanged."""

        def decorate(function: F) -> F:
            self.add(name, make_entry(function))
            return function

        return decorate

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.what, name, sorted(self._entries)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(sorted(self._entries))})"


def parameters(function: Callable[..., object]) -> dict[str, inspect.Parameter]:
    """The named parameters of a function (or class), without ``self``."""
    return dict(inspect.signature(function).parameters)


def takes_any(function: Callable[..., object]) -> bool:
    """Whether a function accepts any keyword (``**kwargs``)."""
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters(function).values())


def check_options(what: str, function: Callable[..., object], given: Iterable[str], allowed: Sequence[str]) -> None:
    """Refuse options a registered function does not take, in one line listing those it does.

    Args:
        what: the thing, for the message, e.g. ``"model 'vgg_snn'"``.
        function: the registered function (one with ``**kwargs`` takes anything).
        given: the option names a config gives.
        allowed: the option names the function takes.

    Raises:
        OptionError: naming the unknown options, the function and its options.
    """
    unknown = sorted(set(given) - set(allowed))
    if unknown and not takes_any(function):
        takes = ", ".join(allowed) or "no options"
        raise OptionError(f"{what} has no option {', '.join(unknown)} ({defined_at(function)} takes: {takes})")
