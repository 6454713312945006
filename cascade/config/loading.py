"""Loading a config: a YAML file plus `key=value` overrides -> a checked config dataclass.

A config file is a YAML mapping whose sections mirror the dataclasses (cascade.config.sections, .stages,
.one_shot). Unknown keys, values of the wrong type and impossible values are rejected with a one-line
`ConfigError` that names the file and the dotted key at fault. Command-line overrides look like
`train.max_steps=200` and are parsed with `yaml.safe_load`, so `model.channel_mult=[1,2,2]` and
`data.random_flip=false` work. YAML is only ever read with `safe_load`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ConfigError
from .checks import Invalid


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] = ()) -> Any:
    """Build `cls` from a YAML file plus `key=value` overrides, validating everything."""
    where = str(path) if path else "<defaults>"
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({_one_line(e)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.max_steps=100")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        _set_dotted(raw, key.strip(), parsed, where=f"override {item!r}")
    return _build(cls, raw, prefix="", where=where)


def from_dict(cls: type, raw: dict, where: str) -> Any:
    """`cls` from a mapping (e.g. a section saved in stage.json), checked like a file: `where` names it in errors."""
    return _build(cls, raw, prefix="", where=where)


def to_dict(config: Any) -> dict:
    """A plain dict (YAML/JSON-serialisable) of a config dataclass."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _set_dotted(tree: dict, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str, where: str, base: Any = None) -> Any:
    """`cls` from `raw`, on top of `base` (default `cls()`): keys absent from `raw` keep the values of
    `base`, so a section whose defaults come from its parent (e.g. an SR stage's `model` with
    cond_channels=3) keeps them when one of its keys is set."""
    name = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{name}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{prefix}{unknown[0]}' (valid keys in '{name}': {', '.join(sorted(fields))})")
    base = base if base is not None else cls()
    kwargs = {}
    for key, value in raw.items():
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}", where, getattr(base, key))
    obj = dataclasses.replace(base, **kwargs)
    try:
        obj.validate()
    except Invalid as e:
        raise ConfigError(f"{where}: {prefix}{e.key}={e.value!r} {e.reason}") from None
    return obj


def _coerce(tp: Any, value: Any, key: str, where: str, default: Any = None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, prefix=key + ".", where=where,
                      base=default if dataclasses.is_dataclass(default) else None)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, where, default)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key}={value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key}={value!r} must be a list, e.g. [1, 2]")
        return [_coerce(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key}={value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key}={value!r} must be an integer")
        return value
    if tp is float:
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept any numeric spelling.
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {key}={value!r} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key}={value!r} must be a number") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key}={value!r} must be a string")
        return value
    return value


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())
