"""The one check of configuration values read from files (TOML, JSON): typed fields.

A config dataclass's annotations are its schema. :func:`check_fields` holds a mapping against
them before the dataclass is built, so what Python itself would let through never reaches a
run: ``true`` for an int (``True == 1``), ``33.7`` for an int, ``"no"`` for a bool (a non-empty
string is truthy), ``1e400`` (infinity) or NaN for a float, a table for a number, a key nobody
reads. Each mistake is one :class:`~deeplabcli.errors.ConfigError` line that names where the
value came from, its key, and what the key takes::

    config file run.toml: train.aux_loss must be true or false, not "no". Give true or false,
    without quotes (default false).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

_NUMBER = (int, float)


def check_fields(
    cls: type, data: Mapping[str, Any], *, where: str | None = None, prefix: str = ""
) -> dict[str, Any]:
    """``data`` checked against the fields of the dataclass ``cls``.

    Returns a copy in which ints given for float fields are floats and mappings given for
    dataclass fields (``ModelConfig.preprocessing``) are checked the same way, one level down.
    Raises :class:`ConfigError` for a key that is not a field (listing the fields) and for a
    value of the wrong type: bools are not ints, ints are not bools, floats must be finite,
    lists must hold items of their element type (``tuple[int, ...]``) or exactly as many as a
    fixed tuple has (``tuple[float, float, float]``). ``where`` (e.g. ``config file run.toml``)
    starts every message; ``prefix`` is put before each key (``train.``, ``preprocessing.``).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown keys in {where or cls.__name__}: {', '.join(prefix + k for k in unknown)}. "
            f"Use: {', '.join(fields)}."
        )
    checked: dict[str, Any] = {}
    for key, value in data.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
            checked[key] = check_fields(kind, value, where=where, prefix=f"{prefix}{key}.")
            continue
        if not _fits(kind, value):
            raise ConfigError(_message(fields[key], kind, value, where, prefix + key))
        checked[key] = _widen(kind, value)
    return checked


def _fits(kind: Any, value: Any) -> bool:
    """True if ``value`` (as parsed from TOML or JSON) is a valid ``kind``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(arg, value) for arg in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(args[0], item) for item in value)
        return len(value) == len(args) and all(
            _fits(a, v) for a, v in zip(args, value, strict=True)
        )
    if isinstance(kind, type):
        return isinstance(value, kind)
    raise TypeError(f"check_fields does not know the annotation {kind!r}")


def _widen(kind: Any, value: Any) -> Any:
    """Ints given for floats become floats (also inside lists); everything else as it is."""
    if kind is float and isinstance(value, int):
        return float(value)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        fitting = [arg for arg in typing.get_args(kind) if _fits(arg, value)]
        return _widen(fitting[0], value)
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(kind)
        items = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        return [_widen(a, v) for a, v in zip(items, value, strict=True)]
    return value


def describe(kind: Any) -> str:
    """What a value of ``kind`` is, in words: ``a whole number``, ``true or false`` ..."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args if arg is not type(None))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {len(args)} values"
    names = {bool: "true or false", int: "a whole number", float: "a finite number",
             str: "a string"}  # fmt: skip
    if kind in names:
        return names[kind]
    return f"a table of {kind.__name__} settings" if isinstance(kind, type) else str(kind)


def _plural(kind: Any) -> str:
    return {bool: "true/false values", int: "whole numbers", float: "finite numbers",
            str: "strings"}.get(kind, describe(kind))  # fmt: skip


def show(value: Any) -> str:
    """``value`` written as in a TOML or JSON file: ``true``, ``"no"``, ``33.7``, ``inf``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "a table"
    return repr(value)


def _message(field: dataclasses.Field, kind: Any, value: Any, where: str | None, key: str) -> str:
    expected = describe(kind)
    quotes = isinstance(value, str) and str not in _members(kind)
    default = field.default
    parts = [f"Give {expected}"]
    if quotes:
        parts.append(", without quotes")
    if default is not dataclasses.MISSING and default is not None:
        parts.append(f" (default {show(default)})")
    text = f"{key} must be {expected}, not {show(value)}. {''.join(parts)}."
    return f"{where}: {text}" if where else text


def _members(kind: Any) -> tuple[Any, ...]:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)
