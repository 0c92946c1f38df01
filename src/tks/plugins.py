"""Plugins: a user's own code that registers models, datasets and losses, loaded by every command that needs it.

A plugin is a Python module that calls ``tks.register_model`` / ``register_dataset`` / ``register_loss`` when it is
imported. It is named, in ``run.plugins`` of a config or by ``--plugin`` on the command line, as either

* a module name, ``my_project.snn`` (installed, on ``PYTHONPATH``, or found in the current folder), or
* a path, ``path/to/my_snn.py`` or a package folder ``path/to/my_project/``: its folder goes on ``sys.path`` and
  it is imported under its own name, so that it can import its neighbours;

and an installed package can offer plugins through the entry-point group ``tks.plugins``, which every command
loads. A run records what it loaded: ``run.plugins`` in its ``config.yaml`` (paths made absolute), and in
``provenance.json`` each plugin's module, file name, SHA-256 and version; ``tks eval``, ``tks export`` and
``tks train --resume`` of the run folder load them again without being told, and say so when a file changed.
``tks compare``, ``plot`` and ``report`` read run files only and need no plugin.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from tks.errors import TKSError, TKSWarning, short_message

ENTRY_POINT_GROUP = "tks.plugins"


class PluginError(TKSError):
    """A plugin that cannot be found or fails while it is imported."""


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin, as a run records it."""

    spec: str
    """How a config names it: the module name, or the absolute path of its file or package folder."""
    module: str
    """The imported module's name."""
    file: str | None
    """The module's file name (no folder: provenance records no paths)."""
    sha256: str | None
    """Of the module's file (for a package, of its ``__init__.py``)."""
    version: str | None
    """Of the installed distribution the module belongs to, if any."""

    def as_record(self) -> dict[str, Any]:
        """For ``provenance.json``."""
        return asdict(self)


def _is_path(spec: str) -> bool:
    return spec.endswith((".py", "/")) or "/" in spec or Path(spec).is_dir()


def _digest(file: str | None) -> str | None:
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest() if file else None
    except OSError:
        return None


def _version(module: str) -> str | None:
    for dist in metadata.packages_distributions().get(module.partition(".")[0], []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _import(name: str, spec: str) -> ModuleType:
    """Import ``name`` for the plugin ``spec``; any failure is one ``PluginError`` line."""
    try:
        return importlib.import_module(name)
    except TKSError as exc:  # e.g. a name registered twice: already one clear line
        raise PluginError(f"plugin {spec!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin is user code: whatever it raises is reported the same way
        raise PluginError(f"plugin {spec!r} failed to load: {type(exc).__name__}: {short_message(exc)}") from None


def _import_path(spec: str) -> tuple[ModuleType, str]:
    """A plugin given by path: its folder on ``sys.path``, then imported under its own name."""
    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        if not (path / "__init__.py").is_file():
            raise PluginError(f"plugin {spec!r}: {path} is a folder without __init__.py, not a package")
        expected = path / "__init__.py"
    elif path.suffix == ".py" and path.is_file():
        expected = path
    else:
        raise PluginError(f"plugin {spec!r}: no such file or package folder ({path})")
    name = path.name if path.is_dir() else path.stem
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = _import(name, spec)
    if Path(getattr(module, "__file__", "") or "").resolve() != expected:
        raise PluginError(
            f"plugin {spec!r}: a module named {name!r} is already imported from {module.__file__}; rename the file"
        )
    return module, str(path) + ("/" if path.is_dir() else "")


def _importable(name: str) -> bool:
    """Whether ``import name`` would find a module (a parent package that fails to import counts as found)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
    except Exception:  # noqa: BLE001 - the parent exists but fails: importing it will report why
        return True


def _import_module(spec: str) -> tuple[ModuleType, str]:
    """A plugin given by module name; the current folder is searched too, as ``python -m`` would."""
    if _importable(spec):
        return _import(spec, spec), spec
    here = Path.cwd()
    if "." not in spec:  # a module or package in this folder: recorded by path, so any later command finds it
        for candidate in (here / f"{spec}.py", here / spec):
            if candidate.is_file() or (candidate / "__init__.py").is_file():
                return _import_path(str(candidate))
    elif (here / spec.partition(".")[0]).is_dir():
        sys.path.insert(0, str(here))
        return _import(spec, spec), spec
    raise PluginError(f"plugin {spec!r}: no module of that name is installed, on PYTHONPATH or in this folder")


_LOADED: dict[str, Plugin] = {}


def load_plugin(spec: str) -> Plugin:
    """Import one plugin (once per process) and describe it.

    Raises:
        PluginError: for a missing module or file, or any error while it is imported.
    """
    if spec in _LOADED:
        return _LOADED[spec]
    module, normal = _import_path(spec) if _is_path(spec) else _import_module(spec)
    file = getattr(module, "__file__", None)
    name = module.__name__
    plugin = Plugin(normal, name, Path(file).name if file else None, _digest(file), _version(name))
    _LOADED[spec] = _LOADED[normal] = plugin
    return plugin


@cache
def load_entry_points() -> tuple[Plugin, ...]:
    """The plugins installed packages offer in the entry-point group ``tks.plugins``, each loaded once."""
    plugins = []
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001 - an installed plugin is user code too
            raise PluginError(
                f"plugin {point.name!r} (entry point {point.value} of {point.dist.name if point.dist else '?'}) "
                f"failed to load: {type(exc).__name__}: {short_message(exc)}"
            ) from None
        module = point.value.partition(":")[0]
        file = getattr(sys.modules.get(module), "__file__", None)
        plugins.append(Plugin(f"entry point {point.name}", module, file and Path(file).name, _digest(file), None))
    return tuple(plugins)


def load_plugins(specs: Iterable[str]) -> list[Plugin]:
    """The installed entry-point plugins, then ``specs`` in order (module names or paths), each loaded once.

    Returns:
        The plugins named by ``specs`` (what a run records in ``run.plugins``), entry points left out.

    Raises:
        PluginError: for the first plugin that cannot be loaded.
    """
    load_entry_points()
    return [load_plugin(spec) for spec in specs]


def check_recorded(plugins: Sequence[Plugin], recorded: Sequence[dict[str, Any]]) -> None:
    """Warn (``TKSWarning``) for each plugin whose file differs from the one a run recorded when it trained."""
    then = {r.get("spec"): r.get("sha256") for r in recorded if isinstance(r, dict)}
    for plugin in plugins:
        before = then.get(plugin.spec)
        if before and plugin.sha256 and before != plugin.sha256:
            warnings.warn(
                f"plugin {plugin.spec!r} has changed since this run was trained ({plugin.file}: sha256 "
                f"{before[:12]} then, {plugin.sha256[:12]} now)",
                TKSWarning,
                stacklevel=2,
            )


def load_run_plugins(specs: Sequence[str], run_dir: Path) -> list[Plugin]:
    """The plugins a run folder's config names, loaded again, with a warning for each file changed since training.

    Raises:
        PluginError: for a plugin that cannot be loaded (moved, uninstalled, failing).
    """
    from tks.provenance import read_sessions  # imports torch: only when a run folder is read

    plugins = load_plugins(specs)
    sessions = read_sessions(run_dir)
    check_recorded(plugins, sessions[-1].get("plugins", []) if sessions else [])
    return plugins
