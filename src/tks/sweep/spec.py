"""The sweep file: a base config, a grid of overrides, extra runs, an output folder and the evaluations of each run.

``load_sweep`` reads it as strictly as ``tks.config`` reads a config (an unknown key is an error naming the closest
valid one, a key given twice is an error) and resolves every run's config with ``load_config(base, overrides)``,
so that an unknown grid key, a value of the wrong type or out of range, a run name that cannot be a folder or an
invalid ``tks eval`` argument stops the sweep before any run starts. docs/sweeps.md describes the format.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tks.config import Config, ConfigError, flatten, load_config, to_dict
from tks.config.identity import experiment_key
from tks.config.loader import parse_yaml
from tks.errors import TKSError
from tks.eval_options import EvalOptions, parse_eval_options

SWEEP_KEYS = ("base", "out_dir", "name", "grid", "runs", "eval")
"""The keys of a sweep file."""
RUN_KEYS = ("name", "set")
"""The keys of an entry of ``runs``."""
EVAL_KEYS = ("args", "when")
"""The keys of an entry of ``eval`` given as a mapping."""


class SweepError(TKSError, ValueError):
    """An invalid sweep file, or command-line options that do not fit it."""


CONFIG_KEYS = tuple(flatten(to_dict(Config())))
"""Every dotted config key, e.g. ``loss.name`` and ``loss.strong_weak.direction``."""


@dataclass(frozen=True)
class EvalStep:
    """One ``tks eval`` call made on a run's final checkpoint after training."""

    args: tuple[str, ...]
    """Its arguments after the checkpoint, e.g. ``("--steps", "1", "2")``."""
    options: EvalOptions
    """The arguments as ``tks eval`` parses them."""
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """Only for runs whose grid label or config value of each key is one of the values; () for every run."""

    def applies(self, labels: Mapping[str, str], flat: Mapping[str, Any]) -> bool:
        """Whether this call is made for a run with these grid labels and this flattened config."""
        for key, values in self.when:
            value = labels.get(key) if key in labels else flat.get(key)
            if value not in values:
                return False
        return True

    def __str__(self) -> str:
        return shlex.join(self.args) or "(the trained T)"


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep, its config resolved."""

    name: str
    """``run.name``: the run folder is ``<out_dir>/<name>-<time>``."""
    config: Config
    key: str
    """``experiment_key(config)``: how a finished or interrupted folder of this run is recognised."""
    changes: tuple[tuple[str, Any], ...]
    """The settings that differ from the base config (besides run.name and run.out_dir), for listings."""
    evals: tuple[EvalStep, ...]
    """The ``tks eval`` calls this run gets after training, in order."""
    out_dir: Path


@dataclass(frozen=True)
class Sweep:
    """A sweep file, read and resolved."""

    path: Path
    base: Config
    """The base config with the command line's ``--set`` applied: what ``changes`` are measured against."""
    base_name: str
    """How the base was given: its file, or ``inline``, or ``defaults``."""
    out_dir: Path
    runs: tuple[SweepRun, ...]


@dataclass(frozen=True)
class _Axis:
    name: str
    cells: tuple[tuple[str, dict[str, Any]], ...]
    """(label, overrides) for every value of the axis."""


def load_sweep(
    path: str | Path,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    data_root: str | Path | None = None,
) -> Sweep:
    """Read a sweep file strictly and resolve the config of every run.

    Args:
        path: the YAML sweep file; ``base`` and ``out_dir`` in it are relative to its folder.
        overrides: ``section.key=value`` strings applied to every run, after the grid (they win).
        out_dir: replaces the file's ``out_dir`` (relative to the working folder).
        data_root: the folder holding the datasets: every run's ``data.root`` becomes ``data_root/<the last
            folder of its data.root>`` (``data/cifar10`` -> ``data_root/cifar10``; unset roots stay unset).

    Raises:
        SweepError: for anything invalid in the file or in the runs it makes, in one line naming the file.
    """
    path = Path(path)
    data = _read(path)
    where = str(path)
    try:
        return _resolve(path, data, list(overrides), out_dir, data_root)
    except ConfigError as exc:
        raise SweepError(f"{where}: {exc}") from None


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path))  # config's loader: no key twice either
    except (UnicodeDecodeError, OSError) as exc:
        raise SweepError(f"{path} cannot be read as a YAML text file: {exc}") from None
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    if not isinstance(data, dict):
        raise SweepError(f"{path} must hold a mapping with keys {', '.join(SWEEP_KEYS)}")
    _check_keys(data, SWEEP_KEYS, "sweep key", f"{path}: ")
    return data


