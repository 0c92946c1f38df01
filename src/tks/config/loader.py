"""The strict YAML loader: config files and ``--set`` overrides into ``Config``, and ``Config`` back into YAML.

Every key is checked: an unknown key is an error with the closest valid name, a key given twice is an error (PyYAML
would let the last one win silently), values are coerced to the declared type (PyYAML reads ``1e-3`` as a string;
it becomes a float here; floats must be finite), ``Literal`` fields accept only their choices and each section
validates its ranges (``tks.config.schema``). ``--set section.key=value`` overrides go through the same path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from tks.config.schema import Config, ConfigError, check_choice
from tks.errors import TKSWarning

MOVED_KEYS = {
    "model.connect": "model.options.connect",
    "model.stem": "model.options.stem",
    "loss.smoothing": "loss.ls.smoothing",
    "loss.tet_lambda": "loss.tet.lamb",
    "loss.tet_phi": "loss.tet.phi",
    "loss.tks_smoothing": "loss.tks.smoothing",
    **{
        f"loss.{key}": f"loss.tks.{key}"
        for key in ("temperature", "alpha", "schedule", "teacher", "detach_teacher", "teacher_target", "student")
        + ("student_temperature", "teacher_source")
    },
}
"""Keys of configs written by earlier tks (each loss's options flat in ``loss``; the SEW options as fields of
``model``) and where they are now."""


def upgrade_stored(data: Mapping[str, Any]) -> dict[str, Any]:
    """A config mapping as an earlier tks stored it (a run's config.yaml, a checkpoint) in today's layout.

    Only for configs that record a finished fact: a config a user writes with an old key is an error that names
    the new key (``from_dict``).
    """
    data = dict(data)
    model = data.get("model")
    if isinstance(model, Mapping) and ("connect" in model or "stem" in model):
        model = dict(model)
        moved = {key: model.pop(key) for key in ("connect", "stem") if key in model}
        model["options"] = {**{k: v for k, v in moved.items() if v is not None}, **dict(model.get("options") or {})}
        data["model"] = model
    loss = data.get("loss")
    if isinstance(loss, Mapping):
        loss = {k: dict(v) if isinstance(v, Mapping) else v for k, v in loss.items()}
        for old, new in MOVED_KEYS.items():
            if not old.startswith("loss."):
                continue
            key, (section, leaf) = old.split(".")[1], new.split(".")[1:]
            if key in loss:
                section_data = loss.setdefault(section, {})
                if isinstance(section_data, dict):
                    section_data.setdefault(leaf, loss.pop(key))
        data["loss"] = loss
    return data


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), *, stored: bool = False) -> Config:
    """Read a YAML config strictly and apply ``section.key=value`` overrides.

    Args:
        path: YAML file; ``None`` starts from the defaults of ``Config()``.
        overrides: strings like ``"loss.tks.temperature=5"``; the value is parsed as YAML.
        stored: the file is a run's ``config.yaml``, written by possibly an earlier tks: ``upgrade_stored`` it.

    Raises:
        ConfigError: for a missing or malformed file, an unknown key, a value of the wrong type or out of range.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path} is not a UTF-8 text file (byte {exc.start} is {exc.object[exc.start]:#04x}); a config is YAML"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None
        loaded = parse_yaml(text, str(path))
        if loaded is None:
            warnings.warn(f"{path} is empty: the defaults are used", TKSWarning, stacklevel=2)
        elif not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, got {type(loaded).__name__}")
        data = upgrade_stored(loaded) if stored and loaded else (loaded or {})
    for item in overrides:
        _apply_override(data, item)
    return from_dict(Config, data)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (plain PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        try:
            if key in first_line:
                raise ConfigError(f"key {key!r} appears twice (lines {first_line[key]} and {line}); keep one")
        except TypeError:  # an unhashable key: the base constructor reports it
            continue
        first_line[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text as Python data, one ``ConfigError`` naming ``where`` for anything malformed."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else None  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError:
        value = raw  # not YAML: the raw text, as a string value
    except ConfigError as exc:
        raise ConfigError(f"override {item!r}: {exc}") from None
    node = data
    *parents, leaf = key.strip().split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a nested mapping, strictly (see the module docstring)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            if f"{prefix}{key}" in MOVED_KEYS:
                hint = f" (it is now '{MOVED_KEYS[f'{prefix}{key}']}')"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}; valid keys: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is Literal:
        check_choice(key, value, args)
        return value
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key} must be a mapping of names to values, got {value!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)  # PyYAML reads "1e-3" (no dot) as a string
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"config field {key} has unsupported type {tp}")
    raise ConfigError(f"{key} must be {tp.__name__}, got {value!r}")


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain nested dicts and lists: YAML-, JSON- and ``weights_only``-safe."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(config)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys (``{"loss": {"name": "ce"}}`` -> ``{"loss.name": "ce"}``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dump_config(config: Config) -> str:
    """The resolved config as YAML text, readable back by ``load_config``."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