def _check_keys(data: Mapping[Any, Any], valid: Sequence[str], what: str, where: str) -> None:
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SweepError(f"{where}unknown {what} '{key}'{hint}; valid keys: {', '.join(valid)}")


def _resolve(
    path: Path, data: dict[str, Any], cli: list[str], out_dir: str | Path | None, data_root: str | Path | None
) -> Sweep:
    where = f"{path}: "
    bases = _bases(data.get("base"), path, where)
    if out_dir is None:
        if not isinstance(data.get("out_dir"), str) or not data["out_dir"]:
            raise SweepError(f"{where}out_dir is required: the folder the run folders go into (relative to the file)")
        out_dir = path.parent / data["out_dir"]
    out = Path(out_dir).resolve()
    axes = _grid(data.get("grid"), where)
    evals = _evals(data.get("eval"), axes, where)
    template = data.get("name")
    if template is not None and (not isinstance(template, str) or not template):
        raise SweepError(f"{where}name must be a text such as 'fmnist-{{method}}-s{{run.seed}}', got {template!r}")
    cells = _cells(axes, _explicit_runs(data.get("runs"), where), where)
    runs: list[SweepRun] = []
    configs = []
    for base in bases:
        try:
            config = _with_data_root(load_config(base.path, [*base.inline, *cli]), data_root)
        except ConfigError as exc:
            raise SweepError(f"{where}base {base.name}: {exc}") from None
        configs.append(config)
        context = _Context(base, config, axes, evals, template, cli, out, data_root, where)
        runs += [_run(context, labels, sets, name) for labels, sets, name in cells]
    _check_unique(runs, where)
    names = bases[0].name if len(bases) == 1 else f"{len(bases)} config files"
    return Sweep(path, configs[0], names, out, tuple(runs))


@dataclass(frozen=True)
class _Base:
    path: Path | None
    inline: list[str]
    """The overrides of an inline mapping."""
    name: str
    """How it is named in messages: its file as written, ``inline`` or ``defaults``."""


@dataclass(frozen=True)
class _Context:
    """What every run of one base shares."""

    base: _Base
    config: Config
    axes: Sequence[_Axis]
    evals: Sequence[EvalStep]
    template: str | None
    cli: list[str]
    out: Path
    data_root: str | Path | None
    where: str


def _cells(
    axes: Sequence[_Axis], explicit: list[tuple[str | None, dict[str, Any]]], where: str
) -> list[tuple[dict[str, str], dict[str, Any], str | None]]:
    """(labels, overrides, explicit name) of every run of one base: the grid's combinations, then ``runs``."""
    cells: list[tuple[dict[str, str], dict[str, Any], str | None]] = []
    if axes or not explicit:
        for combination in itertools.product(*(axis.cells for axis in axes)):
            labels, sets = {}, {}
            for axis, (label, overrides) in zip(axes, combination, strict=True):
                for key in overrides:
                    if key in sets:
                        raise SweepError(f"{where}grid axes set {key} twice (again in {axis.name}={label})")
                labels[axis.name] = label
                sets.update(overrides)
            cells.append((labels, sets, None))
    cells.extend(({}, sets, name) for name, sets in explicit)
    return cells


def _run(context: _Context, labels: dict[str, str], sets: dict[str, Any], explicit_name: str | None) -> SweepRun:
    """One run: the base, the cell's overrides and the command line's, resolved and named."""
    c = context
    described = " ".join(f"{k}={format_value(v)}" for k, v in sets.items()) or "the base config"
    if c.base.path is not None:  # {recipe}: the base file's name without .yaml
        labels = {"recipe": c.base.path.stem, **labels}
    try:
        config = load_config(c.base.path, [*c.base.inline, *_as_overrides(sets), *c.cli])
        config = _with_data_root(config, c.data_root)
    except ConfigError as exc:
        raise SweepError(f"{c.where}run with {described}: {exc}") from None
    flat = flatten(to_dict(config))
    name = explicit_name or _name(c.template, c.axes, labels, sets, flat, c.config.run.name, c.where)
    try:
        config = replace(config, run=replace(config.run, name=name, out_dir=str(c.out)))
    except ConfigError as exc:
        raise SweepError(f"{c.where}run with {described}: {exc}") from None
    flat, base_flat = flatten(to_dict(config)), flatten(to_dict(c.config))
    changes = tuple((k, v) for k, v in flat.items() if k not in ("run.name", "run.out_dir") and base_flat.get(k) != v)
    applicable = tuple(step for step in c.evals if step.applies(labels, flat))
    return SweepRun(name, config, experiment_key(config), changes, applicable, c.out)


def _with_data_root(config: Config, data_root: str | Path | None) -> Config:
    """``data.root`` moved under ``data_root`` (made absolute: runs may start elsewhere), keeping its last folder.

    Unchanged without either.
    """
    if data_root is None or config.data.root is None:
        return config
    root = Path(data_root).absolute() / Path(config.data.root).name
    return replace(config, data=replace(config.data, root=str(root)))


def _bases(value: Any, path: Path, where: str) -> list[_Base]:
    """The base configs: one file or mapping, or a list of files (the runs are every base x every grid cell)."""
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) and v for v in value):
            raise SweepError(
                f"{where}base as a list must name config files (relative to the sweep file), got {value!r}"
            )
        if len(set(value)) < len(value):
            raise SweepError(f"{where}base names a config file twice")
        return [_base(v, path, where) for v in value]
    return [_base(value, path, where)]


def _base(value: Any, path: Path, where: str) -> _Base:
    """The base config: a file, an inline mapping, or the defaults."""
    if value is None:
        return _Base(None, [], "defaults")
    if isinstance(value, str) and value:
        return _Base(path.parent / value, [], value)
    if isinstance(value, Mapping):
        return _Base(None, _as_overrides(flatten(value)), "inline")
    raise SweepError(
        f"{where}base must be a config file (relative to the sweep file), a list of them, or a mapping, got {value!r}"
    )


def _as_overrides(sets: Mapping[str, Any]) -> list[str]:
    # JSON is YAML: load_config parses each value back to exactly this value (a string "null" stays a string)
    return [f"{key}={json.dumps(value)}" for key, value in sets.items()]


def format_value(value: Any) -> str:
    """A value as a name or listing shows it: YAML's spelling for true/false/null, plain text otherwise."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _suggest_key(key: str) -> str:
    """`` (did you mean 'run.seed'?)`` for ``seed``: a config key ending in ``key``, or the closest one."""
    ending = [k for k in CONFIG_KEYS if k.rsplit(".", 1)[-1] == key]
    close = ending or difflib.get_close_matches(key, CONFIG_KEYS, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _grid(grid: Any, where: str) -> list[_Axis]:
    if grid is None:
        return []
    if not isinstance(grid, Mapping) or not grid:
        raise SweepError(f"{where}grid must be a mapping of config keys to lists of values, e.g. run.seed: [0, 1]")
    axes = []
    for key, values in grid.items():
        key = str(key)
        if isinstance(values, list) and "." in key:
            if not values:
                raise SweepError(f"{where}grid key {key} has no values")
            axes.append(_Axis(key, tuple((format_value(v), {key: v}) for v in values)))
        elif isinstance(values, Mapping) and "." not in key:
            if not values:
                raise SweepError(f"{where}grid axis {key} has no values")
            cells = []
            for label, sets in values.items():
                if sets is not None and not isinstance(sets, Mapping):
                    raise SweepError(
                        f"{where}grid axis {key}, value {label}: give the settings as a mapping, e.g. "
                        f"{label}: {{loss.name: ce}}, got {sets!r}"
                    )
                cells.append((format_value(label), flatten(sets or {})))
            axes.append(_Axis(key, tuple(cells)))
        elif "." in key:
            raise SweepError(f"{where}grid key {key} needs a list of values, e.g. {key}: [{format_value(values)}]")
        elif isinstance(values, list):
            raise SweepError(
                f"{where}grid key '{key}' is not a config key (section.key){_suggest_key(key)}; a named axis "
                "maps labels to settings instead, e.g. method: {ce: {loss.name: ce}, tks: {loss.name: tks}}"
            )
        else:
            example = f"{key}: {{a: {{loss.tks.alpha: 1}}}}"
            raise SweepError(f"{where}grid axis {key} must map labels to settings, e.g. {example}")
    return axes


def _explicit_runs(runs: Any, where: str) -> list[tuple[str | None, dict[str, Any]]]:
    if runs is None:
        return []
    if not isinstance(runs, list) or not runs:
        example = "- {name: abl-detached, set: {loss.tks.detach_teacher: true}}"
        raise SweepError(f"{where}runs must be a list of runs, e.g. {example}")
    explicit = []
    for i, run in enumerate(runs, 1):
        if not isinstance(run, Mapping):
            raise SweepError(f"{where}runs, entry {i}: must be a mapping with keys {', '.join(RUN_KEYS)}, got {run!r}")
        _check_keys(run, RUN_KEYS, "key", f"{where}runs, entry {i}: ")
        name, sets = run.get("name"), run.get("set") or {}
        if name is not None and (not isinstance(name, str) or not name):
            raise SweepError(f"{where}runs, entry {i}: name must be a text, got {name!r}")
        if not isinstance(sets, Mapping):
            raise SweepError(f"{where}runs, entry {i}: set must map config keys to values, got {sets!r}")
        explicit.append((name, flatten(sets)))
    return explicit


def _evals(entries: Any, axes: Sequence[_Axis], where: str) -> list[EvalStep]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        entries = [entries]
    axis_names = [axis.name for axis in axes]
    steps = []
    for i, entry in enumerate(entries, 1):
        at = f"{where}eval, entry {i}: "
        when: Mapping[str, Any] = {}
        if isinstance(entry, Mapping):
            _check_keys(entry, EVAL_KEYS, "key", at)
            if "args" not in entry:
                raise SweepError(f"{at}args is required, e.g. args: --steps 1 2 3 4")
            when = entry.get("when") or {}
            entry = entry["args"]
            if not isinstance(when, Mapping):
                raise SweepError(f"{at}when must map grid axes or config keys to values, e.g. when: {{run.seed: 0}}")
        if isinstance(entry, str):
            args = shlex.split(entry)
        elif isinstance(entry, list) and all(isinstance(a, str | int | float) for a in entry):
            args = [str(a) for a in entry]
        else:
            raise SweepError(f"{at}give tks eval's arguments as a text, e.g. --steps 1 2 3 4, got {entry!r}")
        try:
            options = parse_eval_options(args)  # exactly what tks eval accepts
        except ConfigError as exc:
            raise SweepError(f"{at}tks eval {shlex.join(args)}: {exc}") from None
        for key in when:
            if key not in axis_names and key not in CONFIG_KEYS:
                choices = [*axis_names, *CONFIG_KEYS]
                close = difflib.get_close_matches(str(key), choices, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise SweepError(f"{at}when: '{key}' is neither a grid axis nor a config key{hint}")
        conditions = tuple(
            (str(k), tuple(format_value(x) if k in axis_names else x for x in (v if isinstance(v, list) else [v])))
            for k, v in when.items()
        )
        steps.append(EvalStep(tuple(args), options, conditions))
    return steps


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _name(
    template: str | None,
    axes: Sequence[_Axis],
    labels: Mapping[str, str],
    sets: Mapping[str, Any],
    flat: Mapping[str, Any],
    base_name: str,
    where: str,
) -> str:
    """The run name: the template with each ``{axis}`` or ``{config.key}`` filled in, or a name made of the values."""
    if template is None:
        if axes:  # the label of every axis that varies; a config key's with its leaf name: alpha=0.3
            parts = [
                f"{axis.name.rsplit('.', 1)[-1]}={labels[axis.name]}" if "." in axis.name else labels[axis.name]
                for axis in axes
                if len(axis.cells) > 1
            ]
        else:
            parts = [f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in sets.items()]
        return "-".join([base_name, *parts])

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in labels:
            return labels[key]
        if key in flat:
            return format_value(flat[key])
        valid = [axis.name for axis in axes if "." not in axis.name]
        close = difflib.get_close_matches(key, [*valid, *CONFIG_KEYS], n=1)
        hint = f" (did you mean '{{{close[0]}}}'?)" if close else ""
        grid = f"a grid axis ({', '.join(valid)}) or " if valid else ""
        raise SweepError(f"{where}name {template!r}: {{{key}}} is not {grid}a config key{hint}")

    return _PLACEHOLDER.sub(fill, template)


def _check_unique(runs: Sequence[SweepRun], where: str) -> None:
    names: dict[str, SweepRun] = {}
    keys: dict[str, SweepRun] = {}
    for run in runs:
        if run.name in names:
            raise SweepError(
                f"{where}two runs are named {run.name}: give the name template a placeholder for every grid axis "
                "that varies, e.g. name: digits-{loss.name}-s{run.seed}"
            )
        if run.key in keys:
            other = keys[run.key]
            raise SweepError(
                f"{where}runs {other.name} and {run.name} are the same experiment (their configs differ only in "
                "settings that say where or how a run executes): drop one"
            )
        names[run.name], keys[run.key] = run, run
